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

from hist2rna_tf.config import RunInputs, TrainConfig, absolute_inputs
from hist2rna_tf.errors import BackboneError, ExpressionError, ModelError, SettingsError
from hist2rna_tf.expression import (average_by_patient, join_patients, load_split, log2_expression,
                                    read_expression, read_labels, refuse_non_finite, run_genes, select_genes,
                                    stratified_split, to_patients, validation_rows)
from hist2rna_tf.extract.records import folder_extraction, read_feature_folder
from hist2rna_tf.extract.settings import Extraction, FeatureSettings
from hist2rna_tf.model import runs
from hist2rna_tf.model.bags import (bag_dataset, bag_tiles, cluster_arrays, cluster_dataset, cluster_groups,
                                    patient_groups, predict_bags, predict_clusters, require_tile_features)
from hist2rna_tf.model.heads import (CLUSTERS, HEADS, head_entry, refuse_oversized, settings_dict,
                                     settings_from_options)
from hist2rna_tf.model.heads.clusters import too_few_tiles
from hist2rna_tf.model.heads.base import Standardization
from hist2rna_tf.model.heads.paper import Settings as PaperSettings
from hist2rna_tf.model.heads.paper import build as build_head
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.progress import epoch_bar

log = logging.getLogger(__name__)


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((x[:, None, :].astype(np.float32), y.astype(np.float32)))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size)


