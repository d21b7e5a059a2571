"""Cross-validation's folds and figures, without TensorFlow (crossval.py trains the folds; the report
reads them): K patient-level folds,
stratified by subtype; each fold a complete run folder (`<out>/fold-<k>/`, the files `train` writes,
its held-out patients the fold, early stopping on a validation share of its training patients as in
`train`); then the summary: per fold the median Spearman across genes and across patients, genes at
FDR < 0.05 and genes with R2 >= 0.1, their mean over folds with a 95% CI; each gene's mean
correlation and in how many folds it is significant; every patient's out-of-fold prediction.

The folds depend on the patients, their labels, K and the seed only: the same seed gives the same
folds. A crossval folder records them (folds.csv) and its settings (crossval.json); a killed crossval
re-run with the same command resumes at the first fold not finished, and one with another seed or
other settings is refused, naming the difference, never mixed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hist2rna_tf.analysis import sequoia
from hist2rna_tf.analysis.evaluate import held_out_metrics
from hist2rna_tf.analysis.sites import is_site_preserved, known_sites, welch_difference
from hist2rna_tf.analysis.subtype import classification_metrics, held_out_scores
from hist2rna_tf.atomic import write_table
from hist2rna_tf.barcodes import patient_id
from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.errors import CrossvalError
from hist2rna_tf.expression import read_table_file
from hist2rna_tf.model import runs

SETTINGS, FOLDS, SUMMARY, GENES = runs.CROSSVAL_SETTINGS, "folds.csv", "summary.csv", "genes.csv"
OOF_PREDICTIONS, OOF_TARGETS, OOF_SUBTYPES = "oof_predictions.csv", "oof_targets.csv", "oof_subtypes.csv"
# The untrained heads' out-of-fold predictions (SEQUOIA's "random" model), and summary.csv's column of its test.
OOF_RANDOM_PREDICTIONS, SEQUOIA_COLUMN = "oof_random_predictions.csv", "genes_sequoia_significant"


def fold_of(labels: pd.Series, folds: int, seed: int) -> pd.Series:
    """Patient -> fold (1..K), stratified by label (scikit-learn's StratifiedKFold, shuffled by `seed`,
    over the patients in sorted order): every fold holds each subtype. K must be at least 2 and at most
    the smallest subtype's patient count."""
    from sklearn.model_selection import StratifiedKFold

    counts = labels.value_counts()
    if folds < 2 or folds > counts.min():
        raise CrossvalError(f"--folds {folds}: needs 2 to {counts.min()}, the patients of the smallest subtype "
                            f"({counts.idxmin()}), so that every fold holds each subtype; the subtypes have "
                            + ", ".join(f"{label} {n}" for label, n in counts.items()) + " patients.")
    labels = labels.sort_index()
    assignment = pd.Series(0, index=labels.index, name="fold")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels.to_numpy()), start=1):
        assignment.iloc[test] = k
    return assignment


def folds_from_file(path: str | Path, column: str = "fold") -> pd.Series:
    """A table's patient -> fold: its first column a patient or TCGA slide barcode (a slide's patient
    taken), `column` whole numbers, renumbered 1..K in their order (a 0-based file too); a blank leaves the
    patient out. A missing column, a value not a whole number, a patient in two folds or fewer than two
    folds: a CrossvalError naming the file."""
    path = Path(path)
    table = read_table_file(path, CrossvalError, dtype=str, keep_default_na=False)
    if column not in table.columns:
        raise CrossvalError(f"{path}: no column {column!r} (columns: {', '.join(table.columns)}); give --folds-column "
                            "naming its column of folds.")
    values = table[column].str.strip()
    given = values != ""
    numbers = pd.to_numeric(values[given], errors="coerce")
    wrong = numbers.isna() | (numbers % 1 != 0)
    if wrong.any():
        raise CrossvalError(f"{path}: column {column!r} holds {values[given][wrong].iloc[0]!r}; folds are whole "
                            "numbers (1..K), blank for a patient in none.")
    frame = pd.DataFrame({"patient": table.loc[given, table.columns[0]].map(patient_id), "fold": numbers.astype(int)})
    frame = frame.drop_duplicates()
    twice = frame["patient"][frame["patient"].duplicated()]
    if len(twice):
        found = sorted(frame["fold"][frame["patient"] == twice.iloc[0]])
        raise CrossvalError(f"{path}: patient {twice.iloc[0]} is in folds {found[0]} and {found[1]}; a patient's "
                            "slides share one fold.")
    order = sorted(frame["fold"].unique())
    if len(order) < 2:
        raise CrossvalError(f"{path}: column {column!r} names {len(order)} fold; a crossval needs 2 or more.")
    return frame.set_index("patient")["fold"].map({fold: k for k, fold in enumerate(order, start=1)}).rename("fold")


