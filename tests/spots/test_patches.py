"""The patch at each spot (spots/patches.py) equals HEST's: tests/data/spots/hest_samples/patches/ was
written by HEST's dump_patches placement and hestcore's patcher (tests/fixtures/make_hest_fixtures.py)
on the same synthetic samples: one at 0.3 um/px (a patch spans 373.3 px, read at level 0), one at
0.12 um/px (933.3 px, read at the pyramid's level 1), spots near the edges overhanging the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hist2rna_tf.spots.hest import open_image, patch_batches, read_hest_sample
from hist2rna_tf.spots.patches import patch_grid, read_patches, slide_grid

DATA = Path(__file__).resolve().parents[1] / "data" / "spots"
SAMPLES = DATA / "hest_samples"


@pytest.mark.parametrize("sample_id", ["SYN1", "SYN2"])
def test_our_patch_of_each_spot_is_hests(sample_id):
    sample = read_hest_sample(SAMPLES, sample_id)
    slide = open_image(sample.image)
    grid = slide_grid(slide, sample.centres_px, sample.mpp)
    theirs = list(patch_batches(SAMPLES / "patches" / f"{sample_id}.h5", batch=1000))[0]
    ours = np.concatenate(list(read_patches(slide, grid, batch=4)))
    placed = json.loads((DATA / "reference.json").read_text())["patches"][sample_id]
    assert (grid.level, grid.read_px) == (placed["level"], placed["read_px"])
    np.testing.assert_array_equal(sample.barcodes[grid.kept], theirs[1])
    np.testing.assert_array_equal(grid.top_left_px, theirs[2])
    np.testing.assert_array_equal(ours, theirs[0])
    slide.close()


def test_hests_placement_truncates_and_keeps_what_overhangs():
    """top-left = centre - span // 2, truncated toward zero; a patch that starts right of the image is
    left out, one that merely overhangs its left or top edge kept."""
    centres = np.array([[10.0, 10.0], [500.6, 300.2], [1199.0, 5.0], [1500.0, 100.0]])
    grid = patch_grid(centres, mpp=0.3, image_size=(1200, 900), level_downsamples=(1.0, 4.0), best_level=0)
    span = 224 * 0.5 / 0.3
    assert grid.kept.tolist() == [True, True, True, False] and grid.span_px == 373 and grid.read_px == 373
    assert grid.top_left_px.tolist() == [[int(10 - span // 2), int(10 - span // 2)],
                                         [int(500.6 - span // 2), int(300.2 - span // 2)],
                                         [int(1199 - span // 2), int(5 - span // 2)]]
    assert grid.top_left_px[0].tolist() == [-176, -176]  # -176.0: truncated, as astype(int)
