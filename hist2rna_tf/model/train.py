"""Fit the head exactly as the paper does (section 2.4) and write a self-describing run folder.

Adam (learning rate 1e-3), mean-squared error, minibatches of 12, early stopping with patience 4
that keeps the best weights, at most 150 epochs. The paper monitors "the loss"; here validation
patients are carved from the training patients (`validation_fraction`, 10% by default, seeded) and
early stopping and the best checkpoint follow their loss, so the held-out test set is never seen.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.analysis.sites import known_sites, patient_sites, refuse_a_site_each
from hist2rna_tf.config import RunInputs, TrainConfig, absolute_inputs
from hist2rna_tf.errors import BackboneError, ExpressionError, ModelError, SettingsError
from hist2rna_tf.expression import (average_by_patient, join_patients, load_split, log2_expression,
                                    read_expression, read_labels, refuse_non_finite, run_genes, select_genes,
                                    stratified_split, to_patients, validation_rows)
from hist2rna_tf.extract.records import folder_extraction, read_feature_folder
from hist2rna_tf.extract.settings import Extraction, FeatureSettings
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads import DEFAULT_HEAD, HEADS, refuse_oversized, settings_dict, settings_from_options
from hist2rna_tf.model.heads.paper import Settings as PaperSettings
from hist2rna_tf.model.inputs import InputKind, input_kind
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.progress import epoch_bar

log = logging.getLogger(__name__)


def fit_head(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(), run_dir: str | Path | None = None,
             verbose: int = 0, progress: bool = False, untrained=None,
             settings: PaperSettings = PaperSettings()) -> tuple[keras.Model, pd.DataFrame]:
    """Train the paper's head (its layers: `settings`) on patient features `x` [N, F] and log2 targets
    `y` [N, G] (`fit` with the slide mean's input kind).

    Returns the model with the best (lowest validation loss) weights and the per-epoch history.
    With `run_dir`, also writes best.keras, history.csv and TensorBoard logs there. `untrained`, when
    given, is called with the model before it trains (its initialisation: SEQUOIA's random model).
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"expected features [N, F] and targets [N, G] with the same N, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features or targets contain NaN or inf")
    kind = input_kind(DEFAULT_HEAD, settings, x.shape[1])
    return fit(kind, x, y, replace(config, head=DEFAULT_HEAD, head_init=None), run_dir, verbose, progress, untrained)


def fit(kind: InputKind, examples, y: np.ndarray, config: TrainConfig, run_dir: str | Path | None = None,
        verbose: int = 0, progress: bool = False, untrained=None) -> tuple[keras.Model, pd.DataFrame]:
    """Train the head `kind` is bound to (its settings and width) on `examples` (kind.examples: the
    patients as the head reads them) and their log2 targets `y` [N, G], with the paper's loop
    (fit_model); validation patients held back by `config.validation_fraction` (seeded). Returns the model
    with the best weights and the per-epoch history; `untrained`, when given, is called with the model
    before it trains."""
    y = np.asarray(y, np.float32)
    if y.ndim != 2 or len(examples) != len(y) or not np.isfinite(y).all():
        raise ValueError(f"expected one finite target row per example, got {len(examples)} examples and targets "
                         f"{y.shape}")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    val = validation_rows(len(y), config.validation_fraction, config.seed)
    fit_part, val_part = kind.subset(examples, ~val), kind.subset(examples, val)
    scaling = kind.standardization(fit_part, y[~val]) if config.standardize else None
    model = kind.build(y.shape[1], scaling)
    if config.head_init:
        kind.entry.load().initial_weights(model, config.head_init)
    if untrained is not None:
        untrained(model)
    if run_dir is not None:
        runs.write_tensorboard_config(run_dir, config, (len(y), kind.feature_dim), y.shape)
    history = fit_model(model, kind.dataset(fit_part, y[~val], config.batch_size, config.seed),
                        kind.dataset(val_part, y[val], config.batch_size), config, run_dir, verbose, progress=progress)
    return model, history


def fit_model(model: keras.Model, fit_data: tf.data.Dataset, val_data: tf.data.Dataset, config: TrainConfig,
              run_dir: str | Path | None = None, verbose: int = 0, save_best: bool = True,
              progress: bool = False) -> pd.DataFrame:
    """The paper's training loop, for the head and the patch-based baseline alike: Adam
    (`config.learning_rate`), MSE, early stopping on the validation loss (`config.patience`) keeping
    the best weights, at most `config.max_epochs`. The datasets are batched and shuffled (seeded) by
    the caller. With `run_dir`: history.csv and TensorBoard logs there, and (`save_best`) best.keras
    at each improvement; with `progress`, a bar of epochs. Returns the per-epoch history; `model` ends
    with the best weights."""
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                               restore_best_weights=True)]
    if progress and not verbose:
        callbacks.append(epoch_bar(config.max_epochs))
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if save_best:
            callbacks.append(keras.callbacks.ModelCheckpoint(runs.model_path(run_dir), monitor="val_loss",
                                                             save_best_only=True))
        callbacks += [keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY)),
                      keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.TENSORBOARD))]
    with warnings.catch_warnings():  # streams without a declared length: Keras learns it in epoch 1
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(fit_data, validation_data=val_data, epochs=config.max_epochs, callbacks=callbacks,
                            verbose=verbose, shuffle=False)  # the tf.data pipelines shuffle, seeded
    frame = pd.DataFrame(history.history)
    frame.index.name = "epoch"
    log.debug("trained %d epoch(s); best validation loss %.4f at epoch %d", len(frame), frame["val_loss"].min(),
             int(frame["val_loss"].idxmin()) + 1)
    return frame


