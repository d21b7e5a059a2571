"""Training time and energy of both approaches (model/costs.py, the paper's Figure 6)."""

from __future__ import annotations

import numpy as np

from hist2rna_tf.config import BaselineConfig
from hist2rna_tf.model.costs import cost_table, detected_device, device_description


def test_cost_table_is_time_times_power():
    config = BaselineConfig(device_watts=300, n_devices=4, device="4 x V100")
    table = cost_table(7200.0, 3, config, hist2rna_seconds=36.0, hist2rna_epochs=10)
    assert list(table["approach"]) == ["hist2RNA (slide mean)", "patch-based (frozen)"]
    assert list(table["epochs"]) == [10, 3] and (table["device"] == "4 x V100").all()
    np.testing.assert_allclose(table["kwh"], [0.01 * 1.2, 2 * 1.2])  # the paper: 4 x 8.48 h x 300 W = 10.2 kWh
    assert len(cost_table(10.0, 1, BaselineConfig())) == 1  # a run that recorded no training time


def test_the_device_is_described_when_not_given():
    assert cost_table(1.0, 1, BaselineConfig())["device"].iloc[0] == device_description()
    assert device_description().startswith(("CPU (", "1 x", "2 x", "4 x", "8 x"))


def test_on_a_cpu_the_energy_takes_a_cpu_figure_unless_told():
    """Not the V100's 300 W for a CPU run: 7.5 W a core used (an assumption, said in the help)."""
    from hist2rna_tf.config import CPU_WATTS_PER_CORE, usable_cores

    device, watts = detected_device()
    if device.startswith("CPU"):
        assert watts == CPU_WATTS_PER_CORE * usable_cores()
    assert cost_table(3600.0, 1, BaselineConfig())["watts"].iloc[0] == watts
    assert cost_table(3600.0, 1, BaselineConfig(device_watts=250.0))["watts"].iloc[0] == 250.0
