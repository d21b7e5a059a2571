"""Train a spot run: the paper's head (its layers, Adam, MSE, early stopping that keeps the best weights)
on spots, validation by whole training patients, and beside it, on the same split, HEST's ridge probe
(StandardScaler, PCA to 256, ridge: spots/bench.py) as the baseline a head must beat, and the untrained
head (a floor). Written as a run folder (model/runs.py's files, a row a spot) with `per_sample.csv`
(metrics.py) and `ridge_predictions.csv`."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import write_table
from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.expression import validation_rows
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads import DEFAULT_HEAD, settings_dict, settings_from_options
from hist2rna_tf.model.inputs import input_kind
from hist2rna_tf.spot_run.cohort import SpotCohort, SpotRunConfig, spot_cohort
from hist2rna_tf.spot_run.metrics import PER_SAMPLE, model_means, sample_scores
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.spots.sample import SpotSample

log = logging.getLogger(__name__)

RIDGE_PREDICTIONS = "ridge_predictions.csv"
TARGETS = "log1p counts"  # a spot run's units (bulk runs: log2(1+RSEM))
MODELS = ("head", "ridge", "untrained")  # per_sample.csv's models


def validation_spots(cohort: SpotCohort, fraction: float, seed: int) -> np.ndarray:
    """Bool over the training spots: those of the training patients held back for early stopping (a
    seeded `fraction` of the patients, at least one; whole patients, as the test split)."""
    train = cohort.spots[cohort.rows("train")]
    patients = np.array(sorted(train["patient_id"].unique()))
    held = patients[validation_rows(len(patients), fraction, seed)]
    return train["patient_id"].isin(held).to_numpy()


def ridge_baseline(cohort: SpotCohort, seed: int) -> pd.DataFrame:
    """HEST's probe fit on the training spots, its predictions on the held-out ones (spots x genes): on
    each spot's own features, as HEST's (a neighbourhood head's context is not given to it)."""
    from hist2rna_tf.spots.bench import HEST_LATENT_DIM, ProbeConfig, probe

    train, test = cohort.rows("train"), cohort.rows("test")
    own = cohort.features[:, :cohort.own_dim].astype(np.float64)
    latent = min(HEST_LATENT_DIM, int(train.sum()), cohort.own_dim)
    _, predicted = probe(own[train], cohort.targets[train].to_numpy(), own[test], cohort.targets[test].to_numpy(),
                         list(cohort.targets.columns), ProbeConfig(seed=seed, latent_dim=latent))
    return pd.DataFrame(predicted, index=cohort.targets.index[test], columns=cohort.targets.columns)


def train_spot_run(features: str | Path, samples: list[SpotSample], out_dir: str | Path,
                   config: SpotRunConfig = SpotRunConfig(), train: TrainConfig = TrainConfig(), overwrite: bool = False,
                   progress: bool = False, verbose: int = 0) -> runs.TrainedRun:
    """Spot features (`features`: `hist2rna extract-spots`' folder) + `samples`' counts -> a spot run in
    `out_dir` (see the module). Everything is checked before anything is written."""
    from hist2rna_tf.model.train import memory_said

    out_dir = Path(out_dir)
    refuse_overlap(out_dir, {"--features": features})
    runs.refuse_existing(out_dir, overwrite)
    if train.head != DEFAULT_HEAD:
        raise SettingsError(f"--head {train.head}: a spot run trains the paper's head ({DEFAULT_HEAD}) on each spot's "
                            "features; the other heads read a slide's tiles.")
    settings = settings_from_options(train.head, train.head_options)
    cohort = spot_cohort(features, samples, config, train.seed)
    if cohort.feature_settings.named_backbone_with_random_weights and not train.standardize:
        log.warning("%s: features of %s with random weights (--weights none): they say nothing of biology and barely "
                    "differ between spots, so the head fed them raw learns little (add --standardize, as the demo's "
                    "spot run does).", features, cohort.feature_settings.backbone)
    train = replace(train, batch_size=config.batch_size)
    with runs.building(out_dir) as work, memory_said(train.head):
        runs.write_split(work, cohort.split.rename("subset"), cohort.spots["sample_id"])
        runs.write_genes(work, cohort.targets.columns)
        runs.write_targets(work, cohort.targets[cohort.rows("train")])
        fitted, scores = fit_and_score(cohort, settings, train, work, verbose, progress)
        record = runs.RunRecord(
            inputs=RunInputs(features=str(Path(features).resolve()), labels="", genes=config.genes,
                             expression=", ".join(str(Path(s.source).resolve()) for s in samples),
                             test_fraction=config.test_fraction),
            train=train, feature_dim=int(cohort.features.shape[1]), genes=int(cohort.targets.shape[1]),
            patients={"train": int(cohort.rows("train").sum()), "test": int(cohort.rows("test").sum())},
            feature_settings=cohort.feature_settings, extraction=cohort.extraction,
            head_settings=settings_dict(settings), spots=spot_record(cohort, config, samples, model_means(scores)),
            **fitted)
        runs.write_record(work, record)
        metrics = runs.write_metrics(work)
    metrics["per_sample"] = model_means(scores)
    return runs.TrainedRun(out_dir, record, metrics)


def fit_and_score(cohort: SpotCohort, settings, train: TrainConfig, work: Path, verbose: int = 0,
                  progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """Fit the head on the training spots (early stopping on the validation patients'), predict the
    held-out ones, fit HEST's ridge beside it; write the held-out tables and per_sample.csv into `work`.
    Returns what the record says of the fit, and the per-sample scores."""
    import keras

    from hist2rna_tf.model.train import fit_model

    kind = input_kind(DEFAULT_HEAD, settings, cohort.features.shape[1])
    keras.utils.set_random_seed(train.seed)
    fit_rows, test_rows = cohort.rows("train"), cohort.rows("test")
    x, y = cohort.features[fit_rows], cohort.targets[fit_rows].to_numpy(np.float32)
    val = validation_spots(cohort, train.validation_fraction, train.seed)
    x_test, measured = cohort.features[test_rows], cohort.targets[test_rows]

    def held_out(model) -> pd.DataFrame:
        return pd.DataFrame(kind.predict(model, x_test), index=measured.index, columns=measured.columns)

    start = time.perf_counter()
    model = kind.build(y.shape[1], kind.standardization(x[~val], y[~val]) if train.standardize else None)
    untrained = held_out(model)
    history = fit_model(model, kind.dataset(x[~val], y[~val], train.batch_size, train.seed),
                        kind.dataset(x[val], y[val], train.batch_size), train, work, verbose, progress=progress)
    seconds, predicted = time.perf_counter() - start, held_out(model)
    runs.write_held_out(work, predicted, measured)
    runs.write_random_predictions(work, untrained)
    ridge = ridge_baseline(cohort, train.seed)
    write_table(ridge.rename_axis("spot_id"), work / RIDGE_PREDICTIONS)
    scores = pd.concat([sample_scores(p, measured, cohort.spots["sample_id"], name)
                        for name, p in zip(MODELS, (predicted, ridge, untrained))], ignore_index=True)
    write_table(scores, work / PER_SAMPLE, index=False)
    return {"epochs": len(history), "best_val_loss": float(history["val_loss"].min()), "train_seconds": seconds}, scores


def spot_record(cohort: SpotCohort, config: SpotRunConfig, samples: list[SpotSample], means: dict) -> dict:
    """What the run's record says of its spots (RunRecord.spots)."""
    by_sample = cohort.spots.groupby("sample_id", sort=False)
    targets = TARGETS if config.normalize_total is None else f"log1p of counts scaled to {config.normalize_total:g} a spot"
    return {"targets": targets, "normalize_total": config.normalize_total, "genes": config.genes,
            "context_um": config.context_um, "mpp": {s.sample_id: s.mpp for s in samples},
            "samples": {sample: {"patient_id": str(block["patient_id"].iloc[0]), "spots": len(block),
                                 "subset": str(cohort.split.loc[block.index[0]]),
                                 "source": str(Path(next(s.source for s in samples if s.sample_id == sample)).resolve())}
                        for sample, block in by_sample},
            "held_out_mean_pearson": means}
