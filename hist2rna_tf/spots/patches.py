"""The patch HEST cuts at each spot (hest.HESTData.dump_patches with hestcore's WSIPatcher, read as a
reference): `size_px` px at `target_mpp` um/px centred on the spot, from the full-resolution image.

Exactly as theirs: the patch spans `size_px * target_mpp / mpp` full-resolution pixels (float); its
top-left is `centre - span // 2`, truncated to whole pixels; a spot whose patch starts right of or below
the image is left out (one that merely overhangs is kept); the span is rounded to whole pixels and read
from OpenSlide's best level for the downsample, its alpha dropped (outside the scan reads black), and
resized to `size_px` by OpenCV's bilinear resize. The slide path (extract/) composites on white and
shrinks by area averaging instead: docs/spatial.md says what that changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# HEST-Benchmark's patches: 224 px at 0.5 um/px (HEST's dump_patches defaults).
HEST_PATCH_PX, HEST_PATCH_MPP = 224, 0.5


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of a sample's spots lie: `kept` (a mask over the spots), each kept spot's
    top-left in full-resolution pixels, and how a patch is read (level, size there)."""

    kept: np.ndarray  # (spots,) bool
    top_left_px: np.ndarray  # (kept spots, 2) int64
    span_px: int  # full-resolution pixels a patch spans (rounded)
    level: int
    read_px: int  # pixels read at `level`
    size_px: int


def patch_grid(centres_px: np.ndarray, mpp: float, image_size: tuple[int, int], level_downsamples,
               best_level: int, size_px: int = HEST_PATCH_PX, target_mpp: float = HEST_PATCH_MPP) -> PatchGrid:
    """The patches HEST cuts for spots at `centres_px` on an image of `image_size` (width, height) and
    `mpp`; `best_level`: OpenSlide's get_best_level_for_downsample(target_mpp / mpp)."""
    span = size_px * (target_mpp / mpp)
    top_left = np.asarray(centres_px, np.float64) - span // 2
    width, height = image_size
    kept = ((0 <= top_left[:, 0] + span) & (top_left[:, 0] < width)
            & (0 <= top_left[:, 1] + span) & (top_left[:, 1] < height))
    span_px = round(size_px * (target_mpp / mpp))
    read_px = round(span_px / level_downsamples[best_level])
    return PatchGrid(kept, top_left[kept].astype(int), span_px, best_level, read_px, size_px)


def read_patches(slide, grid: PatchGrid, batch: int = 64) -> Iterator[np.ndarray]:
    """uint8 [n, size, size, 3] batches of the grid's patches, in its order, read from `slide` (an
    OpenSlide handle), one batch in memory at a time."""
    import cv2

    for start in range(0, len(grid.top_left_px), batch):
        patches = []
        for x, y in grid.top_left_px[start:start + batch]:
            region = np.asarray(slide.read_region((int(x), int(y)), grid.level, (grid.read_px, grid.read_px))
                                .convert("RGB"))
            patches.append(cv2.resize(region, (grid.size_px, grid.size_px))[:, :, :3])
        yield np.stack(patches)


def slide_grid(slide, centres_px: np.ndarray, mpp: float, size_px: int = HEST_PATCH_PX,
               target_mpp: float = HEST_PATCH_MPP) -> PatchGrid:
    """`patch_grid` for an open slide (its size, levels and OpenSlide's choice of level)."""
    downsample = target_mpp / mpp
    return patch_grid(centres_px, mpp, slide.dimensions, slide.level_downsamples,
                      slide.get_best_level_for_downsample(downsample), size_px, target_mpp)
