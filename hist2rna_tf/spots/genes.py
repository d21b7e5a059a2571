"""Which genes a spot run learns: a file of symbols, every gene all its samples measured, or the N most
variable genes (`hvg:N`) chosen as HEST chose each task's `var_50genes.json` (hest.utils.get_k_genes,
criteria 'var'), on the samples given (a spot run gives its training samples only: genes chosen on every
sample would let the held-out ones pick them, HEST issue 89).

HEST's choice: the genes every sample expresses (a count above 0) in at least 10% of its spots, less
those named BLANK or Control (Xenium's probes), in sorted order; their counts stacked over the samples'
spots, log1p, then scanpy's `highly_variable_genes(n_top_genes=N)` (flavour 'seurat': per gene the mean
and the log of the dispersion (variance / mean) of the counts; the dispersion z-scored within 20 equal
bins of log1p(mean); the N highest). Here the stack is never held: each sample adds its sums and sums
of squares (float64 of the float32 counts HEST's AnnData holds), and the test compares with scanpy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.sample import SpotSample

MIN_SPOTS_SHARE = 0.10  # get_k_genes' min_cells_pct
N_BINS = 20  # scanpy's n_bins
HVG = re.compile(r"^hvg:(\d+)$")


def expressed_genes(sample: SpotSample, min_share: float = MIN_SPOTS_SHARE) -> set[str]:
    """The genes counted (above 0) in at least ceil(min_share x spots) of the sample's spots
    (scanpy's filter_genes(min_cells=...), as get_k_genes calls it)."""
    min_spots = np.ceil(min_share * sample.n_spots)
    spots_with = np.asarray((sample.counts > 0).sum(axis=0)).ravel()
    return {g for g, n in zip(sample.genes, spots_with) if n >= min_spots}


def common_genes(samples: list[SpotSample], min_share: float = MIN_SPOTS_SHARE) -> list[str]:
    """The genes every sample expresses in at least `min_share` of its spots, sorted, less BLANK and Control."""
    shared = set.intersection(*(expressed_genes(s, min_share) for s in samples))
    return [g for g in sorted(shared) if "BLANK" not in g and "Control" not in g]


def dispersion_table(samples: Iterable[SpotSample], genes: list[str]) -> pd.DataFrame:
    """Per gene (rows, in `genes` order): means (log1p of the counts' mean), dispersions (log of the
    counts' variance over their mean, NaN where 0) and dispersions_norm (z-scored within N_BINS bins of
    the means), over every spot of `samples` (scanpy's seurat flavour)."""
    total, squares, n = np.zeros(len(genes)), np.zeros(len(genes)), 0
    for sample in samples:
        column = {g: i for i, g in enumerate(sample.genes)}
        counts = sample.counts[:, [column[g] for g in genes]].toarray().astype(np.float32)
        counts = np.expm1(np.log1p(counts))  # what HEST's log1p AnnData gives scanpy back (float32)
        total += counts.sum(axis=0, dtype=np.float64)
        squares += (counts * counts).sum(axis=0, dtype=np.float64)
        n += len(counts)
    mean = total / n
    var = (squares / n - mean ** 2) * n / (n - 1)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    table = pd.DataFrame({"means": np.log1p(mean), "dispersions": np.log(dispersion)}, index=pd.Index(genes, name="gene"))
    bins = pd.cut(table["means"], bins=N_BINS)
    stats = table.groupby(bins, observed=True)["dispersions"].agg(avg="mean", dev="std")
    alone = stats["dev"].isnull()  # one gene in its bin: its normalised dispersion set to 1, as scanpy does
    stats.loc[alone, "dev"] = stats.loc[alone, "avg"]
    stats.loc[alone, "avg"] = 0
    stats = stats.loc[bins].set_index(table.index)
    table["dispersions_norm"] = (table["dispersions"] - stats["avg"]) / stats["dev"]
    return table


def highly_variable_genes(samples: list[SpotSample], n: int) -> list[str]:
    """HEST's N most variable genes of `samples` (see the module), in their sorted order as HEST lists them."""
    genes = common_genes(samples)
    if not genes:
        raise SpotError(f"no gene is expressed in {MIN_SPOTS_SHARE:.0%} of the spots of every one of the "
                        f"{len(samples)} samples ({', '.join(s.sample_id for s in samples[:5])}); give --genes FILE or "
                        "all.")
    norm = dispersion_table(samples, genes)["dispersions_norm"].to_numpy()
    n = min(n, len(genes))
    ranked = np.sort(norm[~np.isnan(norm)])[::-1]
    cut = ranked[n - 1] if len(ranked) >= n else -np.inf
    chosen = np.nan_to_num(norm, nan=-np.inf) >= cut
    return [g for g, keep in zip(genes, chosen) if keep][:n]


def measured_by_all(samples: list[SpotSample]) -> list[str]:
    """The genes every sample measured, in the first sample's order."""
    shared = set.intersection(*(set(s.genes) for s in samples))
    return [g for g in samples[0].genes if g in shared]


def spot_genes(rule: str, samples: list[SpotSample]) -> list[str]:
    """The genes of `rule` ('all', 'hvg:N' or a file of symbols, one a line) that every one of `samples`
    measured; a SpotError naming what is missing, and where."""
    if rule == "all":
        genes = measured_by_all(samples)
    elif match := HVG.match(rule):
        if int(match.group(1)) < 1:
            raise SpotError(f"--genes {rule}: give at least one gene (hvg:50, as HEST's tasks).")
        return highly_variable_genes(samples, int(match.group(1)))
    else:
        path = Path(rule)
        if not path.is_file():
            raise SpotError(f"--genes {rule}: no such file; give all, hvg:N (e.g. hvg:50) or a file of gene symbols "
                            "(one a line).")
        genes = list(dict.fromkeys(path.read_text().split()))
        for sample in samples:
            missing = [g for g in genes if g not in set(sample.genes)]
            if missing:
                raise SpotError(f"--genes {rule}: {len(missing)} of its {len(genes)} genes not measured in sample "
                                f"{sample.sample_id} ({sample.source}): {', '.join(missing[:8])}; drop them from the "
                                "file, or leave that sample out.")
    if not genes:
        raise SpotError(f"--genes {rule}: no gene measured by every sample; the samples share no symbol.")
    return genes
