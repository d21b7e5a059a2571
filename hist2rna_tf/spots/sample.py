"""One spatial transcriptomics sample, as every reader gives it, checked once.

Units: `centres_px` are full-resolution (level-0) pixels of `image`, x then y, as AnnData's
`obsm['spatial']` holds them; `mpp` is microns per full-resolution pixel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from hist2rna_tf.errors import SpotError


@dataclass(frozen=True)
class SpotSample:
    """A sample's spots (barcodes), where they lie, what was counted there, and the H&E under them."""

    sample_id: str
    barcodes: np.ndarray  # (spots,) str
    centres_px: np.ndarray  # (spots, 2) float64: x, y in full-resolution pixels
    counts: sparse.csr_matrix  # (spots, genes) raw counts
    genes: tuple[str, ...]  # symbols, in the counts' column order
    image: Path  # the full-resolution H&E
    mpp: float  # um per full-resolution pixel
    source: str  # where it was read from, for messages: the file or folder
    spot_diameter_um: float | None = None
    patient_id: str | None = None  # HEST's metadata `patient` where it says (a spot run's folds keep a patient whole)

    @property
    def n_spots(self) -> int:
        return len(self.barcodes)

    def expression(self, genes: list[str] | None = None, normalize_total: float | None = None) -> pd.DataFrame:
        """log1p of the counts (spots x genes, indexed by barcode), of `genes` in their order (all by
        default); with `normalize_total`, each spot's counts scaled to that total first."""
        columns = list(self.genes) if genes is None else list(genes)
        missing = [g for g in columns if g not in set(self.genes)]
        if missing:
            raise SpotError(f"{self.source}: {len(missing)} gene(s) not measured in sample {self.sample_id}: "
                            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; choose genes it has.")
        index = {g: i for i, g in enumerate(self.genes)}
        values = self.counts[:, [index[g] for g in columns]].toarray().astype(np.float64)
        if normalize_total is not None:
            totals = np.asarray(self.counts.sum(axis=1), np.float64).ravel()
            values = values * (normalize_total / np.where(totals > 0, totals, 1.0))[:, None]
        return pd.DataFrame(np.log1p(values), index=pd.Index(self.barcodes, name="barcode"), columns=columns)


def checked_sample(sample: SpotSample, image_size: tuple[int, int]) -> SpotSample:
    """`sample` when it can be used: counts present and not all zero, each gene symbol once, every
    centre a number inside the image (`image_size`: width, height in full-resolution pixels), a
    positive pixel size. Otherwise one SpotError naming the sample and the fix."""
    where = f"{sample.source} (sample {sample.sample_id})"
    if sample.n_spots == 0 or len(sample.genes) == 0:
        raise SpotError(f"{where}: the count matrix is empty ({sample.n_spots} spots x {len(sample.genes)} genes); "
                        "give the sample's own counts (Space Ranger's filtered_feature_bc_matrix.h5, HEST's st/<id>.h5ad).")
    if sample.counts.nnz == 0 or not sample.counts.data.any():
        raise SpotError(f"{where}: every count is zero; the matrix is not the sample's counts (give the raw counts "
                        "Space Ranger or HEST wrote).")
    twice = sorted(g for g, n in Counter(sample.genes).items() if n > 1)
    if twice:
        raise SpotError(f"{where}: {len(twice)} gene symbol(s) name more than one column ({', '.join(twice[:8])}"
                        f"{' ...' if len(twice) > 8 else ''}); give --duplicate-genes sum to add their counts.")
    if not np.isfinite(sample.centres_px).all():
        bad = int((~np.isfinite(sample.centres_px)).any(axis=1).sum())
        raise SpotError(f"{where}: {bad} spot(s) have no position (NaN); the positions do not belong to these counts.")
    width, height = image_size
    x, y = sample.centres_px[:, 0], sample.centres_px[:, 1]
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    if outside.any():
        raise SpotError(f"{where}: {int(outside.sum())} of {sample.n_spots} spot centres lie outside the image "
                        f"{sample.image} ({width} x {height} px), e.g. {sample.barcodes[outside][0]} at "
                        f"({x[outside][0]:.0f}, {y[outside][0]:.0f}); give the full-resolution image the positions "
                        "were made on.")
    if not (np.isfinite(sample.mpp) and sample.mpp > 0):
        raise SpotError(f"{where}: pixel size {sample.mpp} um/px; give --mpp with the image's microns per pixel.")
    return sample


def matched(barcodes_counts: np.ndarray, barcodes_positions: np.ndarray, where: str, positions: str) -> np.ndarray:
    """The position row of each counted barcode; a SpotError, with how many, when a counted spot has no
    position or a position (of a spot under tissue) has no counts."""
    row = pd.Index(barcodes_positions)
    unplaced = ~pd.Index(barcodes_counts).isin(row)
    uncounted = ~row.isin(barcodes_counts)
    if unplaced.any() or uncounted.any():
        parts = [f"{int(unplaced.sum())} counted spot(s) have no position in {positions}"] if unplaced.any() else []
        parts += [f"{int(uncounted.sum())} spot(s) of {positions} have no counts"] if uncounted.any() else []
        raise SpotError(f"{where}: {' and '.join(parts)}; the counts and the positions are of different runs or "
                        "samples: give both from the same one.")
    return row.get_indexer(barcodes_counts)


def summed_duplicates(counts: sparse.csr_matrix, genes: list[str]) -> tuple[sparse.csr_matrix, tuple[str, ...]]:
    """Counts with each symbol's columns added into one (first appearance order): --duplicate-genes sum."""
    names = pd.Index(genes)
    unique = names.unique()
    merge = sparse.csr_matrix((np.ones(len(names)), (np.arange(len(names)), unique.get_indexer(names))),
                              shape=(len(names), len(unique)))
    return (counts @ merge).tocsr(), tuple(unique)
