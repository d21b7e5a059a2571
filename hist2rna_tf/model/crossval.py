"""Cross-validation (beyond the paper, which reports one held-out split): train the K folds of
folds.py, each a complete run folder `<out>/fold-<k>/` (the files `train` writes, its held-out
patients the fold, early stopping on a validation share of its training patients as in `train`),
then write the summary (folds.write_summary). A killed crossval re-run with the same command resumes
at the first fold not finished; one with another seed or other settings is refused, naming the
difference, never mixed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.analysis.sites import fold_table
from hist2rna_tf.atomic import write_table, write_text
from hist2rna_tf.config import CROSSVAL_FOLDS, RunInputs, TrainConfig, changed_fields
from hist2rna_tf.errors import CrossvalError
from hist2rna_tf.expression import save_split
from hist2rna_tf.model import runs
from hist2rna_tf.model.folds import (FOLDS, SETTINGS, CrossvalRecord, cohort_folds, fold_of, read_folds,
                                     write_summary)
from hist2rna_tf.model.heads import settings_from_options
from hist2rna_tf.model.train import Cohort, absolute_inputs, check_head, cohort_of, plan_split, train_run
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.progress import bar

log = logging.getLogger(__name__)


def _start(out_dir: Path, record: CrossvalRecord, assignment: pd.Series, cohort: Cohort) -> None:
    """Write the settings and the folds, or check them against those of the crossval already there. A
    crossval folder of no fold begun (its first fold refused or killed before it was written) is begun
    again with these settings."""
    settings = json.loads(json.dumps(record.to_json(), default=str))
    path = out_dir / SETTINGS
    if path.is_file() and any(out_dir.glob("fold-*")):
        changed = changed_fields(_found_settings(path), settings)
        if changed:
            raise CrossvalError(f"{out_dir}: a crossval made with other settings ({'; '.join(changed[:4])}); give "
                                "another --out, or the same options to resume it.")
        if (out_dir / FOLDS).is_file() and not read_folds(out_dir).sort_index().equals(assignment.sort_index()):
            raise CrossvalError(f"{out_dir}: a crossval of other folds ({record.folds_file or 'its patients'} "
                                "changed since it began); give another --out, or the folds it began with.")
        return
    if not path.is_file() and out_dir.exists() and any(out_dir.iterdir()):
        raise CrossvalError(f"{out_dir} exists and is not a crossval folder; give another --out.")
    write_table(fold_table(cohort.labels.loc[assignment.index], cohort.sites, assignment), out_dir / FOLDS, index=False)
    write_text(path, json.dumps(settings, indent=1))


def _found_settings(path: Path) -> dict:
    """A crossval's settings file as today's settings read it (what it lacks: the defaults of then)."""
    try:
        found = json.loads(path.read_text())
    except ValueError:
        raise CrossvalError(f"{path}: not readable JSON; give another --out.") from None
    if isinstance(found.get("train"), dict):  # settings added since that crossval began keep their defaults
        if "head" not in found["train"] and found.get("inputs", {}).get("genes") == "all":
            found["inputs"]["genes"] = "panel"  # before 0.8.0 (no head), "all" named the 138
        today = dataclasses.asdict(TrainConfig())  # (settings since removed, e.g. clusters: a head setting now)
        found["train"] = {**today, **{k: v for k, v in found["train"].items() if k in today}}
    return found


def crossval(inputs: RunInputs, out_dir: str | Path, train: TrainConfig = TrainConfig(),
             folds: int = CROSSVAL_FOLDS, seed: int = 0, verbose: int = 0, progress: bool = False,
             folds_file: str | Path | None = None, folds_column: str = "fold") -> pd.DataFrame:
    """Train K runs, each holding out one fold; folds already complete are kept (a re-run resumes).
    The folds: K patient-level ones stratified by subtype (`seed`), or each patient's from `folds_file`'s
    `folds_column` (`hist2rna folds`' table, site-preserved or not, or a published split; K is the file's,
    the cohort's patients it lacks left out, warned). The validation share inside each fold's training
    patients stays patient-level. Every fold is checked as `train` checks a run (patients to train, stop
    early and evaluate, the head's settings and starting file, tile features) before anything is written.
    Returns the summary (summary.csv)."""
    out_dir = Path(out_dir)
    refuse_overlap(out_dir, {"--features": inputs.features, "--expression": inputs.expression, "--labels": inputs.labels})
    settings = settings_from_options(train.head, train.head_options)  # before any data is read
    inputs = absolute_inputs(without_split(inputs))
    cohort = cohort_of(inputs)
    if folds_file:
        folds_file = str(Path(folds_file).resolve())
        assignment, folds = _file_folds(folds_file, folds_column, cohort)
        fix = (f"That is fold {{k}} of {folds_file} (column {folds_column}): give a table whose every fold holds "
               "enough of this cohort's patients")
    else:
        assignment = fold_of(cohort.labels, folds, seed)
        fix = (f"That is fold {{k}} of --folds {folds}, each holding out about 1/{folds} of the patients: give fewer "
               "--folds, or add patients")
    kind = check_head(train, settings, cohort)
    subsets = {k: pd.Series(np.where(assignment == k, "test", "train"), index=assignment.index)
               for k in range(1, folds + 1)}
    for k, subset in subsets.items():
        plan_split(inputs, train, kind, cohort, subset, fix=fix.replace("{k}", str(k)))
    record = CrossvalRecord(inputs, train, folds, seed, folds_file, folds_column if folds_file else None)
    _start(out_dir, record, assignment, cohort)
    splits = out_dir / "splits"
    for k in bar(range(1, folds + 1), desc="folds", unit="fold", enabled=progress):
        fold_dir = out_dir / f"fold-{k}"
        if fold_dir.exists():
            _check_fold(fold_dir, subsets[k])
            continue
        save_split(subsets[k], cohort.labels, splits / f"fold-{k}.csv", cohort.sites)
        train_run(dataclasses.replace(inputs, split=str(splits / f"fold-{k}.csv")), fold_dir, train, verbose=verbose)
    return write_summary(out_dir)


def _file_folds(path: str, column: str, cohort: Cohort) -> tuple[pd.Series, int]:
    """The cohort's patients' folds from a table, in the cohort's order, and K; those it lacks warned of."""
    given, k = cohort_folds(path, column, cohort.labels.index)
    left_out = cohort.labels.index.difference(given.index)
    if len(left_out):
        log.warning("%d of the %d patients with features, expression and a label are in no fold of %s (e.g. %s): "
                    "left out of the crossval.", len(left_out), len(cohort.labels), path, left_out[0])
    return given.reindex(cohort.labels.index.intersection(given.index, sort=False)), k


def without_split(inputs: RunInputs) -> RunInputs:
    if inputs.split:
        raise CrossvalError("--split: a crossval makes its own folds (--folds, --seed); leave --split out.")
    return inputs


def _check_fold(fold_dir: Path, subset: pd.Series) -> None:
    """A fold folder left by an earlier run of this crossval: complete, and holding out this fold."""
    runs.read_record(fold_dir)  # a folder that is not a complete run is named
    held = set(runs.held_out(fold_dir)[0].index)
    if held != set(subset.index[subset == "test"]):
        raise CrossvalError(f"{fold_dir}: holds out other patients than its fold; remove it to train it again.")


