"""PAM50 subtypes from (predicted or measured) expression.

`centroid_calls`: the standard nearest-centroid call (Parker et al. 2009, centroids shipped in
data/pam50): log-scale data, each gene median-centred over the cohort, Spearman correlation of each
sample with each subtype centroid; the highest wins. Median-centring makes a call relative to the
cohort it is made in: a cohort that is mostly one subtype shifts the others' calls.
"""

from __future__ import annotations

import logging
from importlib import resources

import pandas as pd
from scipy import stats

from .expression import ExpressionError, alias_map

log = logging.getLogger(__name__)

CENTROID_NAMES = {"basal": "Basal", "her2": "Her2", "luminal_a": "LumA", "luminal_b": "LumB", "normal": "Normal"}


def pam50_centroids() -> pd.DataFrame:
    """genes x subtypes (Basal, Her2, LumA, LumB, Normal), current gene symbols."""
    with resources.files("hist2rna_tf").joinpath("data", "pam50", "pam50_centroids.tsv").open() as handle:
        table = pd.read_csv(handle, sep="\t", index_col=0)
    return table.rename(index=alias_map(), columns=CENTROID_NAMES)


def centroid_calls(log_expression: pd.DataFrame, min_genes: int = 40) -> pd.DataFrame:
    """Per sample: `call` (the best-correlated subtype) and the Spearman correlation with each centroid.

    `log_expression`: samples x genes on a log scale (log2(1+RSEM), or microarray log ratios).
    """
    centroids = pam50_centroids()
    genes = [g for g in centroids.index if g in log_expression.columns]
    if len(genes) < min_genes:
        missing = sorted(set(centroids.index) - set(genes))
        raise ExpressionError(f"only {len(genes)} of the 50 PAM50 genes are in the table (missing: "
                              f"{', '.join(missing)}); at least {min_genes} are needed.")
    data = log_expression[genes].astype(float)
    centred = data - data.median(axis=0)
    ranks_x = centred.rank(axis=1).to_numpy()
    correlations = {}
    for subtype in centroids.columns:
        reference = stats.rankdata(centroids.loc[genes, subtype].to_numpy())
        correlations[subtype] = [stats.pearsonr(row, reference).statistic for row in ranks_x]
    table = pd.DataFrame(correlations, index=log_expression.index)
    table.insert(0, "call", table.idxmax(axis=1))
    return table
