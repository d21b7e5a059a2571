"""Spatial maps (beyond the paper): the trained head applied to each tile's own feature vector, drawn
over the slide thumbnail, gene by gene, and each tile's PAM50 call (the paper's soft-voting
classifier, trained on the run's training patients, applied to the tile's predicted PAM50 genes).
Needs features extracted with `--save-tile-features` (the record then holds every tile's feature
and level-0 position).

The head was trained on slide MEANS of tile features, so a single tile's prediction is an
extrapolation: read the maps as where the slide-level signal comes from, not as measured expression.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import Hist2RNAError

log = logging.getLogger(__name__)


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


SUBTYPE_COLOURS = {"LumA": "#2c7bb6", "LumB": "#abd9e9", "Her2": "#fdae61", "Basal": "#d7191c", "Normal": "#999999"}


def tile_subtypes(tiles: pd.DataFrame, reference: pd.DataFrame, reference_labels: pd.Series, seed: int = 0) -> pd.DataFrame:
    """Each tile's PAM50 call and class probabilities from its predicted genes (`tile_predictions`),
    by the paper's soft-voting classifier trained on `reference` (measured log2 expression, patients x
    genes) and its `reference_labels`, e.g. the run's training patients."""
    from .subtype import voting_calls

    calls = voting_calls(tiles.drop(columns=["x", "y"]), reference, reference_labels, seed=seed)
    return pd.concat([tiles[["x", "y"]], calls], axis=1)


def _slide_axes(slide_path: str | Path, record, thumbnail_mpp: float):
    """A two-panel figure with the thumbnail in both, the thumbnail scale and one tile's size in it."""
    import matplotlib.pyplot as plt

    from . import figures  # noqa: F401  (the Agg backend and the house style)
    from .slides import find_slides, open_slide, read_thumbnail

    slide = open_slide(find_slides([slide_path])[0])
    thumb, scale = read_thumbnail(slide, record.mpp, thumbnail_mpp)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax in axes:
        ax.imshow(thumb)
        ax.set_axis_off()
    axes[0].set_title(f"{record.slide_id}", loc="left")
    return figure, axes, scale, record.tile_size_um / record.mpp / scale


def _draw_tiles(ax, tiles: pd.DataFrame, scale: float, extent: float, colours) -> None:
    from matplotlib.patches import Rectangle

    for x, y, colour in zip(tiles["x"] / scale, tiles["y"] / scale, colours):
        ax.add_patch(Rectangle((x, y), extent, extent, color=colour, alpha=0.75, lw=0))


def spatial_map(slide_path: str | Path, record, tiles: pd.DataFrame, gene: str, thumbnail_mpp: float = 8.0):
    """A figure: the slide thumbnail and, over it, each tile coloured by its predicted `gene`."""
    import matplotlib.pyplot as plt

    if gene not in tiles.columns:
        raise Hist2RNAError(f"gene {gene!r} is not among the model's genes.")
    figure, axes, scale, extent = _slide_axes(slide_path, record, thumbnail_mpp)
    values = tiles[gene].to_numpy()
    norm = plt.Normalize(np.percentile(values, 2), np.percentile(values, 98))
    cmap = plt.get_cmap("viridis")
    _draw_tiles(axes[1], tiles, scale, extent, [cmap(norm(v)) for v in values])
    axes[1].set_title(f"predicted {gene} per tile (log2)", loc="left")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], fraction=0.04, pad=0.02)
    figure.tight_layout()
    return figure


def subtype_map(slide_path: str | Path, record, calls: pd.DataFrame, thumbnail_mpp: float = 8.0):
    """A figure: the slide thumbnail and each tile coloured by its PAM50 call (`tile_subtypes`), with
    the share of tiles per subtype in the legend."""
    from matplotlib.patches import Patch

    figure, axes, scale, extent = _slide_axes(slide_path, record, thumbnail_mpp)
    _draw_tiles(axes[1], calls, scale, extent, [SUBTYPE_COLOURS.get(c, "#000000") for c in calls["call"]])
    shares = calls["call"].value_counts(normalize=True)
    axes[1].legend(handles=[Patch(color=SUBTYPE_COLOURS.get(c, "#000000"), label=f"{c} {shares[c]:.0%}")
                            for c in shares.index], loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                   fontsize=8)
    axes[1].set_title("PAM50 call per tile (soft voting on predicted genes)", loc="left")
    figure.tight_layout()
    return figure


