"""Tissue masks, QuPath GeoJSON annotations, the tile grid and the 1000-tile cap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hist2rna_tf.config import TileConfig
from hist2rna_tf.errors import AnnotationError, SlideError
from hist2rna_tf.extract.regions import (annotation_mask, grid_tiles, load_annotations, select_tiles, spread_sample,
                                         tissue_mask)
from hist2rna_tf.extract.slides import find_slides, open_slide


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _write(tmp_path, data, name="a.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_qupath_layouts_and_classes(tmp_path):
    feature = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
               "geometry": {"type": "MultiPolygon", "coordinates": [[_square(0, 0, 10, 10)], [_square(20, 20, 30, 30)]]}}
    necrosis = {"type": "Feature", "properties": {"classification": {"name": "Necrosis"}},
                "geometry": {"type": "Polygon", "coordinates": [_square(2, 2, 4, 4)]}}
    point = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 1]}}
    for data in ({"type": "FeatureCollection", "features": [feature, necrosis, point]}, [feature, necrosis]):
        annotations = load_annotations(_write(tmp_path, data))
        assert [a.classification for a in annotations] == ["Tumor", "Tumor", "Necrosis"]
    single = load_annotations(_write(tmp_path, feature))
    assert len(single) == 2


def test_holes_and_excluded_classes_are_cut_out(tmp_path):
    tumour = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
              "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 800, 800), _square(100, 100, 300, 300)]}}
    necrosis = {"type": "Feature", "properties": {"classification": {"name": "Necrosis"}},
                "geometry": {"type": "Polygon", "coordinates": [_square(500, 500, 700, 700)]}}
    annotations = load_annotations(_write(tmp_path, {"type": "FeatureCollection", "features": [tumour, necrosis]}))
    mask = annotation_mask(annotations, (100, 100), 10.0, (1000, 1000))
    assert mask[50, 5] and mask[5, 50]  # tumour
    assert not mask[20, 20]  # the hole
    assert not mask[60, 60]  # necrosis
    assert not mask[90, 90]  # outside
    kept = annotation_mask(annotations, (100, 100), 10.0, (1000, 1000), exclude_classes=())
    assert kept[60, 60]
    with pytest.raises(AnnotationError, match="no tumour annotation"):
        annotation_mask(annotations, (100, 100), 10.0, (1000, 1000), tumour_classes=("Stroma",))


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable GeoJSON"),
    (json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}), "malformed"),
    (json.dumps({"type": "Banana"}), "malformed"),
    (json.dumps({"type": "FeatureCollection", "features": []}), "no Polygon"),
])
def test_malformed_annotations_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.geojson"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations(path)
    assert "broken.geojson" in str(info.value)


def test_annotation_outside_the_slide(tmp_path):
    annotations = load_annotations(_write(tmp_path, {"type": "Polygon", "coordinates": [_square(5000, 5000, 6000, 6000)]}))
    with pytest.raises(AnnotationError, match="outside the slide"):
        annotation_mask(annotations, (10, 10), 100.0, (1000, 1000), source="x.geojson")


def test_tissue_mask_finds_tissue_and_rejects_blank(reference_data):
    ref = find_slides([reference_data / "slides" / "CMU-1-Small-Region.svs"])[0]
    thumb = np.asarray(open_slide(ref).get_thumbnail((278, 371)).convert("RGB"))
    mask = tissue_mask(thumb)
    assert 0.2 < mask.mean() < 0.95
    assert not tissue_mask(np.full((100, 100, 3), 242, np.uint8)).any()
    green_ink = np.full((100, 100, 3), 242, np.uint8)
    green_ink[40:60] = (40, 160, 70)
    assert not tissue_mask(green_ink).any()


def test_grid_keeps_tiles_by_region_fraction():
    region = np.zeros((100, 100), bool)
    region[:, :50] = True  # left half; 1 mask px = 10 level-0 px; tiles of 200 px = 20 mask px
    coords = grid_tiles(region, 10.0, 200.0, (1000, 1000), 0.5)
    assert set(map(tuple, coords)) == {(x, y) for x in (0, 200, 400) for y in range(0, 1000, 200)}
    strict = grid_tiles(region, 10.0, 200.0, (1000, 1000), 0.6)
    assert set(x for x, _ in strict) == {0, 200}  # the tile at x=400 is half in, half out


def test_cap_is_deterministic_and_spatially_spread():
    coords = np.array([(x, y) for y in range(0, 224 * 60, 224) for x in range(0, 224 * 60, 224)], dtype=np.int64)
    picked = spread_sample(coords, 1000)
    assert len(picked) == 1000 and len(np.unique(picked, axis=0)) == 1000
    assert (spread_sample(coords, 1000) == picked).all()
    quadrant = (picked[:, 0] >= 224 * 30).astype(int) * 2 + (picked[:, 1] >= 224 * 30)
    assert np.bincount(quadrant, minlength=4).min() >= 230  # each quarter keeps about its share
    assert len(spread_sample(coords[:10], 1000)) == 10


def test_demo_slide_selection_respects_annotation(demo_cohort):
    ref = find_slides([demo_cohort / "slides" / "demo-03.tiff"])[0]
    slide = open_slide(ref)
    whole, _ = select_tiles(slide, 0.25, TileConfig(), None, ref.path)
    tumour, summary = select_tiles(slide, 0.25, TileConfig(), demo_cohort / "annotations" / "demo-03.geojson", ref.path)
    assert 20 < len(tumour) < len(whole)
    assert set(map(tuple, tumour)) <= set(map(tuple, whole))
    capped, _ = select_tiles(slide, 0.25, TileConfig(max_tiles=10), None, ref.path)
    assert len(capped) == 10


def test_blank_slide_has_no_tissue(tmp_path):
    from hist2rna_tf.demo.cohort import write_pyramid_tiff

    path = tmp_path / "blank.tiff"
    write_pyramid_tiff(np.full((1024, 1024, 3), 243, np.uint8), path)
    ref = find_slides([path])[0]
    with pytest.raises(SlideError, match="no tissue"):
        select_tiles(open_slide(ref), 0.25, TileConfig(), None, ref.path)


def test_a_self_intersecting_polygon_is_repaired_and_named(tmp_path, caplog):
    """A bow-tie outline (its edges cross) is repaired into the two triangles it encloses, with a
    warning naming the file and the polygon; valid polygons pass unchanged."""
    bowtie = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]
    square = [[200, 200], [300, 200], [300, 300], [200, 300], [200, 200]]
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "Polygon", "coordinates": [square]}},
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "Polygon", "coordinates": [bowtie]}}]}))
    with caplog.at_level("WARNING"):
        annotations = load_annotations(path)
    assert len(annotations) == 3  # the square, and the bow-tie's two triangles
    np.testing.assert_array_equal(annotations[0].rings[0], np.asarray(square, float))
    assert "slide.geojson: polygon 2 (Tumor)" in caplog.text and "Self-intersection" in caplog.text
    areas = sorted(0.5 * abs(np.dot(r[:-1, 0], r[1:, 1]) - np.dot(r[1:, 0], r[:-1, 1]))
                   for a in annotations[1:] for r in a.rings)
    assert areas == [2500.0, 2500.0]