def cohort_folds(path: str | Path, column: str, patients: pd.Index) -> tuple[pd.Series, int]:
    """folds_from_file's folds of `patients` (those it lacks left out) and the file's K (a fold none of
    them is in stays a fold: refused where its run is planned); a CrossvalError when it holds none of them."""
    given = folds_from_file(path, column)
    kept = given.reindex(patients).dropna().astype(int)
    if kept.empty:
        raise CrossvalError(f"{path}: none of its {len(given)} patients (e.g. {given.index[0]}) is among the "
                            f"{len(patients)} with features, expression and a label (e.g. {patients[0]}); give the "
                            "folds of this cohort, its first column naming each patient (or slide).")
    return kept, int(given.max())


@dataclass(frozen=True)
class CrossvalRecord:
    """crossval.json: what a crossval folder was made of."""

    inputs: RunInputs
    train: TrainConfig
    folds: int
    seed: int
    folds_file: str | None = None  # each patient's fold read from this table's column (else K stratified folds)
    folds_column: str | None = None

    def to_json(self) -> dict:
        made = {"inputs": dataclasses.asdict(self.inputs), "train": dataclasses.asdict(self.train), "folds": self.folds,
                "seed": self.seed}
        if self.folds_file:  # only then: a crossval made before --folds-file resumes with the same settings
            made.update(folds_file=self.folds_file, folds_column=self.folds_column)
        return made


def read_folds(crossval_dir: str | Path) -> pd.Series:
    """A crossval folder's patient -> fold."""
    path = Path(crossval_dir) / FOLDS
    if not path.is_file() or not (Path(crossval_dir) / SETTINGS).is_file():
        raise CrossvalError(f"{crossval_dir}: not a crossval folder (no {FOLDS} and {SETTINGS}); make one with "
                            "`hist2rna crossval`.")
    return pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id")["fold"]


def read_table(crossval_dir: str | Path, name: str, **options) -> pd.DataFrame:
    """One of a crossval's tables (SUMMARY, GENES, OOF_...), first column the index; a CrossvalError
    naming the file when it is missing or damaged (the crossval's command rewrites it from its folds)."""
    path = Path(crossval_dir) / name
    try:
        return read_table_file(path, CrossvalError, sep=",", index_col=0, **options)
    except CrossvalError as exc:
        raise CrossvalError(f"{exc} Run the same `hist2rna crossval` command again: it resumes and rewrites the "
                            "crossval's tables from its folds.") from None


def is_crossval(folder: str | Path) -> bool:
    return (Path(folder) / SETTINGS).is_file()


def fold_dirs(crossval_dir: str | Path) -> list[Path]:
    folds = int(read_folds(crossval_dir).max())
    return [Path(crossval_dir) / f"fold-{k}" for k in range(1, folds + 1)]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its t-distribution confidence interval."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def _figures(tables: dict) -> dict:
    genes, patients = tables["across_genes"], tables["across_patients"]
    return {"median_rho_genes": float(genes["rho"].median()), "median_rho_patients": float(patients["rho"].median()),
            "genes_fdr_0.05": int((genes["fdr"] < 0.05).sum()), "genes_r2_0.1": int((tables["r_squared"] >= 0.1).sum()),
            "patients": int(len(patients))}


def _clipped(column: str, interval: tuple[float, float, float]) -> tuple[float, float, float]:
    """A t-interval kept to what the figure can be: a count is never below 0, a correlation within [-1, 1]."""
    low, high = (-1.0, 1.0) if column.startswith("median_rho") else (0.0, np.inf)
    mean, ci_low, ci_high = interval
    return mean, float(np.clip(ci_low, low, high)), float(np.clip(ci_high, low, high))