def write_spatial_maps(run_dir: str | Path, features: str | Path, slides: list[str | Path], out_dir: str | Path,
                       genes: list[str], subtypes: bool = True, thumbnail_mpp: float = 8.0) -> list[Path]:
    """For every slide of `slides` whose record under `features` has tile features: `<slide>_tiles.csv`
    (tiles x genes, with the PAM50 call and probabilities when `subtypes`), one PNG per gene and one
    PAM50 map. The classifier learns from the run's training patients' measured expression and labels.
    Returns the files written."""
    from .figures import save
    from .predict import Predictor, write_table
    from .records import read_record, record_files
    from .slides import find_slides
    from .train import training_reference

    predictor = Predictor(run_dir)
    unknown = [g for g in genes if g not in predictor.genes]
    if unknown:
        raise Hist2RNAError(f"genes {unknown} are not among the model's genes (e.g. {predictor.genes[:3]}).")
    records = {Path(f).stem: f for f in record_files(features)}
    refs = [r for r in find_slides(slides) if r.slide_id in records]
    if not refs:
        raise Hist2RNAError(f"none of the slides given has a feature record under {features}; extract them first "
                            "(with --save-tile-features).")
    for ref in refs:  # every slide checked before anything is written
        predictor.check_features(read_record(records[ref.slide_id]).settings, records[ref.slide_id])
    reference = training_reference(run_dir)  # the classifier's training data; the genes' measured range
    if subtypes:
        from .subtype import PAPER_SUBTYPES

        labelled = int(reference[1].isin(PAPER_SUBTYPES).sum())
        if labelled < 10:
            raise Hist2RNAError(f"{run_dir}: {labelled} of its training patients have a PAM50 label (LumA, LumB, Basal, "
                                "Her2) and measured expression; the tile PAM50 map needs at least 10 to train its "
                                "classifier on. Run with --no-subtypes for the gene maps alone.")
    out_dir = Path(out_dir)
    written = []
    for ref in refs:
        record = read_record(records[ref.slide_id])
        tiles = tile_predictions(predictor, record)
        table = tiles
        if subtypes:
            calls = tile_subtypes(tiles, *reference)
            table = pd.concat([tiles, calls.drop(columns=["x", "y"])], axis=1)
            written.append(save(subtype_map(ref.path, record, calls, thumbnail_mpp),
                                out_dir / f"{ref.slide_id}_PAM50.png"))
        written.append(write_table(table, out_dir / f"{ref.slide_id}_tiles.csv", index=False))
        for gene in genes:
            _warn_outside_training(ref.slide_id, gene, tiles[gene], reference)
            written.append(save(spatial_map(ref.path, record, tiles, gene, thumbnail_mpp),
                                out_dir / f"{ref.slide_id}_{gene}.png"))
    return written


def _warn_outside_training(slide_id: str, gene: str, values: pd.Series, reference) -> None:
    """Say when tiles predict a gene well outside what the training patients measured (by more than
    the training range's own width beyond either end): the head learnt from slide means, and single
    tiles can take it far from them."""
    if reference is None or gene not in reference[0]:
        return
    measured = reference[0][gene].dropna()
    low, high = float(measured.min()), float(measured.max())
    margin = high - low
    outside = (values < low - margin) | (values > high + margin)
    if outside.any():
        log.warning("%s: %d of %d tiles predict %s outside the training patients' range %.1f-%.1f log2 by more than "
                    "its width (from %.1f to %.1f): tile values extrapolate from a head trained on slide means; read "
                    "the map's colours with care.", slide_id, int(outside.sum()), len(values), gene, low, high,
                    float(values.min()), float(values.max()))
