"""Training time and energy of hist2RNA and the patch-based approach (the paper's Figure 6).

Energy = measured training time x device power x devices. The power is an assumption, not a
measurement (the paper took 300 W per Nvidia V100; on a CPU, 7.5 W a core used: config.py); the
ratio between the approaches does not depend on it.
"""

from __future__ import annotations

import pandas as pd

from hist2rna_tf.config import CPU_WATTS_PER_CORE, PAPER_WATTS, usable_cores


def detected_device() -> tuple[str, float]:
    """('<n> x <GPU name>', the paper's V100 watts) when TensorFlow sees GPUs, else ('CPU (<n> cores)',
    the CPU figure for those cores)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
        return f"{len(gpus)} x {names[0]}", PAPER_WATTS
    cores = usable_cores()
    return f"CPU ({cores} cores)", CPU_WATTS_PER_CORE * cores


def device_description() -> str:
    """'<n> x <GPU name>' when TensorFlow sees GPUs, else 'CPU (<n> cores)'."""
    return detected_device()[0]


def cost_table(baseline_seconds: float, baseline_epochs: int, config, hist2rna_seconds: float | None = None,
               hist2rna_epochs: int | None = None, hist2rna_label: str = "hist2RNA (slide mean)") -> pd.DataFrame:
    """approach, device, n_devices, watts, epochs, seconds, hours, kwh: the hist2RNA run (when its
    training time is known) and the baseline, energy = hours x watts x devices / 1000. `config`: the
    baseline's settings (mode, device, n_devices, device_watts: a BaselineConfig); `hist2rna_label` the
    run's approach (its head: `approach_label`)."""
    detected, default_watts = detected_device()
    device = config.device or detected
    watts = config.device_watts if config.device_watts is not None else default_watts
    rows = []
    if hist2rna_seconds is not None:
        rows.append((hist2rna_label, hist2rna_seconds, hist2rna_epochs))
    rows.append((f"patch-based ({config.mode})", baseline_seconds, baseline_epochs))
    table = pd.DataFrame(rows, columns=["approach", "seconds", "epochs"])
    table.insert(1, "device", device)
    table.insert(2, "n_devices", config.n_devices)
    table.insert(3, "watts", watts)
    table["hours"] = table["seconds"] / 3600.0
    table["kwh"] = table["hours"] * table["watts"] * table["n_devices"] / 1000.0
    return table


def approach_label(head: str) -> str:
    """A run's approach in tables and figures: the paper's head reads the slide mean; another, its name."""
    return "hist2RNA (slide mean)" if head == "hist2rna" else f"hist2RNA ({head})"
