"""Spatial maps (beyond the paper): the trained head applied to each tile's own feature vector, drawn
over the slide thumbnail (a pre-tiled folder: a mosaic of its own tiles), gene by gene, and each
tile's PAM50 call (the paper's soft-voting classifier, trained on the run's training patients,
applied to the tile's predicted PAM50 genes); and the same tiles as QuPath objects (qupath.py).
Needs features extracted with `--save-tile-features` (the record then holds every tile's feature and
level-0 position). TensorFlow, the head and the classifier are made once per call (`SpatialMapper`),
then each slide costs its own work: one batch through the head, its thumbnail, its figures.

The head was trained on slide MEANS of tile features, so a single tile's prediction is an
extrapolation: read the maps as where the slide-level signal comes from, not as measured expression.
A head that reads every tile (`--head abmil`) also gives each tile's attention in its slide's bag: an
`attention` column, map (`<slide>_attention.png`) and QuPath measurement; its tile values are the
head on a bag of that one tile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hist2rna_tf.analysis.subtype import Voting, calls_of, fitted_voting
from hist2rna_tf.atomic import write_table
from hist2rna_tf.config import PAPER_SUBTYPES, SPATIAL_GENES, THUMBNAIL_MPP, TileConfig
from hist2rna_tf.errors import Hist2RNAError, SpatialError
from hist2rna_tf.extract.plan import plan_tiles
from hist2rna_tf.extract.records import read_record, record_files
from hist2rna_tf.extract.slides import SlideRef, find_slides, open_slide, read_thumbnail
from hist2rna_tf.model.predict import ATTENTION_COLUMN, Predictor, tile_predictions
from hist2rna_tf.model.runs import training_reference
from hist2rna_tf.outputs import refuse_foreign_files, refuse_overlap
from hist2rna_tf.progress import bar
from hist2rna_tf.report.figures import save, tile_call_map, tile_value_map
from hist2rna_tf.report.qupath import write_tile_objects
from hist2rna_tf.report.spatial_folder import SpatialFolder

log = logging.getLogger(__name__)


MOSAIC_TILE_PX = 32  # the least width of a tile in a pre-tiled folder's mosaic (picture pixels)


@dataclass
class Picture:
    """What a slide's maps are drawn over: an RGB picture, its scale (level-0 pixels per picture pixel),
    one tile's width on it (picture pixels) and where each tile lies (level-0 x, y of its top-left)."""

    image: np.ndarray
    scale: float
    extent: float
    positions: np.ndarray  # int [n_tiles, 2]

    def placed(self, tiles: pd.DataFrame) -> pd.DataFrame:
        """`tiles` (indexed by their row in the slide's record) with x, y where the picture shows them."""
        rows = tiles.index.to_numpy()
        return tiles.assign(x=self.positions[rows, 0], y=self.positions[rows, 1])


def slide_picture(ref: SlideRef, record, thumbnail_mpp: float = THUMBNAIL_MPP) -> Picture:
    """A slide's thumbnail at `thumbnail_mpp`; for a pre-tiled folder, a mosaic of its tiles (see
    `tile_mosaic`)."""
    if ref.kind == "tiles":
        return tile_mosaic(ref, record, thumbnail_mpp)
    slide = open_slide(ref)
    try:
        thumb, scale = read_thumbnail(slide, record.mpp, thumbnail_mpp)
    finally:
        slide.close()
    return Picture(thumb, scale, record.tile_size_um / record.mpp / scale, record.tile_xy_px)


