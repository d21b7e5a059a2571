"""Gene-prediction metrics (section 2.5), as pure functions on DataFrames (patients x genes, log2).

- Spearman across genes: for each gene, over the patients (Figure 3B);
- Spearman across patients: for each patient, over the genes (Figure 3A);
  each with its two-sided t-distribution p-value (t = r sqrt((n-2)/(1-r^2)), n-2 degrees of freedom,
  as scipy.stats.spearmanr) and the Benjamini-Hochberg FDR-adjusted p-value, and -log10 FDR;
- R-squared per gene (the genes with R-squared >= 0.1: Figure 5).

A constant prediction (or truth) has no rank correlation: NaN with a warning, never a crash.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger(__name__)


def _aligned(predicted: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    patients = predicted.index.intersection(truth.index)
    genes = predicted.columns.intersection(truth.columns)
    if len(patients) < 3 or len(genes) < 1:
        raise ValueError(f"need at least 3 shared patients and 1 shared gene, got {len(patients)} and {len(genes)}")
    return predicted.loc[patients, genes].astype(float), truth.loc[patients, genes].astype(float)


def spearman_table(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per column: rho, p (t-distribution), fdr (Benjamini-Hochberg over the columns), -log10 fdr, n."""
    rows = {}
    constant = []
    for column in predicted.columns:
        x, y = predicted[column].to_numpy(), truth[column].to_numpy()
        n = len(x)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            constant.append(column)
            rows[column] = (np.nan, np.nan, n)
            continue
        rho = stats.spearmanr(x, y).statistic
        t = rho * np.sqrt((n - 2) / max(1.0 - rho**2, 1e-300))
        rows[column] = (rho, 2 * stats.t.sf(abs(t), n - 2), n)
    if constant:
        log.warning("%d of %d have constant predictions or truth (e.g. %s): their correlation is NaN.",
                    len(constant), len(rows), constant[0])
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["rho", "p", "n"])
    table["fdr"] = np.nan
    finite = table["p"].notna()
    if finite.any():
        table.loc[finite, "fdr"] = stats.false_discovery_control(table.loc[finite, "p"].to_numpy(), method="bh")
    table["neg_log10_fdr"] = -np.log10(table["fdr"].clip(lower=1e-300))
    return table[["rho", "p", "fdr", "neg_log10_fdr", "n"]]


def across_genes(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per gene: Spearman over the patients (the paper's 'across genes', median 0.29)."""
    predicted, truth = _aligned(predicted, truth)
    return spearman_table(predicted, truth)


def across_patients(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: Spearman over the genes (the paper's 'across patients', median 0.82)."""
    predicted, truth = _aligned(predicted, truth)
    return spearman_table(predicted.T, truth.T)


def r_squared(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Coefficient of determination per gene (1 - SS_res / SS_tot; negative when worse than the mean)."""
    from sklearn.metrics import r2_score

    predicted, truth = _aligned(predicted, truth)
    return pd.Series(r2_score(truth, predicted, multioutput="raw_values"), index=truth.columns, name="r2")


def summary(table: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Median and IQR of rho, and how many rows are significant at FDR < alpha."""
    rho = table["rho"].dropna()
    return {"median": float(rho.median()) if len(rho) else float("nan"),
            "q25": float(rho.quantile(0.25)) if len(rho) else float("nan"),
            "q75": float(rho.quantile(0.75)) if len(rho) else float("nan"),
            "significant": int((table["fdr"] < alpha).sum()), "total": int(len(table))}


def held_out_metrics(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """{"across_genes", "across_patients": Spearman tables, "r_squared": per gene} of held-out
    predictions against the truth."""
    return {"across_genes": across_genes(predicted, truth), "across_patients": across_patients(predicted, truth),
            "r_squared": r_squared(predicted, truth)}


def metric_summaries(tables: dict) -> dict:
    """The printed figures of `held_out_metrics`' tables: median, IQR and significant counts of both
    Spearman tables; how many genes reach R2 >= 0.1."""
    return {"across_genes": summary(tables["across_genes"]), "across_patients": summary(tables["across_patients"]),
            "r2_at_least_0.1": int((tables["r_squared"] >= 0.1).sum())}


def bootstrap_median_ci(predicted: pd.DataFrame, truth: pd.DataFrame, over: str = "genes", n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap confidence interval of the median Spearman correlation, resampling patients.

    over="genes": each resample recomputes every gene's correlation over the resampled patients;
    over="patients": a patient's correlation (over the genes) does not depend on the others, so the
    per-patient values are resampled. Returns {"median", "ci_low", "ci_high", "n_boot", "level"}.
    """
    predicted, truth = _aligned(predicted, truth)
    rng = np.random.default_rng(seed)
    n = len(predicted)
    if over == "patients":
        rho = across_patients(predicted, truth)["rho"].dropna().to_numpy()
        medians = np.array([np.median(rho[rng.integers(len(rho), size=len(rho))]) for _ in range(n_boot)])
        point = float(np.median(rho))
    elif over == "genes":
        x, y = predicted.to_numpy(), truth.to_numpy()
        medians = np.empty(n_boot)
        for b in range(n_boot):
            rows = rng.integers(n, size=n)
            medians[b] = np.nanmedian(_column_spearman(x[rows], y[rows]))
        point = float(np.nanmedian(_column_spearman(x, y)))
    else:
        raise ValueError(f"over must be 'genes' or 'patients', not {over!r}")
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(medians, [tail, 100 - tail])
    return {"median": point, "ci_low": float(low), "ci_high": float(high), "n_boot": n_boot, "level": level}


def _column_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman per column (average ranks for ties, as scipy); NaN for a constant column."""
    rx, ry = stats.rankdata(x, axis=0), stats.rankdata(y, axis=0)
    rx, ry = rx - rx.mean(0), ry - ry.mean(0)
    denominator = np.sqrt((rx**2).sum(0) * (ry**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(0) / denominator, np.nan)
