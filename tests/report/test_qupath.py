"""Tile predictions as QuPath objects (report/qupath.py), checked against the rules of QuPath's own
GeoJSON reader (qupath/qupath, qupath-core: QuPathTypeAdapters.PathObjectTypeAdapter.parseObject,
MeasurementListTypeAdapter.read, GsonTools.PathClassTypeAdapter.read, ROITypeAdapters), not against
our writer: the file the spatial command writes for a slide is one tile object per tile of its CSV,
at its coordinates, with its genes, PAM50 probabilities and call."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.model import runs
from hist2rna_tf.report.qupath import SUBTYPE_RGB, tile_objects
from hist2rna_tf.report.spatial_folder import SpatialFolder

# parseObject's switch: the objectType values that make each kind; others become annotations.
QUPATH_TILE_TYPES = ("tile", "PathTileObject")


def _number(value) -> float:
    """MeasurementListTypeAdapter.read: a JSON number, or a string it parses ("nan", "inf", "-inf", or
    a number in text); anything else is not a measurement."""
    if isinstance(value, bool):
        raise ValueError(f"measurement {value!r} is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        lower = value.lower()
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(lower, None) or float(value)
    raise ValueError(f"measurement {value!r} is not a number")


def _ring(ring) -> None:
    """A JTS LinearRing: closed, at least 4 coordinates, each [x, y] (or [x, y, z]) of numbers."""
    assert len(ring) >= 4 and ring[0] == ring[-1], f"not a closed ring: {ring}"
    for point in ring:
        assert 2 <= len(point) <= 3 and all(isinstance(v, (int, float)) for v in point), point


def qupath_reads(collection: dict) -> list[dict]:
    """The objects QuPath makes of a FeatureCollection, as dicts (kind, polygon, measurements, class,
    colour, locked); an AssertionError or ValueError where its reader would fail or mislead."""
    assert collection.get("type") == "FeatureCollection" and isinstance(collection.get("features"), list)
    objects = []
    for feature in collection["features"]:
        assert feature.get("type") == "Feature"
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon") and "coordinates" in geometry
        rings = geometry["coordinates"] if geometry["type"] == "Polygon" else [r for p in geometry["coordinates"] for r in p]
        for ring in rings:
            _ring(ring)
        properties = feature.get("properties", {})
        kind = properties.get("objectType", properties.get("object_type", properties.get("type", "unknown")))
        locked = properties.get("isLocked", False)
        assert isinstance(locked, bool), "isLocked must be a JSON boolean"
        measurements = properties.get("measurements", {})
        assert isinstance(measurements, (dict, list))
        if isinstance(measurements, list):
            measurements = {m["name"]: m["value"] for m in measurements}
        measured = {name: _number(value) for name, value in measurements.items()}
        name, colour = None, None
        if "classification" in properties:
            classification = properties["classification"]
            if isinstance(classification, str):
                name = classification
            else:  # an object: (name or names) AND color, else JsonParseException
                assert isinstance(classification, dict) and ("name" in classification or "names" in classification) \
                    and "color" in classification, f"QuPath cannot read the classification {classification}"
                colour = classification["color"]
                assert isinstance(colour, list) and len(colour) in (3, 4) and all(
                    isinstance(c, int) and 0 <= c <= 255 for c in colour), colour
                name = classification.get("name") or ":".join(classification["names"])
        objects.append({"kind": "tile" if kind in QUPATH_TILE_TYPES else "annotation", "polygon": rings[0],
                        "measurements": measured, "class": name, "colour": colour, "locked": locked})
    return objects


def test_the_rules_refuse_what_qupath_refuses():
    """The checker fails where QuPath's reader does: a class without a colour, an open ring, text that is
    no number as a measurement."""
    square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]

    def feature(**properties):
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}, "properties": properties}]}

    assert qupath_reads(feature(objectType="tile"))[0]["kind"] == "tile"
    with pytest.raises(AssertionError, match="classification"):
        qupath_reads(feature(classification={"name": "LumA"}))
    with pytest.raises(ValueError):
        qupath_reads(feature(measurements={"ESR1": "high"}))
    with pytest.raises(AssertionError, match="closed ring"):
        qupath_reads({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square[:-1]]}, "properties": {}}]})


def test_every_tile_is_a_locked_tile_object_with_its_genes_and_call():
    tiles = pd.DataFrame({"x": [0, 896], "y": [448, 448], "ESR1": [7.5, np.nan], "MKI67": [3.0, 4.0],
                          "call": ["LumA", "Basal"], "p_LumA": [0.7, 0.1], "p_Basal": [0.3, 0.9]})
    objects = qupath_reads(json.loads(json.dumps(tile_objects(tiles, 896.0, ["ESR1"]))))
    assert [o["kind"] for o in objects] == ["tile", "tile"] and all(o["locked"] for o in objects)
    assert objects[0]["polygon"] == [[0, 448], [896, 448], [896, 1344], [0, 1344], [0, 448]]
    assert objects[0]["measurements"] == {"ESR1": 7.5, "PAM50 LumA probability": 0.7, "PAM50 Basal probability": 0.3}
    assert math.isnan(objects[1]["measurements"]["ESR1"])  # written as "NaN", which QuPath reads
    assert [(o["class"], tuple(o["colour"])) for o in objects] == [("LumA", SUBTYPE_RGB["LumA"]),
                                                                   ("Basal", SUBTYPE_RGB["Basal"])]
    assert SUBTYPE_RGB["LumA"] == (44, 123, 182)  # #2c7bb6, the figures' LumA


@pytest.fixture(scope="module")
def mapped_slide(synthetic_run, demo_cohort, tmp_path_factory):
    """The synthetic run's first slide as a real slide file (a demo slide under its name), mapped."""
    import shutil

    from hist2rna_tf.report.spatial import write_spatial_maps

    run, cohort = synthetic_run
    slide = f"{cohort.patients[0]}-01Z-00-DX1"
    slides = tmp_path_factory.mktemp("qupath_slides")
    shutil.copy(demo_cohort / "slides" / "demo-01.tiff", slides / f"{slide}.tiff")
    out = tmp_path_factory.mktemp("qupath") / "maps"
    write_spatial_maps(run, cohort.features, [slides], out, ["ESR1", "MKI67"], gene_maps=False)
    return run, cohort, out, slide


