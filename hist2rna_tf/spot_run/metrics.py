"""A spot run's held-out figures per sample, as HEST reports a sample (Pearson's r per gene across its
spots; the sample's figure the mean over genes) with the statistics of bulk runs beside: Spearman's rho,
Pearson's two-sided p and its Benjamini-Hochberg FDR over the sample's genes. One table holds every
model scored on the same spots (the trained head, HEST's ridge, the untrained head)."""

from __future__ import annotations

import numpy as np
import pandas as pd

PER_SAMPLE = "per_sample.csv"


def sample_scores(predicted: pd.DataFrame, measured: pd.DataFrame, samples: pd.Series, model: str) -> pd.DataFrame:
    """Rows of (model, sample_id, gene): n_spots, pearson, p, fdr, spearman; `samples`: spot -> sample."""
    from scipy.stats import false_discovery_control, pearsonr, spearmanr

    rows = []
    for sample, spots in samples.loc[measured.index].groupby(samples.loc[measured.index], sort=True):
        guess, truth = predicted.loc[spots.index], measured.loc[spots.index]
        block = []
        for gene in measured.columns:
            x, y = guess[gene].to_numpy(float), truth[gene].to_numpy(float)
            if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
                block.append({"gene": gene, "n_spots": len(x), "pearson": np.nan, "p": np.nan, "spearman": np.nan})
                continue
            r, p = pearsonr(x, y)
            block.append({"gene": gene, "n_spots": len(x), "pearson": r, "p": p, "spearman": spearmanr(x, y)[0]})
        frame = pd.DataFrame(block)
        tested = frame["p"].notna()
        frame["fdr"] = np.nan
        if tested.any():
            frame.loc[tested, "fdr"] = false_discovery_control(frame.loc[tested, "p"].to_numpy())
        rows.append(frame.assign(model=model, sample_id=sample))
    columns = ["model", "sample_id", "gene", "n_spots", "pearson", "p", "fdr", "spearman"]
    return pd.concat(rows, ignore_index=True)[columns]


def sample_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and sample: spots, genes, mean and median Pearson over the genes (HEST's figure: the
    mean), genes at FDR < 0.05 with r > 0."""
    def summarise(block: pd.DataFrame) -> pd.Series:
        return pd.Series({"n_spots": int(block["n_spots"].max()), "genes": len(block),
                          "mean_pearson": block["pearson"].mean(), "median_pearson": block["pearson"].median(),
                          "genes_fdr_0.05": int(((block["fdr"] < 0.05) & (block["pearson"] > 0)).sum())})

    summary = table.groupby(["model", "sample_id"], sort=False)[table.columns].apply(summarise).reset_index()
    return summary.astype({"n_spots": int, "genes": int, "genes_fdr_0.05": int})


def model_means(table: pd.DataFrame) -> dict[str, float]:
    """Each model's mean over held-out samples of their mean Pearson (HEST's split figure, averaged)."""
    summary = sample_summary(table)
    return {model: float(block["mean_pearson"].mean()) for model, block in summary.groupby("model", sort=False)}
