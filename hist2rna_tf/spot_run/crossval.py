"""Spot runs over folds of patients (`hist2rna train-spots --folds K`), as HEST-Benchmark evaluates a task
over patient-level splits: the patients dealt into K folds (seeded), each fold held out once by a spot run
of its own (`<out>/fold-<k>/`, a complete run folder: its genes chosen on its training samples), then
`summary.csv`: each fold's mean Pearson per model (the head, HEST's ridge, the untrained head; HEST's
figure: a sample's mean over genes, averaged over the fold's samples), and their mean and standard
deviation over folds (HEST's `pearson_mean` and `pearson_std` of the split means). A fold already
complete is kept: a killed crossval resumes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import write_table
from hist2rna_tf.config import TrainConfig
from hist2rna_tf.errors import SpotError
from hist2rna_tf.spot_run.cohort import SpotRunConfig, sample_patients
from hist2rna_tf.spot_run.metrics import PER_SAMPLE, model_means
from hist2rna_tf.spots.sample import SpotSample

SUMMARY = "summary.csv"


def patient_folds(patients: dict[str, str], k: int, seed: int) -> list[list[str]]:
    """The patients dealt into `k` folds (shuffled with `seed`, then in turn); a SpotError when a fold
    would leave fewer than two patients to train on, or there are fewer patients than folds."""
    everyone = sorted(set(patients.values()))
    if k < 2 or k > len(everyone) or len(everyone) - -(-len(everyone) // k) < 2:
        raise SpotError(f"--folds {k}: {len(everyone)} patient(s) ({', '.join(everyone[:6])}); K folds need K "
                        "patients at least, each fold leaving 2 or more to train on (one held back for early "
                        "stopping). Give fewer folds (2 at least), or samples of more patients.")
    order = list(np.random.default_rng(seed).permutation(everyone))
    return [sorted(order[i::k]) for i in range(k)]


def crossval_spots(features: str | Path, samples: list[SpotSample], out_dir: str | Path, folds: int,
                   config: SpotRunConfig = SpotRunConfig(), train: TrainConfig = TrainConfig(),
                   progress: bool = False) -> pd.DataFrame:
    """Every fold's spot run under `out_dir` and the summary (see the module); returns the summary."""
    from hist2rna_tf.model import runs
    from hist2rna_tf.spot_run.train import train_spot_run

    if config.test_samples:
        raise SpotError("--folds holds out every patient in turn; leave --test-samples out.")
    out_dir = Path(out_dir)
    patients = sample_patients(samples, config.patients)
    dealt = patient_folds(patients, folds, train.seed)
    rows = []
    for k, held in enumerate(dealt, start=1):
        folder = out_dir / f"fold-{k}"
        test = tuple(s for s, p in patients.items() if p in held)
        if not _complete(folder, test, config):
            train_spot_run(features, samples, folder, replace(config, test_samples=test), train, overwrite=True,
                           progress=progress)
        means = model_means(pd.read_csv(folder / PER_SAMPLE))
        rows.append({"fold": str(k), "held_out": " ".join(test), "spots": runs.read_record(folder).patients["test"],
                     **means})
    table = pd.DataFrame(rows)
    models = [c for c in table.columns if c not in ("fold", "held_out", "spots")]
    summary = pd.concat([table, pd.DataFrame([{"fold": "mean", **table[models].mean().to_dict()},
                                              {"fold": "std", **table[models].std(ddof=0).to_dict()}])],
                        ignore_index=True)
    write_table(summary, out_dir / SUMMARY, index=False)
    return summary


def _complete(folder: Path, test: tuple[str, ...], config: SpotRunConfig) -> bool:
    """Whether `folder` holds a finished spot run holding out exactly `test`, of `config`'s targets,
    genes and neighbourhood (else it is trained again)."""
    from hist2rna_tf.errors import Hist2RNAError
    from hist2rna_tf.model import runs

    try:
        spots = runs.read_record(folder).spots
    except Hist2RNAError:
        return False
    same = bool(spots) and all(spots[key] == getattr(config, key) for key in ("genes", "normalize_total", "context_um"))
    return same and (folder / PER_SAMPLE).is_file() and sorted(
        s for s, info in spots["samples"].items() if info["subset"] == "test") == sorted(test)
