"""The spots a spot run learns from: each sample's spot record (`hist2rna extract-spots`: features,
patch corners, barcodes) joined to its counts by barcode; the targets the log1p of the counts (after
scaling each spot to `normalize_total`, when asked); the split by patient (a patient's samples all on
one side, never its spots on both); the genes chosen on the training samples alone.

The features of every spot are held in memory (as HEST's benchmark holds them): 20 samples of 5,000
spots at 1,536 features are 600 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd

from hist2rna_tf.arguments import OpenFraction, PositiveFloat, PositiveInt, at_least
from hist2rna_tf.config import Checked, option
from hist2rna_tf.errors import SpotError
from hist2rna_tf.extract.settings import Extraction, FeatureSettings, require_same
from hist2rna_tf.model.inputs.context import with_context
from hist2rna_tf.spots.genes import spot_genes
from hist2rna_tf.spots.sample import SpotSample

SPOT_ID = "{sample}:{barcode}"  # a spot's row name in the run's tables


@dataclass(frozen=True)
class SpotRunConfig(Checked):
    """What a spot run learns and how it splits (`hist2rna train-spots`); the fit is TrainConfig's."""

    genes: str = option("hvg:50", "hvg:N (HEST's N most variable genes, chosen on the training samples only), all "
                                  "(every gene all samples measured) or a file of gene symbols (default {default})")
    normalize_total: PositiveFloat | None = option(None, "scale each spot's counts to this total before log1p, e.g. "
                                                         "10000 (default: none, HEST's log1p of the raw counts)")
    context_um: Annotated[float, at_least(0)] = option(
        0.0, "NOT in HEST's probe: a head that sees each spot's neighbourhood: the mean features of the spots within "
             "this many microns (150: a Visium spot's ring of six) beside its own; on slides, the tiles within it "
             "(default {default}: the spot alone)")
    test_samples: tuple[str, ...] = option((), "the held-out samples (their patients' other samples too) (default: "
                                               "a seeded --test-fraction of the patients)")
    test_fraction: OpenFraction = option(0.25, "share of the patients held out when --test-samples is not given "
                                               "(default {default}; at least one)")
    patients: str | None = option(None, "CSV with columns sample_id, patient_id (default: HEST's metadata `patient`, "
                                        "else each sample its own patient)")
    batch_size: PositiveInt = option(64, "spots a minibatch (default {default}; the paper's 12 is for patients)")
    folds: Annotated[int, at_least(2)] | None = option(
        None, "K folds of patients, each held out once by a spot run of its own (<out>/fold-<k>/), then "
              "summary.csv: each fold's and the mean and std over folds, as HEST-Benchmark's splits (default: one "
              "split)")


@dataclass(frozen=True)
class SpotCohort:
    """The spots of a run: features [N, F] (float32; with the neighbourhood's, [N, 2F]), targets (spots x
    genes, log1p), `spots` (spot_id -> sample_id, patient_id, barcode, x, y: the patch's top-left, level-0
    px) and the split (spot_id -> train / test)."""

    features: np.ndarray
    targets: pd.DataFrame
    spots: pd.DataFrame
    split: pd.Series
    feature_settings: FeatureSettings
    extraction: Extraction | None
    own_dim: int  # a spot's own features (the first columns; the rest, with --context-um, its neighbourhood's)

    def rows(self, subset: str) -> np.ndarray:
        return (self.split == subset).to_numpy()


def sample_patients(samples: list[SpotSample], table: str | None) -> dict[str, str]:
    """Each sample's patient: `table`'s (sample_id, patient_id), else the sample's own, else its id."""
    given = {}
    if table:
        frame = pd.read_csv(table, dtype=str)
        if not {"sample_id", "patient_id"} <= set(frame.columns):
            raise SpotError(f"--patients {table}: needs columns sample_id and patient_id (it has "
                            f"{', '.join(frame.columns)}).")
        given = dict(zip(frame["sample_id"], frame["patient_id"]))
        unknown = [s.sample_id for s in samples if s.sample_id not in given]
        if unknown:
            raise SpotError(f"--patients {table}: no row for sample(s) {', '.join(unknown[:5])}; add them.")
    return {s.sample_id: given.get(s.sample_id) or s.patient_id or s.sample_id for s in samples}