def fit_head(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(), run_dir: str | Path | None = None,
             verbose: int = 0, progress: bool = False, untrained=None,
             settings: PaperSettings = PaperSettings()) -> tuple[keras.Model, pd.DataFrame]:
    """Train the paper's head (its layers: `settings`) on patient features `x` [N, F] and log2 targets
    `y` [N, G].

    Returns the model with the best (lowest validation loss) weights and the per-epoch history.
    With `run_dir`, also writes best.keras, history.csv and TensorBoard logs there. `untrained`, when
    given, is called with the model before it trains (its initialisation: SEQUOIA's random model).
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
    model = build_head(x.shape[1], y.shape[1], settings, standardization=scaling)
    if untrained is not None:
        untrained(model)
    if run_dir is not None:
        runs.write_tensorboard_config(run_dir, config, x.shape, y.shape)
    history = fit_model(model, _dataset(x[~val], y[~val], config.batch_size, config.seed),
                        _dataset(x[val], y[val], config.batch_size, None), config, run_dir, verbose, progress=progress)
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


def fit_bag_head(groups: list[list[str]], y: np.ndarray, feature_dim: int, config: TrainConfig, settings,
                 run_dir: str | Path | None = None, verbose: int = 0, progress: bool = False,
                 untrained=None) -> tuple[keras.Model, pd.DataFrame]:
    """Train a head that reads every tile (config.head, heads.BAG) on the bags of `groups` (each
    patient's record files), or SEQUOIA's (heads.CLUSTERS) on each patient's slides' cluster means
    (`groups`: their files), and their log2 targets `y` [N, G], with the paper's loop (fit_model); the
    same validation patients as `fit_head` would hold back. Returns the model with the best weights
    and the per-epoch history."""
    y = np.asarray(y, np.float32)
    if len(groups) != len(y) or not np.isfinite(y).all():
        raise ValueError(f"expected one finite target row per bag, got {len(groups)} bags and targets {y.shape}")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    val = validation_rows(len(groups), config.validation_fraction, config.seed)
    fit_groups = [g for g, held in zip(groups, val) if not held]
    val_groups = [g for g, held in zip(groups, val) if held]
    # at tile level, over the training patients' tiles
    entry = head_entry(config.head)
    if entry.reads == CLUSTERS:  # groups: each patient's slides' cluster-means files; a slide a sample
        arrays = cluster_arrays(fit_groups)

        def data(part, targets, seed=None):
            return cluster_dataset(part, feature_dim, settings.clusters, config.batch_size, targets, seed)
    else:
        arrays = bag_tiles(fit_groups, feature_dim)

        def data(part, targets, seed=None):
            return bag_dataset(part, feature_dim, config.batch_size, targets, seed)
    scaling = Standardization.of_tiles(arrays, y[~val]) if config.standardize else None
    module = entry.load()
    model = module.build(feature_dim, y.shape[1], settings, standardization=scaling)
    if config.head_init:
        module.initial_weights(model, config.head_init)
    if untrained is not None:
        untrained(model)
    if run_dir is not None:
        runs.write_tensorboard_config(run_dir, config, (len(groups), feature_dim), y.shape)
    history = fit_model(model, data(fit_groups, y[~val], config.seed), data(val_groups, y[val]), config, run_dir,
                        verbose, progress=progress)
    return model, history


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
                  folder.slides)


@dataclass(frozen=True)
class RunPlan:
    """What a run will train on, every check passed and nothing written: its inputs (absolute paths), the
    patients (features, targets, labels) of its split, the head's settings and, for a head that reads every
    tile, their slides."""

    inputs: RunInputs
    cohort: Cohort
    split: pd.Series  # patient -> "train" / "test"
    settings: object  # the head's Settings
    slides: pd.DataFrame | None


def plan_run(inputs: RunInputs, config: TrainConfig) -> RunPlan:
    """Everything `train_run` checks before it writes: the head's settings (before any data is read), the
    cohort, the head (`check_head`) and the split (`plan_split`). A Hist2RNAError naming the first problem."""
    settings = settings_from_options(config.head, config.head_options, config.clusters)
    inputs = absolute_inputs(inputs)
    cohort = cohort_of(inputs)
    check_head(config, settings, cohort)
    return plan_split(inputs, config, settings, cohort, _split(inputs, cohort, config.seed))


def check_head(config: TrainConfig, settings, cohort: Cohort) -> None:
    """What does not depend on the split: a head the machine can hold on the cohort's features and genes,
    and its starting file (`--head-init`), read into it."""
    refuse_oversized(config.head, settings, cohort.features.shape[1], cohort.targets.shape[1])
    if config.head_init:
        _check_head_init(config, settings, cohort.features.shape[1], cohort.targets.shape[1])


def plan_split(inputs: RunInputs, config: TrainConfig, settings, cohort: Cohort, split: pd.Series,
               fix: str = "Add patients (the paper used 495), or give a --split file") -> RunPlan:
    """The run of `cohort` on `split` (patient -> train/test): enough patients to train, stop early and
    evaluate (`fix`: what to say when not), and the tile features its head reads."""
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
    slides = _slides_of(config, settings, inputs, cohort.slides, split.index)
    return RunPlan(inputs, cohort, split, settings, slides)


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
            fitted = _fit_and_write(work, config, cohort.features, cohort.targets, cohort.labels, plan.split, verbose,
                                    progress, plan.settings, plan.slides)
        record = runs.RunRecord(inputs=inputs, train=config, feature_dim=int(cohort.features.shape[1]),
                                genes=len(cohort.targets.columns), feature_settings=cohort.feature_settings,
                                extraction=cohort.extraction, missing_genes=tuple(cohort.missing_genes),
                                join_report=cohort.join_report, head_settings=settings_dict(plan.settings), **fitted)
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


def _slides_of(config: TrainConfig, settings, inputs: RunInputs, slides: pd.DataFrame,
               patients) -> pd.DataFrame | None:
    """For a head that reads every tile, the slides of `patients` (their records, checked to hold tile
    features and, for clusters, enough tiles); None for one that reads the slide mean."""
    entry = head_entry(config.head)
    if not entry.reads_tiles:
        return None
    slides = slides[slides["patient_id"].isin(set(patients))]
    require_tile_features(slides, inputs.features, config.head)
    if entry.reads == CLUSTERS:
        too_few_tiles(slides, settings.clusters, inputs.features)
    return slides


def _check_head_init(config: TrainConfig, settings, feature_dim: int, n_genes: int) -> None:
    """`--head-init`: a head that can start from a file, and a file it starts from (read into the head)."""
    module = head_entry(config.head).load()
    if not hasattr(module, "initial_weights"):
        raise SettingsError(f"--head-init: the {config.head} head cannot start from a file; it is for "
                            f"{', '.join(n for n, e in HEADS.items() if hasattr(e.load(), 'initial_weights'))}.")
    if not Path(config.head_init).is_file():
        raise SettingsError(f"--head-init {config.head_init}: no such file; give the checkpoint (FEATHER's "
                            "model.safetensors).")
    try:
        module.initial_weights(module.build(feature_dim, n_genes, settings), config.head_init)
    except (BackboneError, ModelError) as exc:
        raise type(exc)(f"--head-init {exc}") from None


def _fit_and_write(out_dir: Path, config: TrainConfig, features: pd.DataFrame, targets: pd.DataFrame,
                   labels: pd.Series, split: pd.Series, verbose: int, progress: bool, settings,
                   slides: pd.DataFrame | None) -> dict:
    """Fit on the training patients; write split, genes, targets, model, history and held-out
    predictions; what the run's record says of the fit."""
    runs.write_split(out_dir, split, labels)
    runs.write_genes(out_dir, targets.columns)
    train, test = (split == "train").to_numpy(), (split == "test").to_numpy()
    runs.write_targets(out_dir, targets[train])
    start = time.perf_counter()
    held_out = {}  # the untrained head's held-out predictions (SEQUOIA's random model), then the trained one's
    if slides is None:  # the slide (patient) mean
        test_x = features.to_numpy()[test][:, None, :].astype(np.float32)

        def predict(model):
            return np.asarray(model(test_x, training=False))

        model, history = fit_head(features.to_numpy()[train], targets.to_numpy()[train], config, out_dir, verbose,
                                  progress, untrained=lambda m: held_out.setdefault("random", predict(m)),
                                  settings=settings)
    else:  # every tile, or (SEQUOIA) each slide's cluster means
        groups, dim = patient_groups(slides, features.index), int(features.shape[1])
        if head_entry(config.head).reads == CLUSTERS:
            groups = cluster_groups(groups, settings.clusters, progress)
        test_groups = [g for g, t in zip(groups, test) if t]

        def predict(model):
            if head_entry(config.head).reads == CLUSTERS:
                return predict_clusters(model, test_groups, dim, settings.clusters)
            return predict_bags(model, test_groups, dim)

        model, history = fit_bag_head([g for g, t in zip(groups, train) if t], targets.to_numpy()[train], dim, config,
                                      settings, out_dir, verbose, progress,
                                      untrained=lambda m: held_out.setdefault("random", predict(m)))
    train_seconds = time.perf_counter() - start
    predicted = predict(model)
    runs.write_random_predictions(out_dir, pd.DataFrame(held_out["random"], index=features.index[test],
                                                        columns=targets.columns))
    predictions = pd.DataFrame(predicted, index=features.index[test], columns=targets.columns)
    runs.write_held_out(out_dir, predictions, targets[test])
    return {"patients": {"train": int(train.sum()), "test": int(test.sum())}, "epochs": len(history),
            "best_val_loss": float(history["val_loss"].min()), "train_seconds": train_seconds}