@dataclass(frozen=True)
class Cohort:
    """The patients a run trains and evaluates on, and what is known of how their data were made."""

    features: pd.DataFrame  # patients x F, the mean of a patient's slides
    targets: pd.DataFrame  # patients x genes, log2(1+RSEM)
    labels: pd.Series  # patient -> subtype
    join_report: dict  # patients left out, by reason
    feature_settings: FeatureSettings
    extraction: Extraction | None  # the features folder's extract_config.json (None: none there)
    missing_genes: list[str]  # genes the table lacked (--drop-missing-genes)
    slides: pd.DataFrame  # slide_id -> path, patient_id, n_tiles, has_tile_features (records.FeatureFolder)
    sites: pd.Series  # patient -> site (--site-column, else the TCGA barcode's; NaN where unknown)


def cohort_of(inputs: RunInputs) -> Cohort:
    """The patients a run of `inputs` trains and evaluates on: those with features, expression and a
    label among `inputs.subtypes`."""
    folder = read_feature_folder(inputs.features)
    slide_features, patient_ids, feature_settings = folder.features, folder.patient_ids, folder.settings
    extraction = folder_extraction(inputs.features, feature_settings)
    features = average_by_patient(slide_features, patient_ids)
    raw = to_patients(read_expression(inputs.expression), inputs.expression)
    genes = run_genes(inputs.genes, raw, inputs.expression)
    raw, missing = select_genes(raw, genes, inputs.drop_missing_genes, inputs.expression)
    targets = log2_expression(raw, inputs.expression)
    features, targets, report = join_patients(features, targets)
    refuse_non_finite(targets, inputs.expression, "gene {column} of patient {row}", raw)
    refuse_non_finite(features, inputs.features, "feature {column} of patient {row}", features,
                      fix="extract that patient's slides again")
    labels = read_labels(inputs.labels, inputs.label_column).reindex(features.index)
    usable = labels.isin(inputs.subtypes)
    if not usable.any():
        found = labels.dropna().value_counts()
        seen = ", ".join(f"{label!r} ({n})" for label, n in found.items()) if len(found) else "no label at all"
        raise ExpressionError(f"{inputs.labels}: none of the {len(labels)} patients with features and expression "
                              f"has a label among {', '.join(inputs.subtypes)} in column {inputs.label_column!r}; "
                              f"they have {seen}. Give --subtypes as the table writes them, or another --label-column.")
    report["without_usable_label"] = sorted(labels.index[~usable])
    return Cohort(features[usable], targets[usable], labels[usable], report, feature_settings, extraction, missing,
                  folder.slides, sites_of(inputs, labels.index[usable]))


def sites_of(inputs: RunInputs, patients: pd.Index) -> pd.Series:
    """Each patient's site: the clinical table's `--site-column` (every patient needs one), else the TCGA
    barcode's tissue source site (NaN for other identifiers)."""
    if not inputs.site_column:
        return known_sites(patients)
    sites = patient_sites(patients, read_labels(inputs.labels, inputs.site_column))
    refuse_a_site_each(sites, f"--site-column {inputs.site_column}", "its sites say nothing a patient does not")
    return sites


@dataclass(frozen=True)
class RunPlan:
    """What a run will train on, every check passed and nothing written: its inputs (absolute paths), the
    patients (features, targets, labels) of its split and what its head reads (`kind`: the head's input
    kind, bound to its settings)."""

    inputs: RunInputs
    cohort: Cohort
    split: pd.Series  # patient -> "train" / "test"
    kind: InputKind


