"""The synthetic demo cohort: deterministic, readable by OpenSlide, annotated, labelled synthetic."""

from __future__ import annotations

import csv

import openslide
import pytest

from hist2rna_tf.demo import build_demo_cohort
from hist2rna_tf.regions import load_annotations


def test_same_seed_same_bytes(tmp_path, demo_cohort):
    again = build_demo_cohort(tmp_path / "again", n_slides=2, seed=0)
    for slide in again:
        assert slide.slide_path.read_bytes() == (demo_cohort / "slides" / slide.slide_path.name).read_bytes()
        assert slide.annotation_path.read_bytes() == (demo_cohort / "annotations" / slide.annotation_path.name).read_bytes()
    other = build_demo_cohort(tmp_path / "other", n_slides=1, seed=1)
    assert other[0].slide_path.read_bytes() != again[0].slide_path.read_bytes()


def test_slides_are_pyramidal_tiffs_at_quarter_micron(demo_cohort):
    for path in sorted((demo_cohort / "slides").glob("*.tiff")):
        slide = openslide.OpenSlide(str(path))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert slide.level_count == 3 and slide.level_downsamples[2] == pytest.approx(16, rel=0.01)
        assert "SYNTHETIC" in slide.properties.get("tiff.ImageDescription", "")


def test_annotations_and_cohort_table(demo_cohort):
    rows = list(csv.DictReader(open(demo_cohort / "cohort.csv")))
    assert [r["slide_id"] for r in rows] == [f"demo-{i:02d}" for i in range(1, 6)]
    fractions = [float(r["group_a_fraction"]) for r in rows]
    assert all(0 <= f <= 1 for f in fractions) and max(fractions) - min(fractions) > 0.4
    classes = {a.classification for r in rows for a in load_annotations(demo_cohort / r["annotation"])}
    assert classes == {"Tumor", "Necrosis"}
    assert "SYNTHETIC" in (demo_cohort / "README.txt").read_text()
