"""SEQUOIA's test of a well-predicted gene (Pizurica et al., Nat Commun 2024; gevaertlab/sequoia-pub
`evaluation/evaluate_model.py` and `evaluation/CorrelationStats.py`), as pure functions on DataFrames
(samples x genes, log2), beside the paper's Spearman figures (evaluate.py), which stay as they are.

Per gene: Pearson r (and p) of the predictions with the truth, and of an untrained model's ("random":
the same head at its initialisation); Steiger's test of the two dependent correlations (one-tailed, as
theirs); RMSE of both; Benjamini-Hochberg FDR of both p-values. A gene is significant when r > 0,
Pearson p < 0.05, RMSE below the random model's, r above the random model's, Steiger p < 0.05 and its
FDR < 0.2. A constant column has r 0 and p 1, as theirs. Columns are SEQUOIA's (`pred_real_r`, ...),
so that a table here and one of theirs compare line by line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = ["pred_real_r", "random_real_r", "pearson_p", "Steiger_p", "rmse_pred", "rmse_random", "rmse_quantile_norm",
           "rmse_mean_norm", "fdr_pearson_p", "fdr_Steiger_p"]
# The figures other papers quote beside the count of significant genes.
TOP_GENES, HIGH_R = 1000, 0.4


def steiger_p(xy: float, xz: float, yz: float, n: int) -> float:
    """One-tailed p of Steiger's test that r(x, y) and r(x, z) differ, y and z correlated by `yz` (n
    samples); CorrelationStats.dependent_corr(..., twotailed=False, method='steiger')."""
    d = xy - xz
    determinant = 1 - xy * xy - xz * xz - yz * yz + 2 * xy * xz * yz
    average = (xy + xz) / 2
    cube = (1 - yz) ** 3
    # A negative radicand, or a zero denominator (the two predictions perfectly correlated: d = 0 then), gives
    # NaN, counted as p = 1 (as theirs, by fillna).
    with np.errstate(invalid="ignore", divide="ignore"):
        t = d * np.sqrt((n - 1) * (1 + yz) / (((2 * (n - 1) / (n - 3)) * determinant + average * average * cube)))
    return float(1 - stats.t.cdf(abs(t), n - 3))


def _fdr(p: pd.Series) -> np.ndarray:
    return stats.false_discovery_control(p.to_numpy(np.float64), method="bh")


def gene_table(real: pd.DataFrame, pred: pd.DataFrame, random: pd.DataFrame) -> pd.DataFrame:
    """SEQUOIA's all_genes table: one row per gene (COLUMNS), by pred_real_r, highest first. The three
    tables are aligned on their shared samples and the genes of `pred`."""
    samples = pred.index.intersection(real.index).intersection(random.index)
    if len(samples) < 4:
        raise ValueError(f"SEQUOIA's test needs at least 4 samples with real, predicted and random values; got "
                         f"{len(samples)}")
    real, pred, random = (t.loc[samples, pred.columns].astype(float) for t in (real, pred, random))
    n = len(samples)
    rows = {}
    for gene in pred.columns:
        x, y, z = real[gene].to_numpy(), pred[gene].to_numpy(), random[gene].to_numpy()
        if np.ptp(y) == 0 or np.ptp(x) == 0 or np.ptp(z) == 0:
            xy, p1, p = 0.0, 1.0, 1.0
            # Theirs leaves r(real, random) at the previous gene's here (`xy, xy, yz = 0, 0, 0`); it has a value.
            xz = stats.pearsonr(x, z)[0] if np.ptp(x) and np.ptp(z) else 0.0
        else:
            xy, p1 = stats.pearsonr(x, y)
            xz, _ = stats.pearsonr(x, z)
            yz, _ = stats.pearsonr(y, z)
            p = steiger_p(xy, xz, yz, n)
        rmse_p, rmse_r = np.sqrt(np.mean((x - y) ** 2)), np.sqrt(np.mean((x - z) ** 2))
        iqr = np.quantile(x, 0.75) - np.quantile(x, 0.25)
        rows[gene] = (xy, xz, p1, p, rmse_p, rmse_r, rmse_p / (iqr + 1e-5), rmse_p / np.mean(x))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS[:8])
    table = table.sort_values("pred_real_r", ascending=False, kind="stable")
    table[["pred_real_r", "random_real_r"]] = table[["pred_real_r", "random_real_r"]].fillna(0)
    table[["pearson_p", "Steiger_p"]] = table[["pearson_p", "Steiger_p"]].fillna(1)
    table["fdr_pearson_p"] = _fdr(table["pearson_p"])
    table["fdr_Steiger_p"] = _fdr(table["Steiger_p"])
    return table.rename_axis("gene")


def significant(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of `gene_table` SEQUOIA counts as well predicted."""
    return table[(table["pred_real_r"] > 0) & (table["pearson_p"] < 0.05) & (table["rmse_pred"] < table["rmse_random"])
                 & (table["pred_real_r"] > table["random_real_r"]) & (table["Steiger_p"] < 0.05)
                 & (table["fdr_Steiger_p"] < 0.2)]


def summary(table: pd.DataFrame) -> dict:
    """Significant genes (of all), the median r of the best TOP_GENES genes, and genes with r > HIGH_R."""
    r = table["pred_real_r"].sort_values(ascending=False)
    return {"significant": int(len(significant(table))), "total": int(len(table)),
            f"median_r_top_{TOP_GENES}": float(r.iloc[:TOP_GENES].median()) if len(r) else float("nan"),
            f"r_above_{HIGH_R}": int((r > HIGH_R).sum())}
