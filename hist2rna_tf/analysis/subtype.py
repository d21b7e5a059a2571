"""PAM50 subtypes from (predicted or measured) expression.

`centroid_calls`: the standard nearest-centroid call (Parker et al. 2009, centroids shipped in
data/pam50): log-scale data, each gene median-centred over the cohort, Spearman correlation of each
sample with each subtype centroid; the highest wins. Median-centring makes a call relative to the
cohort it is made in: a cohort that is mostly one subtype shifts the others' calls. Missing values
are handled as the reference implementations do (hoadley-lab/pam50, genefu): each gene is centred
on the median of the samples that have it, and each sample is correlated with the centroids over
the genes it has (pairwise-complete Spearman).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hist2rna_tf.config import PAM50_LABEL_COLUMN, PAPER_SUBTYPES
from hist2rna_tf.errors import ClinicalError, ExpressionError
from hist2rna_tf.expression import alias_map, log2_expression, read_expression, read_labels, to_patients

log = logging.getLogger(__name__)

CENTROID_NAMES = {"basal": "Basal", "her2": "Her2", "luminal_a": "LumA", "luminal_b": "LumB", "normal": "Normal"}


def pam50_centroids() -> pd.DataFrame:
    """genes x subtypes (Basal, Her2, LumA, LumB, Normal), current gene symbols."""
    with resources.files("hist2rna_tf").joinpath("data", "pam50", "pam50_centroids.tsv").open() as handle:
        table = pd.read_csv(handle, sep="\t", index_col=0)
    return table.rename(index=alias_map(), columns=CENTROID_NAMES)


def centroid_calls(log_expression: pd.DataFrame, min_genes: int = 40) -> pd.DataFrame:
    """Per sample: `call` (the best-correlated subtype), `n_genes` (the PAM50 genes it was called
    on) and the Spearman correlation with each centroid.

    `log_expression`: samples x genes on a log scale (log2(1+RSEM), or microarray log ratios); NaN
    for a missing value. A sample is correlated over the genes it has; the table needs at least
    `min_genes` of the 50 PAM50 genes, and so does every sample (ExpressionError naming those
    that have fewer).
    """
    _refuse_repeated_samples(log_expression)
    centroids = pam50_centroids()
    genes = [g for g in centroids.index if g in log_expression.columns]
    missing = sorted(set(centroids.index) - set(genes))
    if len(genes) < min_genes:
        raise ExpressionError(f"only {len(genes)} of the 50 PAM50 genes are in the table (missing: "
                              f"{', '.join(missing)}); at least {min_genes} are needed.")
    if missing:
        log.warning("the table lacks %d of the 50 PAM50 genes (%s); samples are called on the other %d.",
                    len(missing), ", ".join(missing), len(genes))
    data = log_expression[genes].astype(float)
    present = data.notna()
    n_genes = present.sum(axis=1)
    short = n_genes[n_genes < min_genes]
    if len(short):
        listed = ", ".join(f"{sample} ({count})" for sample, count in short.head(10).items())
        raise ExpressionError(f"{len(short)} samples have fewer than {min_genes} of the 50 PAM50 genes measured "
                              f"({listed}{', ...' if len(short) > 10 else ''}): too few to call a subtype. Remove "
                              "them from the table (or impute their missing values).")
    centred = data - data.median(axis=0)  # each gene's median over the samples that have it
    # The reference then scales each sample (R's scale(): mean 0, sd 1 over its genes). Spearman does
    # not change, except that values equal but for float rounding (centring gives 1e-17 apart) can
    # become the ties they are: scaled the same way, every correlation is the reference's to 1e-9.
    mean = centred.mean(axis=1)
    spread = np.sqrt(centred.sub(mean, axis=0).pow(2).sum(axis=1) / (n_genes - 1))
    scaled = centred.sub(mean, axis=0).div(spread, axis=0)
    table = pd.DataFrame(_pairwise_spearman(scaled.to_numpy(), present.to_numpy(), centroids.loc[genes]),
                         index=log_expression.index, columns=centroids.columns)
    table.insert(0, "n_genes", n_genes)
    table.insert(0, "call", table[list(centroids.columns)].idxmax(axis=1))
    return table


def _refuse_repeated_samples(table: pd.DataFrame) -> None:
    repeated = sorted(set(map(str, table.index[table.index.duplicated()])))
    if repeated:
        raise ExpressionError(f"samples appear more than once in the table ({', '.join(repeated[:10])}"
                              f"{', ...' if len(repeated) > 10 else ''}): each would get its own call; keep one row "
                              "(or column) per sample.")


def _pairwise_spearman(values: np.ndarray, present: np.ndarray, centroids: pd.DataFrame) -> np.ndarray:
    """[samples, subtypes] Spearman correlation of each row of `values` with each centroid column over
    the genes that row has (`present`): both ranked among those genes only (R's
    `cor(method = "spearman", use = "pairwise.complete.obs")`). Rows sharing a pattern of missing
    genes are computed together."""
    out = np.empty((len(values), centroids.shape[1]))
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    for k, pattern in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == k)
        x = _centred_unit(stats.rankdata(values[np.ix_(rows, pattern)], axis=1), axis=1)
        y = _centred_unit(stats.rankdata(centroids.to_numpy()[pattern], axis=0), axis=0)
        out[rows] = x @ y  # Pearson of the ranks
    return out


def _centred_unit(a: np.ndarray, axis: int) -> np.ndarray:
    """`a` centred and scaled to unit length along `axis` (dot products are then correlations)."""
    a = a - a.mean(axis=axis, keepdims=True)
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


# --- the paper's soft-voting classifier (section 3.2) ----------------------------------------------


def voting_classifier(seed: int = 0):
    """The paper's classifier: soft voting over a random forest, an MLP, LDA and logistic regression.

    Inputs are standardised for the MLP and logistic regression (scale-sensitive). The paper gives no
    hyper-parameters: scikit-learn's defaults, except a 300-tree random forest (for steadier
    probabilities than the default 100) and max_iter raised so the MLP and regression converge.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return VotingClassifier(voting="soft", estimators=[
        ("rf", RandomForestClassifier(n_estimators=300, random_state=seed)),
        ("mlp", make_pipeline(StandardScaler(), MLPClassifier(max_iter=2000, random_state=seed))),
        ("lda", LinearDiscriminantAnalysis()),
        ("lr", make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
    ])


def classification_metrics(truth: pd.Series, probabilities: pd.DataFrame) -> dict:
    """Accuracy, macro F1, one-vs-rest AUROC per class and the confusion matrix (rows = truth)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    classes = list(probabilities.columns)
    predicted = probabilities.idxmax(axis=1)
    auroc = {c: float(roc_auc_score(truth == c, probabilities[c])) if (truth == c).any() and (truth != c).any()
             else float("nan") for c in classes}
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)),
            "auroc": auroc,
            "confusion": pd.DataFrame(confusion_matrix(truth, predicted, labels=classes), index=classes, columns=classes)}


def shared_pam50_genes(*tables: pd.DataFrame) -> list[str]:
    """The PAM50 genes every table has as a column (centroid order)."""
    return [g for g in pam50_centroids().index if all(g in t.columns for t in tables)]


@dataclass
class Voting:
    """The paper's soft-voting classifier fitted on measured PAM50 genes: `probabilities(table)` for
    any samples x genes table holding `genes`."""

    model: object
    genes: list[str]

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes_)

    def probabilities(self, table: pd.DataFrame) -> pd.DataFrame:
        """Samples x classes."""
        return pd.DataFrame(self.model.predict_proba(table[self.genes].to_numpy()), index=table.index,
                            columns=self.model.classes_)


def fit_voting(reference: pd.DataFrame, labels: pd.Series, genes: list[str], seed: int = 0) -> Voting:
    """`voting_classifier` fitted on the `reference` patients (measured log2 expression, patients x
    genes) that have a label in `labels`, over `genes` (the PAM50 genes shared with the table it will
    be applied to: `shared_pam50_genes`). The one fit behind the held-out subtype metrics, the subtype
    calls, the LumA/LumB calls and the tiles' calls."""
    rows = labels.index.intersection(reference.index)
    return Voting(voting_classifier(seed).fit(reference.loc[rows, genes].to_numpy(), labels.loc[rows].to_numpy()),
                  list(genes))


def fit_and_score_voting(train_x: pd.DataFrame, train_y: pd.Series, test_x: pd.DataFrame, test_y: pd.Series,
                         seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Train on the training patients' PAM50 expression and score on test patients' (e.g. predicted) expression.

    As in the paper, the classifier learns from measured RNA-seq of the training patients and is applied
    to the hist2RNA-predicted genes of the held-out patients, so its accuracy measures how well the
    predicted genes carry the subtype. Returns the metrics and the class probabilities per test patient.
    """
    genes = shared_pam50_genes(train_x, test_x)
    if len(genes) < 10:
        raise ExpressionError(f"only {len(genes)} PAM50 genes are shared by the training and test tables.")
    probabilities = fit_voting(train_x, train_y, genes, seed).probabilities(test_x)
    return classification_metrics(test_y, probabilities), probabilities


def held_out_scores(predicted: pd.DataFrame, labels: pd.Series, train_x: pd.DataFrame, train_y: pd.Series,
                    seed: int = 0) -> tuple[dict, pd.DataFrame] | None:
    """The paper's subtype result for a run: the classifier trained on the training patients'
    measured PAM50 genes (`train_x`, `train_y`) and scored on the held-out patients' predicted genes
    (`predicted`) against their `labels`, over the paper's four subtypes (`fit_and_score_voting`).
    None when too few patients are labelled (fewer than 3 held out, or one training subtype)."""
    test_y = labels.reindex(predicted.index)
    keep, keep_train = test_y.isin(PAPER_SUBTYPES), train_y.isin(PAPER_SUBTYPES)
    if keep.sum() < 3 or train_y[keep_train].nunique() < 2:
        return None
    return fit_and_score_voting(train_x[keep_train], train_y[keep_train], predicted[keep], test_y[keep], seed)


def voting_calls(log_expression: pd.DataFrame, reference: pd.DataFrame, reference_labels: pd.Series,
                 subtypes: tuple[str, ...] = PAPER_SUBTYPES, seed: int = 0) -> pd.DataFrame:
    """The paper's classifier trained on a labelled reference cohort (measured log2 expression and
    PAM50 labels), applied to `log_expression` (samples x genes, e.g. predicted genes): per sample the
    `call` and each class's probability."""
    _refuse_repeated_samples(log_expression)
    return calls_of(fitted_voting(reference, reference_labels, log_expression.columns, subtypes, seed), log_expression)


def fitted_voting(reference: pd.DataFrame, reference_labels: pd.Series, columns, subtypes: tuple[str, ...] = PAPER_SUBTYPES,
                  seed: int = 0) -> Voting:
    """The paper's classifier fitted on the reference patients labelled with one of `subtypes`, over the
    PAM50 genes shared by the reference and `columns` (the genes of the tables it will call); fitted
    once, it calls any number of tables (`calls_of`), e.g. every slide's tiles."""
    labels = reference_labels[reference_labels.isin(subtypes)]
    labelled = labels.index.intersection(reference.index)
    genes = shared_pam50_genes(reference, pd.DataFrame(columns=list(columns)))
    if len(labelled) < 10 or len(genes) < 10:
        raise ExpressionError(f"the voting classifier needs >= 10 labelled reference patients and >= 10 shared PAM50 "
                              f"genes; found {len(labelled)} patients and {len(genes)} genes (check that the reference "
                              "expression and labels use the same patient IDs).")
    return fit_voting(reference, labels, genes, seed)


def calls_of(voting: Voting, log_expression: pd.DataFrame) -> pd.DataFrame:
    """Per sample of `log_expression`: the `call` (the most probable class) and each class's `p_<class>`."""
    probabilities = voting.probabilities(log_expression).add_prefix("p_")
    return pd.concat([probabilities.idxmax(axis=1).str[2:].rename("call"), probabilities], axis=1)


LUMINAL = ("LumA", "LumB")


def luminal_calls(predicted: pd.DataFrame, reference: pd.DataFrame, reference_labels: pd.Series,
                  seed: int = 0) -> pd.DataFrame:
    """LumA vs LumB for each patient from predicted PAM50 genes (the paper's section 3.3): the
    soft-voting classifier trained on the reference cohort's luminal patients (measured log2
    expression and PAM50 labels, e.g. the TCGA training patients). Returns `call` and `p_LumB` per
    patient."""
    luminal = reference_labels[reference_labels.isin(LUMINAL)]
    genes = shared_pam50_genes(predicted, reference)
    if len(genes) < 10 or luminal.nunique() < 2:
        raise ClinicalError(f"LumA/LumB calls need >= 10 shared PAM50 genes (have {len(genes)}) and reference "
                            "patients of both luminal subtypes.")
    probability = fit_voting(reference, luminal, genes, seed).probabilities(predicted)
    return pd.DataFrame({"call": probability.idxmax(axis=1), "p_LumB": probability["LumB"]})


# --- risk of recurrence (research output) ----------------------------------------------------------


def ror_subtype_scores(calls: pd.DataFrame) -> pd.DataFrame:
    """PAM50 ROR-S (subtype-only risk of recurrence, Parker et al. 2009) from `centroid_calls` output:
    the shipped coefficients times the per-centroid correlations, and its low / intermediate / high
    group by the shipped thresholds. Research output: not the licensed Prosigna assay, whose
    normalisation and platform differ."""
    import json

    folder = resources.files("hist2rna_tf").joinpath("data", "pam50")
    coefficients = json.loads(folder.joinpath("ror_coeffs.json").read_text())["subtype"]
    thresholds = json.loads(folder.joinpath("ror_thresholds.json").read_text())["subtype"]
    score = sum(weight * calls[CENTROID_NAMES[name]] for name, weight in coefficients.items())
    group = pd.cut(score, [-float("inf"), thresholds["low"], thresholds["high"], float("inf")],
                   labels=["low", "intermediate", "high"], right=False)
    return pd.DataFrame({"ror_s": score, "ror_group": group.astype(str)}, index=calls.index)


def subtype_table(expression: str | Path, method: str = "centroid", reference_expression: str | Path | None = None,
                  reference_labels: str | Path | None = None, label_column: str = PAM50_LABEL_COLUMN,
                  logged: bool = False, reference_logged: bool | None = None) -> pd.DataFrame:
    """`hist2rna subtype`: a PAM50 call per sample of an expression file (cBioPortal RSEM or samples x
    genes; raw RSEM unless `logged`): `centroid_calls`, or `voting_calls` trained on a labelled
    reference cohort's expression file (raw unless `reference_logged`; None: as `logged`) and label
    table. Missing values stay missing (the centroid calls handle them per sample; the voting
    classifier needs every PAM50 gene and names the samples that lack one). Indexed by sample_id."""
    def load(path, is_logged):
        table = read_expression(path)
        _refuse_infinite(table, path)
        return table if is_logged else log2_expression(table, path, missing_ok=True)

    table = load(expression, logged)
    if method == "centroid":
        if len(table) < 2:
            raise ExpressionError(f"{expression}: one sample; the nearest-centroid call median-centres each gene over "
                                  "the samples of a cohort, which one sample cannot be (every gene would be 0). Call it "
                                  "within its cohort, or use --method voting with a labelled reference cohort "
                                  "(--reference-expression, --reference-labels), which calls each sample alone.")
        calls = centroid_calls(table)
    elif method == "voting":
        if not (reference_expression and reference_labels):
            raise ExpressionError("--method voting needs --reference-expression and --reference-labels (a labelled "
                                  "cohort to train the classifier on, e.g. the TCGA RNA-seq and its PAM50 labels).")
        reference = to_patients(load(reference_expression, logged if reference_logged is None else reference_logged),
                                reference_expression)
        labels = read_labels(reference_labels, label_column)
        _require_reference(reference, labels, reference_expression, reference_labels, label_column)
        _require_complete(table, expression)
        _require_complete(reference, reference_expression)
        _warn_if_scales_differ(table, reference, expression, reference_expression)
        calls = voting_calls(table, reference, labels)
    else:
        raise ValueError(f"unknown subtype method {method!r}; choose centroid or voting")
    return calls.rename_axis("sample_id")


def _refuse_infinite(table: pd.DataFrame, source) -> None:
    """An ExpressionError naming the first infinite cell (a missing value, NaN, is allowed: see centroid_calls)."""
    infinite = np.isinf(table.to_numpy(np.float64))
    if infinite.any():
        r, c = np.argwhere(infinite)[0]
        raise ExpressionError(f"{source}: gene {table.columns[c]!r} of sample {table.index[r]!r} is not a finite number "
                              f"({table.iloc[r, c]}); {int(infinite.sum())} cells are infinite in all. Leave a value "
                              "that was not measured empty (it is handled as missing) and fix the others.")


def _require_reference(reference: pd.DataFrame, labels: pd.Series, expression_path, labels_path, column: str) -> None:
    """Enough labelled reference patients with expression, of at least two subtypes, or an error naming
    the labels file, the values it has and the IDs of both sides."""
    usable = labels[labels.isin(PAPER_SUBTYPES)]
    shared = usable.index.intersection(reference.index)
    classes = sorted(usable.loc[shared].unique())
    if len(shared) >= 10 and len(classes) < 2:
        raise ExpressionError(f"{labels_path}: its {len(shared)} patients with expression in {expression_path} are "
                              f"all of one subtype ({classes[0]!r} in {column!r}); a classifier learns to tell "
                              f"subtypes apart from a reference of several ({', '.join(PAPER_SUBTYPES)}).")
    if len(shared) >= 10:
        return
    found = labels.dropna().value_counts()
    values = ", ".join(f"{label!r} ({n})" for label, n in found.head(8).items()) or "none"
    raise ExpressionError(f"{labels_path}: {len(shared)} of its patients have a label among {', '.join(PAPER_SUBTYPES)} "
                          f"in {column!r} and expression in {expression_path}; the classifier needs at least 10. Its "
                          f"labels: {values}; its patients e.g. {', '.join(map(str, labels.index[:3]))}, the "
                          f"expression's e.g. {', '.join(map(str, reference.index[:3]))}.")


def _require_complete(table: pd.DataFrame, source) -> None:
    """Every PAM50 gene measured in every sample (the voting classifier cannot skip a missing one)."""
    genes = [g for g in pam50_centroids().index if g in table.columns]
    gaps = table[genes].isna().any(axis=1)
    if gaps.any():
        raise ExpressionError(f"{source}: {int(gaps.sum())} samples lack a PAM50 gene ({', '.join(map(str, table.index[gaps][:5]))}"
                              f"{', ...' if gaps.sum() > 5 else ''}); the voting classifier needs every one. Use "
                              "--method centroid (it calls each sample on the genes it has), or fill them.")


def _warn_if_scales_differ(table: pd.DataFrame, reference: pd.DataFrame, source, reference_source) -> None:
    """A warning when the two tables' PAM50 genes sit on different scales (one logged, one not)."""
    genes = shared_pam50_genes(table, reference)
    if not genes:
        return
    here, there = float(np.nanmedian(table[genes].to_numpy())), float(np.nanmedian(reference[genes].to_numpy()))
    if abs(here - there) > 3:
        log.warning("%s has a median PAM50 value of %.1f and the reference %s of %.1f: are both on the same scale "
                    "(log2(1+RSEM))? --no-log applies to --expression, --reference-no-log to the reference.", source,
                    here, reference_source, there)
