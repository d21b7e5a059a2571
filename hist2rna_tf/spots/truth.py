"""A map scored against measured spots: per gene, Pearson's r and Spearman's rho between what a model
predicts at each spot and what was measured there, with a null that keeps the map's spatial
autocorrelation.

The null is a spin test (Alexander-Bloch et al., NeuroImage 2018, on the cortex; here on the section's
plane): the spot layout is rotated by a random angle about its centre, reflected on every other draw,
and each spot takes the prediction of the spot nearest its new place. A smooth map stays smooth and
keeps its large patches; only where they lie against the measurement moves. A shuffle of the spots
would break the patches, and under autocorrelation it calls chance agreements significant. A spin that
leaves more than half the spots where they were (a turn of a few degrees, on a small section) is drawn
again: it is the map itself, and would put a floor under every p. p is one-sided:
the share of spins, the observed one counted among them, whose r is at least the observed r. The
Benjamini-Hochberg FDR is taken over the genes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hist2rna_tf.errors import SpotError

N_SPINS = 199
# A spin that leaves more than this share of the spots on themselves (a turn of a few degrees on a small
# section) re-places nothing: it is drawn again, or every gene's p would have a floor of such spins' share.
MAX_FIXED_SHARE = 0.5


def spin_permutations(centres_px: np.ndarray, n: int = N_SPINS, seed: int = 0) -> np.ndarray:
    """[n, spots] indices: for each spin, the spot whose prediction each spot takes."""
    from scipy.spatial import cKDTree

    centres = np.asarray(centres_px, np.float64)
    middle = centres.mean(axis=0)
    tree = cKDTree(centres)
    rng = np.random.default_rng(seed)
    spins = np.empty((n, len(centres)), np.int64)
    itself = np.arange(len(centres))
    for k in range(n):
        while True:
            angle = rng.uniform(0, 2 * np.pi)
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            if k % 2:
                rotation = rotation @ np.diag([1.0, -1.0])  # a reflection, then the turn
            moved = (centres - middle) @ rotation.T + middle
            spins[k] = tree.query(moved)[1]
            if np.mean(spins[k] == itself) <= MAX_FIXED_SHARE:
                break  # a turn small enough to leave most spots in place is the map itself: drawn again
    return spins


def map_scores(predicted: pd.DataFrame, measured: pd.DataFrame, centres_px: np.ndarray, n_spins: int = N_SPINS,
               seed: int = 0) -> pd.DataFrame:
    """Per gene shared by `predicted` and `measured` (spots x genes, the same spots in the same order, at
    `centres_px`): n_spots, pearson, spearman, p_spin (one-sided), fdr_spin; genes by pearson, highest first."""
    from scipy.stats import false_discovery_control, rankdata

    if not predicted.index.equals(measured.index):
        raise SpotError("the predicted and measured spots differ (or are in another order); match them by barcode first.")
    genes = [g for g in predicted.columns if g in set(measured.columns)]
    if not genes:
        raise SpotError("no gene is both predicted and measured; the run's genes and the sample's share none.")
    spins = spin_permutations(centres_px, n_spins, seed)
    rows = []
    for gene in genes:
        guess, truth = predicted[gene].to_numpy(float), measured[gene].to_numpy(float)
        if np.std(guess) == 0 or np.std(truth) == 0:
            rows.append({"gene": gene, "n_spots": len(truth), "pearson": np.nan, "spearman": np.nan, "p_spin": np.nan})
            continue
        r = np.corrcoef(guess, truth)[0, 1]
        null = _pearson_rows(guess[spins], truth)  # every spin's r at once
        rows.append({"gene": gene, "n_spots": len(truth), "pearson": r,
                     "spearman": np.corrcoef(rankdata(guess), rankdata(truth))[0, 1],
                     "p_spin": (1 + np.sum(null >= r)) / (len(null) + 1)})
    table = pd.DataFrame(rows).set_index("gene")
    tested = table["p_spin"].notna()
    table["fdr_spin"] = np.nan
    table.loc[tested, "fdr_spin"] = false_discovery_control(table.loc[tested, "p_spin"].to_numpy())
    return table.sort_values("pearson", ascending=False)


def _pearson_rows(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of `rows` [n, spots] with `y` [spots] (a constant row: NaN)."""
    a = rows - rows.mean(axis=1, keepdims=True)
    b = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b) / (np.sqrt((a * a).sum(axis=1)) * np.sqrt(b @ b))
