"""A slide's tile plan (extract/plan.py): the chosen tiles lie in the region, read as tiles of the
target size; pre-tiled folders are taken as they are; a missing annotation is named."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from hist2rna_tf.config import TileConfig
from hist2rna_tf.errors import SlideError
from hist2rna_tf.extract.plan import annotation_for, plan_tiles
from hist2rna_tf.extract.slides import find_slides


def test_a_slides_plan_reads_its_tiles_and_releases_the_slide(demo_cohort):
    ref = find_slides([demo_cohort / "slides" / "demo-01.tiff"])[0]
    annotation = annotation_for(ref, demo_cohort / "annotations")
    plan = plan_tiles(ref, TileConfig(max_tiles=5), annotation)
    try:
        assert plan.coords_px.shape == (5, 2) and plan.mpp == pytest.approx(0.25)
        assert plan.candidate_tiles >= 5  # the cap spreads 5 over the region's candidates
        tile = plan.read(0)
        assert tile.shape == (224, 224, 3) and tile.dtype == np.uint8
    finally:
        plan.close()


def test_a_missing_annotation_names_the_file_and_the_way_out(demo_cohort, tmp_path):
    ref = find_slides([demo_cohort / "slides" / "demo-01.tiff"])[0]
    assert annotation_for(ref, None) is None
    with pytest.raises(SlideError, match=r"no annotation .*demo-01.geojson.*without --annotations"):
        annotation_for(ref, tmp_path)


def test_a_pre_tiled_folder_is_taken_as_it_is(tcga_tiles, tmp_path):
    folder = tmp_path / "TCGA-A2-A04R"
    folder.mkdir()
    for tile in sorted((tcga_tiles).glob("TCGA-A2-A04R*.png")):
        shutil.copy(tile, folder)
    ref = find_slides([folder])[0]
    plan = plan_tiles(ref, TileConfig(max_tiles=3), None)
    assert ref.kind == "tiles" and len(plan.coords_px) == 3 and plan.candidate_tiles == 3
    assert plan.read(0).shape == (224, 224, 3)
    # --mpp is for slide and image files; a pre-tiled folder given beside them is still used, as it is
    assert len(plan_tiles(ref, TileConfig(max_tiles=3, mpp_override=0.5), None).coords_px) == 3


def test_an_unreadable_tile_is_left_out_of_its_folder_named(tcga_tiles, tmp_path, caplog):
    folder = tmp_path / "TCGA-A2-A04R"
    folder.mkdir()
    tiles = sorted((tcga_tiles).glob("TCGA-A2-A04R*.png"))
    for tile in tiles:
        shutil.copy(tile, folder)
    (folder / "TCGA-A2-A04R_x1_y1.png").write_bytes(b"\x89PNG garbage")  # sorts first
    ref = find_slides([folder])[0]
    assert ref.kind == "tiles"  # still a pre-tiled folder
    with caplog.at_level("WARNING"):
        plan = plan_tiles(ref, TileConfig(), None)
    assert len(plan.coords_px) == len(tiles) and "TCGA-A2-A04R_x1_y1.png" in caplog.text