def patient_split(patients: dict[str, str], test_samples: tuple[str, ...], fraction: float, seed: int) -> set[str]:
    """The held-out patients: those of `test_samples`, else a seeded `fraction` of them (at least one);
    a SpotError when fewer than two patients would be left to train (one for early stopping)."""
    unknown = [s for s in test_samples if s not in patients]
    if unknown:
        raise SpotError(f"--test-samples: {', '.join(unknown)} not among the samples given "
                        f"({', '.join(list(patients)[:6])}).")
    everyone = sorted(set(patients.values()))
    if test_samples:
        held = {patients[s] for s in test_samples}
    else:
        n_test = max(1, int(round(fraction * len(everyone))))
        held = set(np.random.default_rng(seed).permutation(everyone)[:n_test])
    if len(everyone) - len(held) < 2:
        raise SpotError(f"{len(everyone)} patient(s) ({', '.join(everyone[:6])}) leave {len(everyone) - len(held)} to "
                        "train on after the held-out ones; a spot run needs at least 2 (one held back for early "
                        "stopping, as whole patients): give samples of 3 patients or more.")
    return held


def spot_records(features_dir: str | Path, samples: list[SpotSample]) -> dict[str, Path]:
    """Each sample's spot record under `features_dir`; a SpotError naming the samples without one."""
    from hist2rna_tf.extract.records import record_files

    found = {Path(f).stem: Path(f) for f in record_files(features_dir)}
    missing = [s.sample_id for s in samples if s.sample_id not in found]
    if missing:
        raise SpotError(f"--features {features_dir}: no spot record for sample(s) {', '.join(missing[:6])}; run "
                        f"`hist2rna extract-spots` on them into that folder first.")
    return {s.sample_id: found[s.sample_id] for s in samples}


def spot_cohort(features_dir: str | Path, samples: list[SpotSample], config: SpotRunConfig,
                seed: int = 0) -> SpotCohort:
    """The spots of `samples` with their records in `features_dir` (see the module), split by patient
    (`config`, `seed`), the genes chosen on the training samples. A SpotError naming the first problem."""
    from hist2rna_tf.extract.records import folder_extraction, read_record  # TensorFlow: not for --help

    if len({s.sample_id for s in samples}) != len(samples):
        raise SpotError("a sample is given twice; give each sample once.")
    paths = spot_records(features_dir, samples)
    patients = sample_patients(samples, config.patients)
    held = patient_split(patients, config.test_samples, config.test_fraction, seed)
    genes = spot_genes(config.genes, [s for s in samples if patients[s.sample_id] not in held])
    features, targets, spots, settings = [], [], [], None
    for sample in samples:
        record = read_record(paths[sample.sample_id])
        if record.tile_names is None or record.tile_features is None:
            raise SpotError(f"{paths[sample.sample_id]}: not a spot record (no barcodes); make it with "
                            "`hist2rna extract-spots`.")
        if settings is None:
            settings = record.settings
        require_same(settings, record.settings, paths[sample.sample_id], f"{paths[samples[0].sample_id]}",
                     "extract every sample of a run with the same settings.")
        measured = sample.expression(genes, config.normalize_total)
        unknown = pd.Index(record.tile_names).difference(measured.index)
        if len(unknown):
            raise SpotError(f"{paths[sample.sample_id]}: {len(unknown)} spot(s) not in sample {sample.sample_id}'s "
                            f"counts (e.g. {unknown[0]}); the record is of another sample.")
        names = [SPOT_ID.format(sample=sample.sample_id, barcode=b) for b in record.tile_names]
        features.append(with_context(record.tile_features, record.tile_xy_px, record.mpp, config.context_um,
                                     paths[sample.sample_id], spots=True))
        targets.append(measured.loc[record.tile_names].set_axis(names))
        spots.append(pd.DataFrame({"sample_id": sample.sample_id, "patient_id": patients[sample.sample_id],
                                   "barcode": record.tile_names, "x": record.tile_xy_px[:, 0],
                                   "y": record.tile_xy_px[:, 1]}, index=names))
    spots_table = pd.concat(spots).rename_axis("spot_id")
    split = pd.Series(np.where(spots_table["patient_id"].isin(held), "test", "train"), index=spots_table.index)
    return SpotCohort(np.concatenate(features), pd.concat(targets).rename_axis("spot_id"), spots_table, split,
                      settings, folder_extraction(features_dir, settings), int(record.tile_features.shape[1]))