def plan_run(inputs: RunInputs, config: TrainConfig) -> RunPlan:
    """Everything `train_run` checks before it writes: the head's settings (before any data is read), the
    cohort, the head (`check_head`) and the split (`plan_split`). A Hist2RNAError naming the first problem."""
    settings = settings_from_options(config.head, config.head_options)
    inputs = absolute_inputs(inputs)
    cohort = cohort_of(inputs)
    kind = check_head(config, settings, cohort)
    return plan_split(inputs, config, kind, cohort, _split(inputs, cohort, config.seed))


def check_head(config: TrainConfig, settings, cohort: Cohort) -> InputKind:
    """What does not depend on the split: a head the machine can hold on the cohort's features and genes,
    and its starting file (`--head-init`), read into it. What the head reads (its input kind, bound to
    `settings` and the cohort's width)."""
    kind = input_kind(config.head, settings, cohort.features.shape[1])
    refuse_oversized(config.head, settings, cohort.features.shape[1], cohort.targets.shape[1])
    if config.head_init:
        _check_head_init(config, kind, cohort.targets.shape[1])
    return kind


def plan_split(inputs: RunInputs, config: TrainConfig, kind: InputKind, cohort: Cohort, split: pd.Series,
               fix: str = "Add patients (the paper used 495), or give a --split file") -> RunPlan:
    """The run of `cohort` on `split` (patient -> train/test): enough patients to train, stop early and
    evaluate (`fix`: what to say when not), and the features folder holding what its head reads (`kind`)."""
    cohort = replace(cohort, features=cohort.features.loc[split.index], targets=cohort.targets.loc[split.index],
                     labels=cohort.labels.loc[split.index])
    n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
    if n_test < MIN_TEST_PATIENTS or n_train < MIN_TRAIN_PATIENTS:
        raise ExpressionError(f"the split leaves {n_train} training and {n_test} held-out patients; a run needs at "
                              f"least {MIN_TRAIN_PATIENTS} to train (some held back for early stopping) and "
                              f"{MIN_TEST_PATIENTS} to evaluate (Spearman across patients). {fix}.")
    n_validation = int(validation_rows(n_train, config.validation_fraction, config.seed).sum())
    if n_validation >= n_train:
        raise ExpressionError(f"--validation-fraction {config.validation_fraction:g} holds back {n_validation} of the "
                              f"{n_train} training patients for early stopping, none left to train on; give a smaller "
                              f"fraction (default {TrainConfig().validation_fraction:g}).")
    kind.check(cohort.slides[cohort.slides["patient_id"].isin(set(split.index))], inputs.features)
    return RunPlan(inputs, cohort, split, kind)


def _split(inputs: RunInputs, cohort: Cohort, seed: int) -> pd.Series:
    """The run's split: `inputs.split`'s file (its patients the cohort has; the others noted in the cohort's
    join report), or a new one stratified by subtype."""
    if not inputs.split:
        return stratified_split(cohort.labels, inputs.test_fraction, seed)
    split = load_split(inputs.split)
    patients = cohort.features.index
    cohort.join_report["not_in_split_file"] = sorted(set(patients) - set(split.index))
    if not split.index.isin(patients).any():
        raise ExpressionError(f"{inputs.split}: none of its {len(split)} patients (e.g. {', '.join(split.index[:3])}) "
                              f"is among the {len(patients)} with features, expression and a label (e.g. "
                              f"{', '.join(patients[:3])}); give the split of this cohort, or leave --split out for a "
                              "new one.")
    return split.reindex(patients).dropna()


def train_run(inputs: RunInputs, out_dir: str | Path, config: TrainConfig = TrainConfig(), verbose: int = 0,
              overwrite: bool = False, progress: bool = False) -> runs.TrainedRun:
    """Features + expression -> split -> fit -> held-out predictions and metrics, all written under
    `out_dir` (the files of runs.py), the run standing alone (its record keeps how the features were
    made; its targets and labels are in it). Everything is checked first (plan_run); an `out_dir` that
    holds a run is replaced only with `overwrite`; one that holds anything else, or an input, is refused
    (outputs.py). Returns the run (runs.TrainedRun: its folder, record and held-out metrics' summaries)."""
    out_dir = Path(out_dir)
    refuse_overlap(out_dir, {"--features": inputs.features, "--expression": inputs.expression,
                             "--labels": inputs.labels, "--split": inputs.split})
    runs.refuse_existing(out_dir, overwrite)
    plan = plan_run(inputs, config)
    cohort, inputs = plan.cohort, plan.inputs
    _warn_of(cohort, inputs, config)
    with runs.building(out_dir) as work:  # built aside, renamed into place only when complete
        with memory_said(config.head):
            fitted = _fit_and_write(work, config, plan, verbose, progress)
        record = runs.RunRecord(inputs=inputs, train=config, feature_dim=int(cohort.features.shape[1]),
                                genes=len(cohort.targets.columns), feature_settings=cohort.feature_settings,
                                extraction=cohort.extraction, missing_genes=tuple(cohort.missing_genes),
                                join_report=cohort.join_report, head_settings=settings_dict(plan.kind.settings),
                                **fitted)
        runs.write_record(work, record)
        metrics = runs.write_metrics(work)  # the held-out metrics' summaries (their tables: runs.METRICS)
    return runs.TrainedRun(out_dir, record, metrics)