def _fold_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of summary.csv that are folds (not the mean, its CI or the pool)."""
    return summary[summary.index.str.startswith("fold-")]


def write_summary(crossval_dir: str | Path) -> pd.DataFrame:
    """summary.csv (a row a fold, then the mean over folds and its 95% CI, then the out-of-fold
    pool), genes.csv and the out-of-fold predictions and targets of every patient."""
    crossval_dir = Path(crossval_dir)
    folds = fold_dirs(crossval_dir)
    per_fold = {f"fold-{k}": runs.metrics(d) for k, d in enumerate(folds, start=1)}
    rows = pd.DataFrame({name: _figures(tables) for name, tables in per_fold.items()}).T
    predicted = pd.concat([runs.held_out(d)[0] for d in folds]).sort_index()
    truth = pd.concat([runs.held_out(d)[1] for d in folds]).sort_index()
    pooled = held_out_metrics(predicted, truth)
    pooled_figures = _figures(pooled)
    if all((d / runs.RANDOM_PREDICTIONS).is_file() for d in folds):  # SEQUOIA's test, per fold and pooled as theirs
        rows[SEQUOIA_COLUMN] = [sequoia.summary(_sequoia_genes(d))["significant"] for d in folds]
        random = pd.concat([runs.read_patients_table(d / runs.RANDOM_PREDICTIONS) for d in folds]).sort_index()
        table = sequoia.gene_table(truth, predicted, random)
        write_table(table, crossval_dir / runs.SEQUOIA_TABLES["all_genes"])
        write_table(sequoia.significant(table), crossval_dir / runs.SEQUOIA_TABLES["sig_genes"])
        write_table(random, crossval_dir / OOF_RANDOM_PREDICTIONS)
        pooled_figures[SEQUOIA_COLUMN] = sequoia.summary(table)["significant"]
    intervals = {column: _clipped(column, mean_ci(rows[column])) for column in rows.columns}
    summary = pd.concat([rows, pd.DataFrame({
        "mean": {c: v[0] for c, v in intervals.items()}, "ci95_low": {c: v[1] for c, v in intervals.items()},
        "ci95_high": {c: v[2] for c, v in intervals.items()}, "out_of_fold": pooled_figures}).T])
    summary.index.name = "fold"
    write_table(summary, crossval_dir / SUMMARY)
    rho = pd.DataFrame({name: t["across_genes"]["rho"] for name, t in per_fold.items()})
    significant = pd.DataFrame({name: t["across_genes"]["fdr"] < 0.05 for name, t in per_fold.items()})
    genes = pd.DataFrame({"mean_rho": rho.mean(axis=1), "sd_rho": rho.std(axis=1, ddof=1),
                          "folds_significant": significant.sum(axis=1).astype(int),
                          "out_of_fold_rho": pooled["across_genes"]["rho"]})
    genes.index.name = "gene"
    write_table(genes.sort_values("mean_rho", ascending=False), crossval_dir / GENES)
    write_table(predicted, crossval_dir / OOF_PREDICTIONS)
    write_table(truth, crossval_dir / OOF_TARGETS)
    subtypes = oof_subtypes(folds)
    if subtypes is not None:
        write_table(subtypes, crossval_dir / OOF_SUBTYPES)
    return summary


def _sequoia_genes(run_dir: Path) -> pd.DataFrame:
    """A fold's SEQUOIA gene table (its all_genes.csv, computed when a run predates it)."""
    predicted, measured = runs.held_out(run_dir)
    return sequoia.gene_table(measured, predicted, runs.read_patients_table(run_dir / runs.RANDOM_PREDICTIONS))


def oof_subtypes(folds: list[Path]) -> pd.DataFrame | None:
    """Every patient's PAM50 call from its out-of-fold predicted genes: in each fold the paper's
    soft-voting classifier trained on that fold's training patients' measured genes and applied to its
    held-out patients (as a run's report does), pooled: patient -> label, call, each class's
    probability. None when a fold has too few labelled patients."""
    frames = []
    for fold_dir in folds:
        labels = runs.split_labels(fold_dir)
        scored = held_out_scores(runs.held_out(fold_dir)[0], labels, *runs.training_reference(fold_dir))
        if scored is None:
            return None
        probabilities = scored[1]
        frames.append(pd.concat([labels.reindex(probabilities.index).rename("label"),
                                 probabilities.idxmax(axis=1).rename("call"), probabilities.add_prefix("p_")], axis=1))
    table = pd.concat(frames).sort_index()
    table.index.name = "patient_id"
    return table.fillna({c: 0.0 for c in table.columns if c.startswith("p_")})


