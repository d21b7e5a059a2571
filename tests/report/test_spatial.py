"""Spatial maps (spatial.py): the run's head applied to each tile's own feature, drawn where the tile lies."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.extract.records import read_record, record_path, write_record
from hist2rna_tf.model.predict import Predictor
from hist2rna_tf.report.spatial_folder import map_figures
from hist2rna_tf.report.spatial import write_spatial_maps
from hist2rna_tf.report.spatial_folder import OBJECTS, TILES, SpatialFolder

SLIDE = "TCGA-SY-0003-01Z-00-DX1"


@pytest.fixture(scope="module")
def mapped(synthetic_run, demo_cohort, tmp_path_factory):
    """The synthetic run's slide SLIDE as a real slide file (a demo slide under its name), mapped."""
    run, cohort = synthetic_run
    slides = tmp_path_factory.mktemp("spatial_slides")
    shutil.copy(demo_cohort / "slides" / "demo-01.tiff", slides / f"{SLIDE}.tiff")
    out = tmp_path_factory.mktemp("spatial") / "maps"
    written = write_spatial_maps(run, cohort.features, [slides], out, ["ESR1", "MKI67"])
    return run, cohort, slides, out, written


def test_each_tile_gets_the_heads_prediction_for_its_own_feature(mapped):
    run, cohort, _, out, written = mapped
    assert sorted(p.name for p in written) == sorted([f"{SLIDE}_PAM50.png", f"{SLIDE}{TILES}", f"{SLIDE}{OBJECTS}",
                                                           f"{SLIDE}_ESR1.png", f"{SLIDE}_MKI67.png"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")
    record = read_record(record_path(cohort.features.parent, cohort.features.name, SLIDE))
    table = pd.read_csv(SpatialFolder(out).tiles(SLIDE))
    predictor = Predictor(run)
    np.testing.assert_array_equal(table[["x", "y"]].to_numpy(), record.tile_xy_px)
    np.testing.assert_allclose(table[predictor.genes].to_numpy(), predictor(record.tile_features), rtol=1e-5)
    assert not np.allclose(table["ESR1"], table["ESR1"].iloc[0])  # tiles differ, so do their predictions


def test_each_tile_gets_a_pam50_call_with_its_probabilities(mapped):
    *_, out, _ = mapped
    table = pd.read_csv(SpatialFolder(out).tiles(SLIDE))
    p = table[[c for c in table.columns if c.startswith("p_")]]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p.idxmax(axis=1).str[2:] == table["call"]).all()


def test_maps_follow_the_tiles_features(mapped, tmp_path):
    """Swap two tiles' features in the record: their rows in the table swap too."""
    run, cohort, slides, out, _ = mapped
    features = shutil.copytree(cohort.features, tmp_path / cohort.features.name)
    path = record_path(tmp_path, cohort.features.name, SLIDE)
    record = read_record(path)
    tiles = record.tile_features.copy()
    tiles[[0, 1]] = tiles[[1, 0]]
    write_record(replace(record, tile_features=tiles), path)
    write_spatial_maps(run, features, [slides], tmp_path / "maps", ["ESR1"], subtypes=False)
    before = pd.read_csv(SpatialFolder(out).tiles(SLIDE))["ESR1"].to_numpy()
    after = pd.read_csv(SpatialFolder(tmp_path / "maps").tiles(SLIDE))["ESR1"].to_numpy()
    np.testing.assert_allclose(after[[1, 0, 2, 3, 4, 5]], before, rtol=1e-6)


def test_refusals_name_the_cause(mapped, tmp_path):
    run, cohort, slides, _, _ = mapped
    with pytest.raises(Hist2RNAError, match="NOTAGENE not among the run's"):
        write_spatial_maps(run, cohort.features, [slides], tmp_path / "a", ["NOTAGENE"])
    with pytest.raises(Hist2RNAError, match="not a readable slide or image"):
        write_spatial_maps(run, cohort.features, [cohort.expression.parent / "clinical.csv"], tmp_path / "b", ["ESR1"])
    features = shutil.copytree(cohort.features, tmp_path / cohort.features.name)
    path = record_path(tmp_path, cohort.features.name, SLIDE)
    write_record(replace(read_record(path), tile_features=None), path)
    with pytest.raises(Hist2RNAError, match="--save-tile-features"):
        write_spatial_maps(run, features, [slides], tmp_path / "c", ["ESR1"], subtypes=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_other_slides_are_mapped_when_some_cannot_be(mapped, demo_cohort, tmp_path):
    """A cohort with a slide that is not in the features folder and one whose record has no tile
    features: the good slide is mapped, one error names both (what to do for each), and the files
    written are with it."""
    from hist2rna_tf.errors import SpatialError

    run, cohort, slides, _, _ = mapped
    features = shutil.copytree(cohort.features, tmp_path / cohort.features.name)
    folder = shutil.copytree(slides, tmp_path / "slides")
    bare = "TCGA-SY-0004-01Z-00-DX1"
    shutil.copy(demo_cohort / "slides" / "demo-02.tiff", folder / f"{bare}.tiff")
    path = record_path(tmp_path, cohort.features.name, bare)
    write_record(replace(read_record(path), tile_features=None), path)
    shutil.copy(demo_cohort / "slides" / "demo-03.tiff", folder / "not-extracted.tiff")
    with pytest.raises(SpatialError) as caught:
        write_spatial_maps(run, features, [folder], tmp_path / "maps", ["ESR1"], subtypes=False)
    message = str(caught.value)
    assert message.startswith("2 of 3 slides not mapped") and "(the other 1 are in" in message
    assert f"slide {bare}: its record has no per-tile features" in message and "--save-tile-features" in message
    assert "not-extracted.tiff: no feature record not-extracted.tfrecord" in message
    assert sorted(p.name for p in caught.value.written) == [f"{SLIDE}_ESR1.png", f"{SLIDE}{TILES}",
                                                            f"{SLIDE}{OBJECTS}"]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(p.name for p in caught.value.written)


def test_map_figures_title_each_map_for_the_report(mapped, tmp_path):
    *_, out, _ = mapped
    titles = map_figures(out)
    assert set(titles.values()) == set(out.glob("*.png"))
    assert f"Spatial map (beyond the paper): {SLIDE}, PAM50 call per tile" in titles
    assert f"Spatial map (beyond the paper): {SLIDE}, predicted ESR1" in titles
    with pytest.raises(Hist2RNAError, match="no PNG maps"):
        map_figures(tmp_path)


@pytest.mark.parametrize("named", [True, False], ids=["tiles named by position", "tiles named otherwise"])
def test_a_pre_tiled_folder_is_mapped_over_a_mosaic_of_its_tiles(tiny_run, tiny_backbone_file, tcga_tiles, tmp_path,
                                                                  named):
    """A pre-tiled folder (the authors' layout) has no slide thumbnail: its maps are drawn over its own
    tiles, placed where their names say (or in a grid when the names carry no position)."""
    from hist2rna_tf.cli import main
    from hist2rna_tf.extract.slides import find_slides
    from hist2rna_tf.report.spatial import slide_picture

    folder = tmp_path / "TCGA-A2-A04R"
    folder.mkdir()
    for k, tile in enumerate(sorted((tcga_tiles).glob("TCGA-A2-A04R*.png"))):
        shutil.copy(tile, folder / (tile.name if named else f"TCGA-A2-A04R_tile{k}.png"))
    assert main(["extract", "--slides", str(folder), "--out", str(tmp_path / "features"), "--backbone",
                 str(tiny_backbone_file), "--weights", "none", "--save-tile-features", "--no-progress"]) == 0
    written = write_spatial_maps(tiny_run / "run", tmp_path / "features" / "tiny", [folder], tmp_path / "maps", ["ESR1"],
                                 subtypes=False)
    # QuPath objects where the tiles' names give their level-0 places on the slide
    assert sorted(p.name for p in written) == ["TCGA-A2-A04R_ESR1.png", f"TCGA-A2-A04R{TILES}"] + (
        [f"TCGA-A2-A04R{OBJECTS}"] if named else [])
    record = read_record(record_path(tmp_path / "features", "tiny", "TCGA-A2-A04R"))
    picture = slide_picture(find_slides([folder])[0], record)
    assert len(picture.positions) == record.n_tiles == 6 and len({tuple(p) for p in picture.positions}) == 6
    x, y = (picture.positions[0] / picture.scale).astype(int)  # the first tile, drawn where it lies
    assert picture.image[y:y + int(picture.extent), x:x + int(picture.extent)].mean() < 250  # tissue, not background
    if named:  # the authors' names carry level-0 positions: the mosaic keeps their layout
        np.testing.assert_array_equal(picture.positions, record.tile_xy_px - record.tile_xy_px.min(axis=0))


def test_genes_all_measures_every_gene_of_the_run_in_the_qupath_objects(mapped, tmp_path):
    """`hist2rna spatial --genes all --no-gene-maps`: every gene of the run a measurement of every tile
    object (a pathologist picks one in QuPath), no PNG a gene, the PAM50 map still drawn."""
    import json

    from hist2rna_tf.cli import main

    run, cohort, slides, _, _ = mapped
    out = tmp_path / "all"
    assert main(["spatial", str(run), "--features", str(cohort.features), "--slides", str(slides), "--genes", "all",
                 "--no-gene-maps", "--no-progress", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{SLIDE}_{s}" for s in ("PAM50.png", "tiles.csv",
                                                                                     "tiles.geojson"))
    genes = Predictor(run).genes
    features = json.loads(SpatialFolder(out).objects(SLIDE).read_text())["features"]
    assert all(set(genes) <= set(f["properties"]["measurements"]) for f in features) and len(genes) == 50


def test_a_spatial_folder_names_its_files_in_one_place(tmp_path):
    """SpatialFolder: a map's slide is the mapped slide its name starts with, even when slide ids hold '_'
    (a pre-tiled folder's, a TMA core's), so a gene is never read off the wrong '_'."""
    from hist2rna_tf.report.spatial_folder import SpatialFolder

    folder = SpatialFolder(tmp_path)
    for slide in ("core_A1", "core"):
        folder.tiles(slide).write_text("x,y\n")
        folder.map(slide).write_bytes(b"png")
        folder.map(slide, "ESR1").write_bytes(b"png")
    folder.objects("core_A1").write_text("{}")
    assert folder.slides() == ["core", "core_A1"]
    assert [(s, what) for s, what, _ in folder.maps()] == [("core", "ESR1"), ("core", "PAM50"), ("core_A1", "ESR1"),
                                                          ("core_A1", "PAM50")]
    assert folder.object_files() == {"core_A1": tmp_path / "core_A1_tiles.geojson"}
