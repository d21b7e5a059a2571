"""Fit the head exactly as the paper does (section 2.4) and write a self-describing run folder.

Adam (learning rate 1e-3), mean-squared error, minibatches of 12, early stopping with patience 4
that keeps the best weights, at most 150 epochs. The paper monitors "the loss"; here validation
patients are carved from the training patients (`validation_fraction`, 10% by default, seeded) and
early stopping and the best checkpoint follow their loss, so the held-out test set is never seen.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from . import __version__
from .head import Standardization, build_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3
    batch_size: int = 12
    patience: int = 4
    max_epochs: int = 150
    validation_fraction: float = 0.1
    seed: int = 0
    deterministic: bool = False
    standardize: bool = False  # NOT the paper: z-score features and targets inside the model (see head.py)


def validation_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the training rows held back for validation (at least one, seeded)."""
    n_val = max(1, int(round(n_rows * fraction))) if fraction > 0 else 0
    mask = np.zeros(n_rows, bool)
    mask[np.random.default_rng(seed).permutation(n_rows)[:n_val]] = True
    return mask


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((x[:, None, :].astype(np.float32), y.astype(np.float32)))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size)


def fit_head(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(), run_dir: str | Path | None = None,
             verbose: int = 0) -> tuple[keras.Model, pd.DataFrame]:
    """Train a head on patient features `x` [N, F] and log2 targets `y` [N, G].

    Returns the model with the best (lowest validation loss) weights and the per-epoch history.
    With `run_dir`, also writes best.keras, history.csv and TensorBoard logs there.
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected features [N, F] and targets [N, G] with the same N, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features or targets contain NaN or inf")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    val = validation_rows(len(x), config.validation_fraction, config.seed)
    scaling = Standardization.of(x[~val], y[~val]) if config.standardize else None
    model = build_head(x.shape[1], y.shape[1], standardization=scaling)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                               restore_best_weights=True)]
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.ModelCheckpoint(run_dir / "best.keras", monitor="val_loss", save_best_only=True),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
            keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")),
        ]
        _config_to_tensorboard(run_dir / "tensorboard", config, x.shape, y.shape)
    history = model.fit(_dataset(x[~val], y[~val], config.batch_size, config.seed),
                        validation_data=_dataset(x[val], y[val], config.batch_size, None),
                        epochs=config.max_epochs, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the tf.data pipeline shuffles, seeded
    frame = pd.DataFrame(history.history)
    frame.index.name = "epoch"
    log.info("trained %d epochs; best validation loss %.4f at epoch %d", len(frame), frame["val_loss"].min(),
             int(frame["val_loss"].idxmin()) + 1)
    return model, frame


def _config_to_tensorboard(log_dir: Path, config: TrainConfig, x_shape, y_shape) -> None:
    writer = tf.summary.create_file_writer(str(log_dir / "config"))
    text = json.dumps({"train": asdict(config), "features": list(x_shape), "targets": list(y_shape),
                       "version": __version__}, indent=2)
    with writer.as_default():
        tf.summary.text("config", f"<pre>{text}</pre>", step=0)
    writer.close()


def write_json(path: Path, payload: dict) -> None:
    """Atomic JSON write (temp file + rename)."""
    from .atomic import write_text

    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


@dataclass(frozen=True)
class RunInputs:
    """What a training run reads: stored features, an expression table, a label table for the split."""

    features: str
    expression: str
    labels: str
    label_column: str = "BRCA_Subtype_PAM50"
    subtypes: tuple[str, ...] = ("LumA", "LumB", "Basal", "Her2")  # the paper's four (no Normal-like)
    genes: str = "all"
    drop_missing_genes: bool = False
    split: str | None = None
    test_fraction: float = 160 / 495


def train_run(inputs: RunInputs, out_dir: str | Path, config: TrainConfig = TrainConfig(), verbose: int = 0) -> dict:
    """Features + expression -> split -> fit -> held-out predictions, all written under `out_dir`:
    config.json, genes.txt, split.csv, history.csv, tensorboard/, best.keras, test_predictions.csv,
    test_targets.csv. Returns the run summary (also in config.json)."""
    from .expression import (ExpressionError, average_by_patient, join_patients, load_panel, load_split,
                             log2_expression, read_expression, read_labels, select_genes, stratified_split,
                             to_patients)
    from .evaluate import evaluate_run
    from .records import feature_table

    out_dir = Path(out_dir)
    slide_features, patient_ids, feature_settings = feature_table(inputs.features)
    features = average_by_patient(slide_features, patient_ids)
    raw = to_patients(read_expression(inputs.expression), inputs.expression)
    genes = load_panel(inputs.genes)
    raw, missing = select_genes(raw, genes, inputs.drop_missing_genes, inputs.expression)
    targets = log2_expression(raw, inputs.expression)
    features, targets, report = join_patients(features, targets)
    labels = read_labels(inputs.labels, inputs.label_column).reindex(features.index)
    usable = labels.isin(inputs.subtypes)
    report["without_usable_label"] = sorted(labels.index[~usable])
    features, targets, labels = features[usable], targets[usable], labels[usable]
    if inputs.split:
        split = load_split(inputs.split)
        report["not_in_split_file"] = sorted(set(features.index) - set(split.index))
        split = split.reindex(features.index).dropna()
        features, targets, labels = features.loc[split.index], targets.loc[split.index], labels.loc[split.index]
    else:
        split = stratified_split(labels, inputs.test_fraction, config.seed)
    n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
    if n_test < MIN_TEST_PATIENTS or n_train < MIN_TRAIN_PATIENTS:
        raise ExpressionError(f"the split leaves {n_train} training and {n_test} held-out patients; a run needs at "
                              f"least {MIN_TRAIN_PATIENTS} to train (some held back for early stopping) and "
                              f"{MIN_TEST_PATIENTS} to evaluate (Spearman across patients). Add patients (the paper "
                              "used 495), or give a --split file.")
    for key, value in report.items():
        if isinstance(value, list) and value:
            log.warning("%d patients %s (e.g. %s); listed in config.json.", len(value), key.replace("_", " "), value[0])
    with run_folder(out_dir) as work:  # built aside, renamed into place only when complete
        summary = _fit_and_write(work, inputs, config, features, targets, labels, split, verbose)
        summary.update(feature_dim=int(features.shape[1]), feature_settings=feature_settings, missing_genes=missing,
                       join_report=report)
        write_json(work / "config.json", summary)
        evaluate_run(work)
    return summary


MIN_TRAIN_PATIENTS, MIN_TEST_PATIENTS = 3, 3


@contextmanager
def run_folder(out_dir: Path):
    """A temp folder beside `out_dir` to build a run in; on success it replaces `out_dir` (an earlier
    run there is moved aside first, then deleted), on failure it is removed: other commands never
    see half a run."""
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


def _fit_and_write(out_dir: Path, inputs: RunInputs, config: TrainConfig, features: pd.DataFrame,
                   targets: pd.DataFrame, labels: pd.Series, split: pd.Series, verbose: int) -> dict:
    """Fit on the training patients; write split, genes, model, history and held-out predictions; the
    run's summary."""
    from .atomic import write_text
    from .expression import save_split
    from .predict import write_table

    save_split(split, labels, out_dir / "split.csv")
    write_text(out_dir / "genes.txt", "\n".join(targets.columns) + "\n")
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    start = time.perf_counter()
    model, history = fit_head(features.to_numpy()[train], targets.to_numpy()[train], config, out_dir, verbose)
    train_seconds = time.perf_counter() - start
    predicted = np.asarray(model(features.to_numpy()[test][:, None, :].astype(np.float32), training=False))
    predictions = pd.DataFrame(predicted, index=features.index[test], columns=targets.columns)
    write_table(predictions.rename_axis("patient_id"), out_dir / "test_predictions.csv")
    write_table(targets[test].rename_axis("patient_id"), out_dir / "test_targets.csv")
    return {"version": __version__, "inputs": asdict(inputs), "train": asdict(config), "genes": len(targets.columns),
            "patients": {"train": int(train.sum()), "test": int(test.sum())}, "epochs": len(history),
            "best_val_loss": float(history["val_loss"].min()), "train_seconds": train_seconds}