def test_the_spatial_commands_objects_are_the_tiles_of_its_table(mapped_slide):
    """The GeoJSON `write_spatial_maps` writes beside a slide's maps: one QuPath tile object per row of
    its CSV, its square at the row's level-0 x, y, a tile wide (the record's tile size in level-0
    pixels), every gene of the run (not only the mapped ones: a QuPath user maps any) and the PAM50
    probabilities as measurements, its call as its class."""
    from hist2rna_tf.extract.records import read_record, record_path

    run, cohort, out, slide = mapped_slide
    table = pd.read_csv(SpatialFolder(out).tiles(slide))
    objects = qupath_reads(json.loads(SpatialFolder(out).objects(slide).read_text()))
    record = read_record(record_path(cohort.features.parent, cohort.features.name, slide))
    side = record.tile_size_um / record.mpp
    assert len(objects) == len(table) == record.n_tiles
    probabilities = [c for c in table.columns if c.startswith("p_")]
    for obj, (_, row) in zip(objects, table.iterrows()):
        assert obj["kind"] == "tile" and obj["locked"]
        x, y = row["x"], row["y"]
        np.testing.assert_allclose(obj["polygon"], [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]],
                                   atol=0.01)
        genes = runs.read_genes(run)
        assert set(obj["measurements"]) == {*genes, *(f"PAM50 {p[2:]} probability" for p in probabilities)}
        assert len(genes) == 50 and obj["measurements"]["ESR1"] == pytest.approx(row["ESR1"], abs=1e-4)
        assert obj["class"] == row["call"] and tuple(obj["colour"]) == SUBTYPE_RGB[row["call"]]
