"""The run folder's schema, in one place: every file a training run (or a patch-based baseline) holds,
and its readers and writers, side by side (as records.py is for the feature TFRecords).

  runs/<name>/
    config.json            the run's summary: inputs, training settings, patients, epochs, feature settings
    genes.txt              the predicted genes, in the model's output order
    split.csv              patient_id, subset (train/test), label
    best.keras             the head (or baseline model) with the best validation loss
    history.csv            per-epoch losses; tensorboard/ beside it (hist2RNA runs)
    test_predictions.csv   held-out patients x genes, predicted log2(1+RSEM)
    test_targets.csv       held-out patients x genes, measured log2(1+RSEM)
    across_genes.csv, across_patients.csv, r_squared.csv   the held-out metrics (evaluate.evaluate_run)
    costs.csv              (baselines) training time and energy of both approaches

A run is built in a folder beside its place and renamed into it only when complete (`building`), so
other commands never see half a run; every file is written atomically as well.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, write_json, write_table, write_text
from .config import EXTRACT_CONFIG_FILE
from .errors import Hist2RNAError
from .expression import load_split, log2_expression, read_expression, read_labels, save_split, to_patients

CONFIG = "config.json"
GENES = "genes.txt"
SPLIT = "split.csv"
MODEL = "best.keras"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"
TEST_PREDICTIONS = "test_predictions.csv"
TEST_TARGETS = "test_targets.csv"
METRICS = {"across_genes": "across_genes.csv", "across_patients": "across_patients.csv", "r_squared": "r_squared.csv"}
COSTS = "costs.csv"

# What every complete run folder (training or baseline) holds; a run writes them all or none.
REQUIRED = (CONFIG, GENES, SPLIT, MODEL, TEST_PREDICTIONS, TEST_TARGETS)


# --- building a run ----------------------------------------------------------------------------------


@contextmanager
def building(out_dir: str | Path):
    """A temp folder beside `out_dir` to build a run in; on success it replaces `out_dir` (an earlier
    run there is moved aside first, then deleted), on failure it is removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    work.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def write_config(run_dir: Path, summary: dict) -> Path:
    return write_json(Path(run_dir) / CONFIG, summary)


def write_genes(run_dir: Path, genes) -> Path:
    return write_text(Path(run_dir) / GENES, "\n".join(genes) + "\n")


def write_split(run_dir: Path, split: pd.Series, labels: pd.Series) -> Path:
    """patient_id, subset (train/test), label."""
    return save_split(split, labels, Path(run_dir) / SPLIT)


def copy_split(run_dir: Path, source_run: Path) -> Path:
    """Another run's split.csv, byte for byte (a baseline shares its run's patients)."""
    with atomic_path(Path(run_dir) / SPLIT) as tmp:
        tmp.write_bytes((Path(source_run) / SPLIT).read_bytes())
    return Path(run_dir) / SPLIT


def write_held_out(run_dir: Path, predictions: pd.DataFrame, targets: pd.DataFrame) -> None:
    """The held-out patients' predicted and measured log2 expression (patients x genes)."""
    write_table(predictions.rename_axis("patient_id"), Path(run_dir) / TEST_PREDICTIONS)
    write_table(targets.rename_axis("patient_id"), Path(run_dir) / TEST_TARGETS)


def write_metric(run_dir: Path, name: str, table) -> Path:
    return write_table(table, Path(run_dir) / METRICS[name])


def write_costs(run_dir: Path, costs: pd.DataFrame) -> Path:
    return write_table(costs, Path(run_dir) / COSTS, index=False)


def save_model(run_dir: Path, model) -> Path:
    """The Keras model as best.keras (atomically: the temp name keeps .keras, which Keras needs)."""
    with atomic_path(Path(run_dir) / MODEL) as tmp:
        model.save(tmp)
    return Path(run_dir) / MODEL


# --- reading a run -----------------------------------------------------------------------------------