def measured_log2(inputs: dict) -> pd.DataFrame:
    """Patients x genes of measured log2(1+RSEM) from a run's inputs (config.json "inputs")."""
    from .expression import log2_expression, read_expression, to_patients

    return log2_expression(to_patients(read_expression(inputs["expression"]), inputs["expression"]))


def training_reference(run_dir: str | Path) -> tuple[pd.DataFrame, pd.Series]:
    """A run's training patients' measured log2 expression and PAM50 labels (what the paper's subtype
    classifier learns from)."""
    from .expression import load_split, read_labels

    run_dir = Path(run_dir)
    inputs = read_run_config(run_dir)["inputs"]
    expression = measured_log2(inputs)
    labels = read_labels(inputs["labels"], inputs["label_column"])
    split = load_split(run_dir / "split.csv")
    train = split.index[split == "train"].intersection(expression.index).intersection(labels.dropna().index)
    return expression.loc[train], labels.loc[train]


def read_run_config(run_dir: str | Path) -> dict:
    """A training run's config.json, or a clear error when `run_dir` is not a run folder."""
    from .errors import Hist2RNAError

    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Hist2RNAError(f"{run_dir}: not a training run folder ({path.name}: {type(exc).__name__}); give the "
                            "folder `hist2rna train --out` (or `hist2rna baseline --out`) wrote.") from None
    if not isinstance(config, dict) or "inputs" not in config:
        raise Hist2RNAError(f"{path}: not a training run's config (no 'inputs'); give a `hist2rna train` folder.")
    missing = [name for name in RUN_FILES if not (Path(run_dir) / name).is_file()]
    if missing:
        raise Hist2RNAError(f"{run_dir}: an incomplete training run (no {', '.join(missing)}); train it again.")
    return config


# What every complete run folder (training or baseline) holds; `train_run` writes them all or none.
RUN_FILES = ("config.json", "genes.txt", "split.csv", "best.keras", "test_predictions.csv", "test_targets.csv")
