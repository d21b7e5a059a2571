"""The synthetic demo cohort: deterministic, readable by OpenSlide, annotated, labelled synthetic."""

from __future__ import annotations

import csv

import numpy as np
import openslide
import pytest

from hist2rna_tf.config import PAM50_LABEL_COLUMN
from hist2rna_tf.demo.cohort import SOURCES, build_demo_cohort
from hist2rna_tf.extract.regions import load_annotations


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
    shares = np.array([[float(r[f"share_{s}"]) for s in SOURCES] for r in rows])
    assert np.allclose(shares.sum(axis=1), 1.0, atol=1e-3) and (shares >= 0).all()
    assert np.ptp(shares, axis=0).max() > 0.5  # slides differ in their mix of tumours
    classes = {a.classification for r in rows for a in load_annotations(demo_cohort / r["annotation"])}
    assert classes == {"Tumor", "Necrosis"}
    assert "SYNTHETIC" in (demo_cohort / "README.txt").read_text()


def test_synthetic_expression_follows_the_source_shares(demo_cohort, tmp_path):
    import shutil

    import pandas as pd

    from hist2rna_tf.demo.cohort import read_source_shares, write_demo_expression

    cohort = tmp_path / "cohort"
    shutil.copytree(demo_cohort, cohort)
    expression, labels = write_demo_expression(cohort)
    table = np.log2(1 + pd.read_csv(expression, index_col=0))
    shares = read_source_shares(cohort)
    assert table.shape == (5, 138) and list(table.index) == list(shares.index)
    # The genes are a linear function of the shares (plus noise sd 0.25): a least-squares fit recovers them.
    design = np.column_stack([np.ones(5), shares.to_numpy()[:, :3]])
    residual = table.to_numpy() - design @ np.linalg.lstsq(design, table.to_numpy(), rcond=None)[0]
    assert residual.std() < 0.25 < table.to_numpy().std(axis=0).mean()
    subtypes = pd.read_csv(labels, index_col=0)[PAM50_LABEL_COLUMN]
    assert list(subtypes) == [("LumA", "LumB", "Basal", "Her2")[k] for k in shares.to_numpy().argmax(axis=1)]