def subtype_scores(crossval_dir: str | Path) -> dict | None:
    """Accuracy, macro F1, AUROC per class and the confusion matrix of the out-of-fold PAM50 calls."""
    path = Path(crossval_dir) / OOF_SUBTYPES
    if not path.is_file():
        return None
    table = read_table(crossval_dir, OOF_SUBTYPES, dtype={"patient_id": str})
    probabilities = table[[c for c in table.columns if c.startswith("p_")]]
    return classification_metrics(table["label"], probabilities.rename(columns=lambda c: c[2:]))


@dataclass
class Comparison:
    """Two crossvals of the same patients and folds: per gene their fold-mean correlations, the
    Wilcoxon signed-rank test over genes, and the per-fold differences of the median across genes."""

    names: tuple[str, str]
    genes: pd.DataFrame  # gene -> mean_rho of each, difference
    wilcoxon_statistic: float
    wilcoxon_p: float
    fold_differences: pd.Series  # fold -> difference of the median rho across genes (first - second)
    difference_ci: tuple[float, float, float]  # mean over folds and its 95% CI

    def fold_table(self) -> pd.DataFrame:
        return self.fold_differences.rename("median rho difference").to_frame()

    @property
    def better(self) -> str:
        return self.names[0] if self.genes["difference"].median() > 0 else self.names[1]

    def verdict(self) -> str:
        """One sentence: which predicts better, and whether genes (Wilcoxon over genes) and folds (the
        95% CI of the per-fold difference of medians) both say so; "better" only when the genes do."""
        median = self.genes["difference"].median()
        mean, low, high = self.difference_ci
        by_genes = self.wilcoxon_p < 0.05
        by_folds = bool(low > 0 or high < 0) and (mean > 0) == (median > 0)
        other = self.names[1] if self.better == self.names[0] else self.names[0]
        genes = (f"per gene the fold-mean Spearman differs by a median {median:+.3f} ({self.names[0]} - "
                 f"{self.names[1]}), Wilcoxon signed-rank over {len(self.genes)} genes p = {self.wilcoxon_p:.2g}")
        folds = f"the median across genes differs by {mean:+.3f} a fold (95% CI {low:+.3f} to {high:+.3f}"
        if by_genes and by_folds:
            return f"{self.better} predicts better than {other}, over genes and in every fold: {genes}; {folds})."
        if by_genes:
            return (f"{self.better} predicts better than {other} gene by gene ({genes}, significant at 0.05), but not "
                    f"consistently across folds: {folds}, which includes 0).")
        return (f"no significant difference between {self.names[0]} and {self.names[1]}: {genes} (not significant at "
                f"0.05); {folds}).")


def crossval_sites(crossval_dir: str | Path) -> pd.Series:
    """A crossval's patient -> site: its folds.csv's (since 1.x), else each TCGA barcode's (NaN for others)."""
    table = pd.read_csv(Path(crossval_dir) / FOLDS, dtype={"patient_id": str, "site": str}).set_index("patient_id")
    if "site" in table.columns and table["site"].notna().any():
        return table["site"]
    return known_sites(table.index)