def read_config(run_dir: str | Path) -> dict:
    """A complete run's config.json, or a clear error when `run_dir` is not one (not a run folder,
    another tool's config, or a run missing some of its files)."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Hist2RNAError(f"{run_dir}: not a training run folder ({path.name}: {type(exc).__name__}); give the "
                            "folder `hist2rna train --out` (or `hist2rna baseline --out`) wrote.") from None
    if not isinstance(config, dict) or "inputs" not in config:
        raise Hist2RNAError(f"{path}: not a training run's config (no 'inputs'); give a `hist2rna train` folder.")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise Hist2RNAError(f"{run_dir}: an incomplete training run (no {', '.join(missing)}); train it again.")
    return config


def model_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / MODEL


def is_run(folder: str | Path) -> bool:
    """Whether `folder` holds a trained model (a run folder rather than, say, a SavedModel export)."""
    return model_path(folder).is_file()


def read_genes(run_dir: str | Path) -> list[str]:
    return (Path(run_dir) / GENES).read_text().split()


def read_split(run_dir: str | Path) -> pd.Series:
    """patient -> 'train' / 'test'."""
    return load_split(Path(run_dir) / SPLIT)


def split_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SPLIT


def held_out(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predicted, measured) log2 expression of the run's held-out patients, patients x genes."""
    run_dir = Path(run_dir)
    return (pd.read_csv(run_dir / TEST_PREDICTIONS, index_col=0), pd.read_csv(run_dir / TEST_TARGETS, index_col=0))


def metrics(run_dir: str | Path) -> dict[str, pd.DataFrame | pd.Series]:
    """The held-out metrics `evaluate.evaluate_run` wrote: across_genes and across_patients (rho, p,
    fdr, neg_log10_fdr, n per gene / patient) and r_squared (per gene). A run made before they were
    written has them computed from its held-out predictions (and nothing written)."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in METRICS.values()):
        from .evaluate import held_out_metrics  # here: evaluate imports this module

        return held_out_metrics(*held_out(run_dir))
    tables = {name: pd.read_csv(run_dir / file, index_col=0) for name, file in METRICS.items()}
    tables["r_squared"] = tables["r_squared"]["r2"]
    return tables


def read_costs(path: str | Path) -> pd.DataFrame:
    """A costs.csv (approach, device, n_devices, watts, epochs, seconds, hours, kwh); `path` is the
    file or the baseline run folder holding it."""
    path = Path(path)
    return pd.read_csv(path / COSTS if path.is_dir() else path)


def features_dir(config: dict) -> Path:
    """The folder of feature records a run was trained on (from its config.json)."""
    return Path(config["inputs"]["features"])


def extract_config_path(config: dict) -> Path:
    """That folder's extract_config.json."""
    return features_dir(config) / EXTRACT_CONFIG_FILE


def display_name(run_dir: str | Path) -> str:
    """A short name for a run in figures: its features folder's (the backbone), else its own."""
    try:
        return features_dir(read_config(run_dir)).name or Path(run_dir).name
    except (Hist2RNAError, KeyError, TypeError):
        return Path(run_dir).name


# --- the run's cohort ----------------------------------------------------------------------------------


def measured_log2(inputs: dict) -> pd.DataFrame:
    """Patients x genes of measured log2(1+RSEM) from a run's inputs (config.json "inputs")."""
    return log2_expression(to_patients(read_expression(inputs["expression"]), inputs["expression"]))


def training_reference(run_dir: str | Path, config: dict | None = None,
                       labels: pd.Series | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """A run's training patients' measured log2 expression and PAM50 labels (what the paper's subtype
    classifier learns from). `config` and `labels`: the run's, when the caller has read them already."""
    config = config if config is not None else read_config(run_dir)
    expression = measured_log2(config["inputs"])
    labels = labels if labels is not None else label_table(config)
    split = read_split(run_dir)
    train = split.index[split == "train"].intersection(expression.index).intersection(labels.dropna().index)
    return expression.loc[train], labels.loc[train]


def label_table(config: dict) -> pd.Series:
    """The run's label table (patient -> subtype), as config.json names it."""
    return read_labels(config["inputs"]["labels"], config["inputs"]["label_column"])