def tile_mosaic(ref: SlideRef, record, thumbnail_mpp: float = THUMBNAIL_MPP) -> Picture:
    """A pre-tiled folder has no slide to show: its tiles, downsampled to `thumbnail_mpp` (or to
    MOSAIC_TILE_PX a tile, when that is finer), where their names place them (level-0 coordinates,
    shifted to start at 0), or in a square grid when their names carry none. The tiles are the
    record's, in its order (its plan made again)."""
    plan = plan_tiles(ref, TileConfig(tile_size_px=record.tile_size_px, target_mpp=record.mpp,
                                      max_tiles=record.n_tiles), None)
    if not np.array_equal(plan.coords_px, record.tile_xy_px):
        raise Hist2RNAError(f"{ref.path}: its tiles are no longer the {record.n_tiles} its record was extracted from "
                            "(the folder changed since?); extract it again to map it.")
    footprint = record.tile_size_um / record.mpp  # level-0 pixels a tile covers
    positions = np.asarray(record.tile_xy_px, np.int64)
    if (positions < 0).any():
        columns = int(np.ceil(np.sqrt(len(positions))))
        index = np.arange(len(positions))
        positions = np.stack([index % columns, index // columns], axis=1) * int(round(footprint))
    positions = positions - positions.min(axis=0)
    scale = min(thumbnail_mpp / record.mpp, footprint / MOSAIC_TILE_PX)  # a tile at least this wide: visible
    size = max(1, int(round(footprint / scale)))
    width, height = (positions.max(axis=0) / scale).astype(int) + size
    image = np.full((height, width, 3), 255, np.uint8)
    for i, (x, y) in enumerate((positions / scale).astype(int)):
        image[y:y + size, x:x + size] = np.asarray(Image.fromarray(plan.read(i)).resize((size, size), Image.BILINEAR))
    return Picture(image, scale, footprint / scale, positions)


def spatial_map(picture: Picture, record, tiles: pd.DataFrame, gene: str, units: str = "log2"):
    """A figure: the slide's picture and, over it, each tile coloured by its predicted `gene` (`units`)."""
    if gene not in tiles.columns:
        raise Hist2RNAError(f"gene {gene!r} is not among the model's genes.")
    return tile_value_map(picture.image, picture.scale, picture.extent, picture.placed(tiles), gene, record.slide_id,
                          units)


def subtype_map(picture: Picture, record, calls: pd.DataFrame):
    """A figure: the slide's picture and each tile coloured by its PAM50 call (`calls_of`)."""
    return tile_call_map(picture.image, picture.scale, picture.extent, picture.placed(calls), record.slide_id)


@dataclass
class SpatialMapper:
    """What every slide's maps need, made once: the run's head (TensorFlow loaded once), its training
    patients' measured expression and labels, and the PAM50 classifier fitted on them."""

    predictor: Predictor
    genes: list[str]
    reference: tuple[pd.DataFrame, pd.Series] | None
    voting: Voting | None
    thumbnail_mpp: float = THUMBNAIL_MPP
    gene_maps: bool = True  # a PNG a gene (else the genes are in the CSV and the QuPath objects only)

    @classmethod
    def for_run(cls, run_dir: str | Path, genes: list[str] | None, subtypes: bool = True,
                thumbnail_mpp: float = THUMBNAIL_MPP, gene_maps: bool = True) -> SpatialMapper:
        """`genes`: those to map (None: every gene of the run)."""
        predictor = Predictor(run_dir)
        genes = list(predictor.genes) if genes is None else genes
        if tuple(genes) == SPATIAL_GENES and not set(genes) <= set(predictor.genes):  # the default, on a run without
            genes = [g for g in genes if g in predictor.genes] or list(predictor.genes[:len(SPATIAL_GENES)])  # them all
            log.info("%s predicts not all of %s: mapping %s.", run_dir, ", ".join(SPATIAL_GENES), ", ".join(genes))
        unknown = [g for g in genes if g not in predictor.genes]
        if unknown:
            import difflib

            close = {g: difflib.get_close_matches(g, list(predictor.genes), n=1) for g in unknown}
            hints = [f"{g} (did you mean {c[0]}?)" if c else g for g, c in close.items()]
            raise Hist2RNAError(f"--genes: {', '.join(hints)} not among the run's {len(predictor.genes)} genes "
                                f"(its genes.txt lists them).")
        reference = training_reference(run_dir)  # the classifier's training data; the genes' measured range
        if predictor.spot_run and subtypes:
            log.info("%s was trained on spots (no PAM50 labels): its maps are the genes' alone.", run_dir)
            subtypes = False
        voting = None
        if subtypes:
            labelled = int(reference[1].isin(PAPER_SUBTYPES).sum())
            if labelled < 10:
                raise Hist2RNAError(f"{run_dir}: {labelled} of its training patients have a PAM50 label (LumA, LumB, "
                                    "Basal, Her2) and measured expression; the tile PAM50 map needs at least 10 to train "
                                    "its classifier on. Run with --no-subtypes for the gene maps alone.")
            voting = fitted_voting(*reference, predictor.genes)
        return cls(predictor, list(genes), reference, voting, thumbnail_mpp, gene_maps)

    def map_slide(self, ref: SlideRef, record_file: Path, out_dir: Path) -> list[Path]:
        """One slide's files: `<slide>_tiles.csv`, `<slide>_tiles.geojson` (QuPath objects; for slides and
        pre-tiled folders whose tiles' names give their level-0 place), `<slide>_PAM50.png` and one
        `<slide>_<gene>.png` a gene."""
        record = read_record(record_file)
        self.predictor.check_features(record.settings, record_file)
        tiles = tile_predictions(self.predictor, record)
        picture = slide_picture(ref, record, self.thumbnail_mpp)  # read once, drawn under every map of the slide
        table, written, folder = tiles, [], SpatialFolder(out_dir)
        measured = list(self.predictor.genes)
        if ATTENTION_COLUMN in tiles.columns:
            measured.append(ATTENTION_COLUMN)
            written.append(save(tile_value_map(picture.image, picture.scale, picture.extent, picture.placed(tiles),
                                               ATTENTION_COLUMN, record.slide_id),
                                folder.map(ref.slide_id, ATTENTION_COLUMN)))
        if self.voting is not None:
            calls = pd.concat([tiles[["x", "y"]], calls_of(self.voting, tiles[self.predictor.genes])], axis=1)
            table = pd.concat([tiles, calls.drop(columns=["x", "y"])], axis=1)
            written.append(save(subtype_map(picture, record, calls), folder.map(ref.slide_id)))
        written.append(write_table(table, folder.tiles(ref.slide_id), index=False))
        if (np.asarray(record.tile_xy_px) >= 0).all():  # level-0 places (not a pre-tiled folder's grid)
            footprint = record.tile_size_um / record.mpp
            written.append(write_tile_objects(folder.objects(ref.slide_id), table, footprint,
                                              measured))  # every gene (and attention) a measurement: QuPath maps any
        for gene in self.genes:
            _warn_outside_training(ref.slide_id, gene, tiles[gene], self.reference)
            if self.gene_maps:
                units = self.predictor.units if self.predictor.spot_run else "log2"
                written.append(save(spatial_map(picture, record, tiles, gene, units), folder.map(ref.slide_id, gene)))
        return written


def write_spatial_maps(run_dir: str | Path, features: str | Path, slides: list[str | Path], out_dir: str | Path,
                       genes: list[str] | None, subtypes: bool = True, thumbnail_mpp: float = THUMBNAIL_MPP,
                       progress: bool = False, gene_maps: bool = True) -> list[Path]:
    """For every slide of `slides` whose record under `features` has tile features: `<slide>_tiles.csv`
    (tiles x genes, with the PAM50 call and probabilities when `subtypes`), `<slide>_tiles.geojson`
    (QuPath tile objects, every gene of the run a measurement), one PNG per gene of `genes` (None: all the run's; unless
    not `gene_maps`) and one PAM50 map. The classifier learns from the run's
    training patients' measured expression and labels. Returns the files written; a SpatialError
    naming each slide that could not be mapped (not a slide, not in `features`, no tile features,
    other settings) after the others are written."""
    refuse_overlap(out_dir, {"RUN": run_dir, "--features": features, "--slides": slides}, may_hold=("RUN",))
    mapped_before = SpatialFolder(Path(out_dir)).slides() if Path(out_dir).is_dir() else []
    refuse_foreign_files(out_dir, lambda p: any(p.name.startswith(f"{s}_") for s in mapped_before),
                         "`hist2rna spatial`")
    mapper = SpatialMapper.for_run(run_dir, genes, subtypes, thumbnail_mpp, gene_maps)
    records = {Path(f).stem: Path(f) for f in record_files(features)}
    given = find_slides(slides)
    if not given:
        raise Hist2RNAError(f"no slides under {', '.join(map(str, slides))}.")
    failed = {r.path: _why_no_record(r, features) for r in given if r.slide_id not in records}
    out_dir = Path(out_dir)
    written = []
    for ref in bar([r for r in given if r.slide_id in records], desc="spatial maps", unit="slide", enabled=progress):
        try:
            written += mapper.map_slide(ref, records[ref.slide_id], out_dir)
        except Hist2RNAError as exc:
            failed[ref.path] = str(exc)
    if failed:
        mapped = len(given) - len(failed)
        raise SpatialError(f"{len(failed)} of {len(given)} slides not mapped: " + "; ".join(failed.values()) +
                           (f" (the other {mapped} are in {out_dir})" if mapped else ""), written)
    return written


def _why_no_record(ref, features) -> str:
    """Why a slide given has no map: it is not a slide, or it was not extracted into `features`."""
    try:
        open_slide(ref).close()
    except Hist2RNAError as exc:
        return str(exc)
    return (f"{ref.path}: no feature record {ref.slide_id}.tfrecord under {features}; extract it there first (with "
            "--save-tile-features).")


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
                    "its width (the tiles predict %.1f to %.1f): tile values extrapolate from a head trained on whole slides; read "
                    "the map's colours with care.", slide_id, int(outside.sum()), len(values), gene, low, high,
                    float(values.min()), float(values.max()))

