"""A slide's tile plan: which tiles it gives (tissue x annotation, the grid, the cap) and a
thread-safe reader of tile `i`, its slide kept open until the plan is closed. Pre-tiled folders (the
authors' layout) are planned as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hist2rna_tf.config import TileConfig
from hist2rna_tf.errors import SlideError
from hist2rna_tf.extract.regions import select_tiles, spread_sample
from hist2rna_tf.extract.slides import (SlideRef, TileReader, open_slide, patient_id, read_tile_file, slide_mpp,
                                        tile_file_xy, tile_folder_files)

log = logging.getLogger(__name__)

# A slide scanned more than this many times coarser than the target is refused (20x scans, ~0.5 um/px
# for 0.25 um/px tiles, are upsampled 2x with a warning).
MAX_UPSAMPLING = 4.0


@dataclass
class TilePlan:
    """The tiles chosen for one slide and a thread-safe way to read tile `i` as uint8 RGB."""

    coords_px: np.ndarray  # int64 [N, 2], level-0 top-left
    mpp: float
    read: Callable[[int], np.ndarray]  # tile index -> uint8 [T, T, 3]
    candidate_tiles: int
    close: Callable[[], None] = lambda: None  # releases the slide once its tiles are read


def plan_tiles(ref: SlideRef, tiles: TileConfig, annotation_path: Path | None) -> TilePlan:
    """Select a slide's tiles (tissue x annotation, grid, cap) and build its reader (which keeps
    the slide open until the plan's `close()`)."""
    if ref.kind == "tiles":
        return _plan_tile_folder(ref, tiles)
    slide = open_slide(ref)
    try:
        mpp = slide_mpp(slide, ref, tiles.mpp_override)
        if mpp > tiles.target_mpp * MAX_UPSAMPLING:
            raise SlideError(f"{ref.path}: {mpp:.3g} um/px, more than {MAX_UPSAMPLING:g}x coarser than the "
                             f"{tiles.target_mpp:g} um/px tiles: its tiles would be blurred up from a few pixels. If the "
                             "resolution read is wrong, give the right one with --mpp; otherwise it is not a "
                             "scan at a usable magnification.")
        if mpp > tiles.target_mpp * 1.05:
            log.warning("%s: scanned at %.3f um/px, coarser than the target %.3f um/px; tiles are upsampled.",
                        ref.path, mpp, tiles.target_mpp)
        coords, summary = select_tiles(slide, mpp, tiles, annotation_path, ref.path)
        reader = TileReader(ref, mpp, tiles.target_mpp, tiles.tile_size_px, slide=slide)
    except BaseException:
        slide.close()
        raise
    return TilePlan(coords, mpp, lambda i: reader.read(*coords[i]), summary["candidate_tiles"], reader.close)


def _plan_tile_folder(ref: SlideRef, tiles: TileConfig) -> TilePlan:
    """Ready-made tiles (the authors' layout: one folder per patient), taken as they are: at the
    target resolution (an image file carries none), `--tile-px` square, of one patient."""
    files = tile_folder_files(ref.path)
    if not files:
        raise SlideError(f"{ref.path}: no readable tile image in this pre-tiled folder; replace its tiles.")
    if tiles.mpp_override and abs(tiles.mpp_override / tiles.target_mpp - 1) > 0.05:
        log.warning("%s: --mpp %g applies to slide and image files; this pre-tiled folder is used as it is, its "
                    "tiles taken at the target %g um/px (re-tile the slide if they are not).", ref.path,
                    tiles.mpp_override, tiles.target_mpp)
    barcodes = sorted({patient_id(f.name) for f in files} - {f.name for f in files})
    if len(barcodes) > 1:
        raise SlideError(f"{ref.path}: tiles of {len(barcodes)} TCGA patients ({', '.join(barcodes[:4])}"
                         f"{', ...' if len(barcodes) > 4 else ''}) in one folder would be averaged into one slide; "
                         "put each slide's (or patient's) tiles in a folder of its own.")
    coords = np.array([tile_file_xy(f) for f in files], dtype=np.int64).reshape(-1, 2)
    if len(files) > tiles.max_tiles:
        if (coords >= 0).all():
            keep = spread_sample(coords, tiles.max_tiles)
            index = {tuple(c): i for i, c in enumerate(coords)}
            picks = [index[tuple(c)] for c in keep]
        else:
            picks = np.unique(np.round(np.linspace(0, len(files) - 1, tiles.max_tiles)).astype(int)).tolist()
        files, coords = [files[i] for i in picks], coords[picks]
    mpp = tiles.target_mpp
    return TilePlan(coords, mpp, lambda i: read_tile_file(files[i], tiles.tile_size_px), len(files))


def annotation_for(ref: SlideRef, annotations_dir: Path | None) -> Path | None:
    """`<dir>/<slide_id>.geojson` (or .json); a SlideError when the folder lacks it."""
    if annotations_dir is None:
        return None
    for suffix in (".geojson", ".json"):
        candidate = annotations_dir / f"{ref.slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise SlideError(f"{ref.path}: no annotation {annotations_dir / (ref.slide_id + '.geojson')}. Export it "
                     "from QuPath under that name, or run without --annotations to use the whole tissue.")