@dataclass
class SiteLeakGap:
    """A patient-level and a site-preserved crossval of the same patients (names in that order): per gene
    each one's out-of-fold Spearman (every patient predicted once), the Wilcoxon signed-rank test over
    genes, and the difference of their folds' median Spearman across genes (patient-level minus
    site-preserved, folds of other patients: Welch's 95% CI)."""

    names: tuple[str, str]
    genes: pd.DataFrame  # gene -> out-of-fold rho of each, difference
    wilcoxon_statistic: float
    wilcoxon_p: float
    fold_medians: pd.DataFrame  # fold -> each crossval's median rho across genes
    difference_ci: tuple[float, float, float]

    def verdict(self) -> str:
        """One sentence: the gap, and whether genes (Wilcoxon) and folds (Welch's CI) both say it is there;
        genes alone are not enough (a gene's correlations move together when the folds change)."""
        median = self.genes["difference"].median()
        mean, low, high = self.difference_ci
        by_genes, by_folds = self.wilcoxon_p < 0.05 and median > 0, bool(low > 0)
        said = (f"site-leak gap: per gene the out-of-fold Spearman of {self.names[0]} (patient-level folds) exceeds "
                f"{self.names[1]}'s (site-preserved folds) by a median {median:+.3f}, Wilcoxon signed-rank over "
                f"{len(self.genes)} genes p = {self.wilcoxon_p:.2g}; the folds' median across genes by {mean:+.3f} "
                f"(95% CI {low:+.3f} to {high:+.3f})")
        if by_genes and by_folds:
            return f"{said}. Part of the patient-level figures is the site: report the site-preserved ones."
        if by_genes:
            return (f"{said}, which includes 0: gene by gene the patient-level folds do better, but not beyond the "
                    "folds' own spread; no gap shown (more folds, or repeats with other seeds, would tell).")
        return f"{said}. No significant gap: the patient-level figures do not lean on the sites here."

    def fold_table(self) -> pd.DataFrame:
        return self.fold_medians


def compare(first: str | Path, second: str | Path, names: tuple[str, str] | None = None) -> Comparison | SiteLeakGap:
    """The paired comparison of two crossvals of the same patients and folds; of a patient-level and a
    site-preserved crossval of the same patients, the site-leak gap. Anything else is refused, naming
    the difference."""
    if Path(first).resolve() == Path(second).resolve():
        raise CrossvalError(f"--compare {second}: the crossval itself; compare it with another crossval.")
    a, b = read_folds(first), read_folds(second)
    names = names or (Path(first).name, Path(second).name)
    if not a.sort_index().equals(b.sort_index()):
        only = sorted(set(a.index) ^ set(b.index))
        preserved = [is_site_preserved(f, crossval_sites(d)) for f, d in ((a, first), (b, second))]
        if not only and preserved[0] != preserved[1]:
            if a.max() != b.max():
                raise CrossvalError(f"{first} has {a.max()} folds and {second} {b.max()}: their training sets differ in "
                                    "size, so the gap would mix the sites with it; make both with the same K.")
            order = (1, 0) if preserved[0] else (0, 1)
            folders, names = [(first, second)[i] for i in order], tuple(names[i] for i in order)
            return site_leak_gap(*folders, names)
        moved = [p for p in sorted(set(a.index) & set(b.index)) if a[p] != b[p]]
        what = (f"patients in one only (e.g. {only[0]})" if only else
                f"{len(moved)} patients in other folds (e.g. {moved[0]}: fold {a[moved[0]]} in {first}, {b[moved[0]]} "
                f"in {second})")
        raise CrossvalError(f"{first} and {second} hold different folds ({what}); compare crossvals made on the same "
                            "patients with the same --folds and --seed (or --folds-file), or a patient-level and a "
                            "site-preserved crossval of the same patients (the site-leak gap).")
    rho = pd.DataFrame({n: read_table(d, GENES)["mean_rho"] for n, d in zip(names, (first, second))})
    rho = rho.dropna()
    rho["difference"] = rho[names[0]] - rho[names[1]]
    test = stats.wilcoxon(rho["difference"])
    medians = [_fold_rows(read_table(f, SUMMARY))["median_rho_genes"] for f in (first, second)]
    differences = medians[0] - medians[1]
    return Comparison(names, rho, float(test.statistic), float(test.pvalue), differences, mean_ci(differences))


def site_leak_gap(patient_level: str | Path, site_preserved: str | Path, names: tuple[str, str]) -> SiteLeakGap:
    rho = pd.DataFrame({n: read_table(d, GENES)["out_of_fold_rho"] for n, d in zip(names, (patient_level,
                                                                                         site_preserved))}).dropna()
    rho["difference"] = rho[names[0]] - rho[names[1]]
    test = stats.wilcoxon(rho["difference"])
    medians = [_fold_rows(read_table(f, SUMMARY))["median_rho_genes"] for f in (patient_level, site_preserved)]
    table = pd.concat([m.rename(n) for m, n in zip(medians, names)], axis=1)
    return SiteLeakGap(names, rho, float(test.statistic), float(test.pvalue), table, welch_difference(*medians))