# The join report's reasons (config.json's keys) as the warning says them.
_LEFT_OUT = {"without_usable_label": "without a label among --subtypes (another, or none)"}


def _warn_of(cohort: Cohort, inputs: RunInputs, config: TrainConfig) -> None:
    """Warnings of what the run is given: features of random weights (unless --standardize, what the warning
    advises: a demo's runs and controls are not told again), patients left out."""
    settings = cohort.feature_settings
    if settings is not None and settings.named_backbone_with_random_weights and not config.standardize:
        log.warning("%s: features of %s with random weights (--weights none): they say nothing of biology, and they "
                    "barely differ between slides, so the paper's head fed them raw learns nothing (add --standardize "
                    "to see the pipeline learn; extract with --weights imagenet, or an encoder's own weights, for "
                    "real features).", inputs.features, settings.backbone)
    for key, value in cohort.join_report.items():
        if isinstance(value, list) and value:
            said = _LEFT_OUT.get(key, key.replace("_", " "))
            log.warning("%d patients %s (e.g. %s): left out, listed in config.json.", len(value), said, value[0])


@contextmanager
def memory_said(head: str):
    """An out-of-memory error while the head is built or trained, as one SettingsError saying so."""
    try:
        yield
    except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
        raise SettingsError(f"out of memory building or training the {head} head ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160]}); give smaller --head-option values, or train on a "
                            "machine with more memory.") from None


MIN_TRAIN_PATIENTS, MIN_TEST_PATIENTS = 3, 3


def _check_head_init(config: TrainConfig, kind: InputKind, n_genes: int) -> None:
    """`--head-init`: a head that can start from a file, and a file it starts from (read into the head)."""
    module = kind.entry.load()
    if not hasattr(module, "initial_weights"):
        raise SettingsError(f"--head-init: the {config.head} head cannot start from a file; it is for "
                            f"{', '.join(n for n, e in HEADS.items() if hasattr(e.load(), 'initial_weights'))}.")
    if not Path(config.head_init).is_file():
        raise SettingsError(f"--head-init {config.head_init}: no such file; give the checkpoint (FEATHER's "
                            "model.safetensors).")
    try:
        module.initial_weights(kind.build(n_genes), config.head_init)
    except (BackboneError, ModelError) as exc:
        raise type(exc)(f"--head-init {exc}") from None


def _fit_and_write(out_dir: Path, config: TrainConfig, plan: RunPlan, verbose: int, progress: bool) -> dict:
    """Fit on the training patients; write split, genes, targets, model, history and held-out
    predictions; what the run's record says of the fit."""
    cohort, split, kind = plan.cohort, plan.split, plan.kind
    features, targets = cohort.features, cohort.targets
    runs.write_split(out_dir, split, cohort.labels, cohort.sites)
    runs.write_genes(out_dir, targets.columns)
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    runs.write_targets(out_dir, targets[train])
    start = time.perf_counter()
    examples = kind.examples(features, cohort.slides, plan.inputs.features, progress)
    test_examples = kind.subset(examples, test)
    held_out = {}  # the untrained head's held-out predictions (SEQUOIA's random model), then the trained one's
    model, history = fit(kind, kind.subset(examples, train), targets.to_numpy()[train], config, out_dir, verbose,
                         progress, untrained=lambda m: held_out.setdefault("random", kind.predict(m, test_examples)))
    train_seconds = time.perf_counter() - start
    predicted = kind.predict(model, test_examples)
    runs.write_random_predictions(out_dir, pd.DataFrame(held_out["random"], index=features.index[test],
                                                        columns=targets.columns))
    predictions = pd.DataFrame(predicted, index=features.index[test], columns=targets.columns)
    runs.write_held_out(out_dir, predictions, targets[test])
    return {"patients": {"train": int(train.sum()), "test": int(test.sum())}, "epochs": len(history),
            "best_val_loss": float(history["val_loss"].min()), "train_seconds": train_seconds}
