"""Spatial maps (beyond the paper): the trained head applied to each tile's own feature vector, drawn
over the slide thumbnail. Needs features extracted with `--save-tile-features` (the record then holds
every tile's feature and level-0 position).

The head was trained on slide MEANS of tile features, so a single tile's prediction is an
extrapolation: read the maps as where the slide-level signal comes from, not as measured expression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import Hist2RNAError


def tile_predictions(predictor, record) -> pd.DataFrame:
    """Tiles x genes of predicted log2 expression, with the tiles' level-0 x, y (top-left, pixels)."""
    if record.tile_features is None:
        raise Hist2RNAError(f"slide {record.slide_id}: its record has no per-tile features; extract with "
                            "--save-tile-features to draw spatial maps.")
    values = predictor(np.asarray(record.tile_features, np.float32))
    table = pd.DataFrame(values, columns=predictor.genes)
    table.insert(0, "y", record.tile_xy_px[:, 1])
    table.insert(0, "x", record.tile_xy_px[:, 0])
    return table


def spatial_map(slide_path: str | Path, record, tiles: pd.DataFrame, gene: str, thumbnail_mpp: float = 8.0):
    """A figure: the slide thumbnail and, over it, each tile coloured by its predicted `gene`."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from . import figures  # noqa: F401  (the Agg backend and the house style)
    from .slides import find_slides, open_slide, read_thumbnail

    if gene not in tiles.columns:
        raise Hist2RNAError(f"gene {gene!r} is not among the model's genes.")
    slide = open_slide(find_slides([slide_path])[0])
    thumb, scale = read_thumbnail(slide, record.mpp, thumbnail_mpp)
    extent = record.tile_size_um / record.mpp / scale  # one tile, in thumbnail pixels
    values = tiles[gene].to_numpy()
    norm = plt.Normalize(np.percentile(values, 2), np.percentile(values, 98))
    cmap = plt.get_cmap("viridis")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax in axes:
        ax.imshow(thumb)
        ax.set_axis_off()
    axes[0].set_title(f"{record.slide_id}", loc="left")
    for x, y, v in zip(tiles["x"] / scale, tiles["y"] / scale, values):
        axes[1].add_patch(Rectangle((x, y), extent, extent, color=cmap(norm(v)), alpha=0.75, lw=0))
    axes[1].set_title(f"predicted {gene} per tile (log2)", loc="left")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], fraction=0.04, pad=0.02)
    figure.tight_layout()
    return figure
