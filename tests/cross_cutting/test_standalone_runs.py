"""A run stands alone: trained with relative paths, then moved, used from another folder, after its
features folder moved or was deleted and its tables are gone, every command that takes a run still
works (the patch-based baseline needs the tile features themselves: it takes --features)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.model import runs


@pytest.fixture(scope="module")
def moved(tiny_run, tmp_path_factory):
    """A run trained from inside a project folder with relative paths; then the project's features
    folder moved, the tables deleted, the run moved. Returns (root, run, moved features, predictions
    of every patient from before the move)."""
    import os

    root = tmp_path_factory.mktemp("standalone")
    project = root / "project"
    shutil.copytree(tiny_run / "features", project / "feat")
    shutil.copytree(tiny_run / "cohort", project / "cohort", ignore=shutil.ignore_patterns("slides"))
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert main(["train", "--features", "feat/tiny", "--expression", "cohort/expression.csv", "--labels",
                     "cohort/clinical.csv", "--out", "run", "--max-epochs", "3"]) == 0
        assert main(["predict", "run", "--features", "feat/tiny", "--out", "before.csv"]) == 0
    finally:
        os.chdir(cwd)
    before = pd.read_csv(project / "before.csv", index_col=0)
    features = shutil.move(project / "feat", root / "archive" / "feat")
    run = shutil.move(project / "run", root / "runs" / "run")
    shutil.rmtree(project / "cohort")  # the expression and label tables: gone
    return root, run, features / "tiny", before


@pytest.fixture
def elsewhere(moved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither where the run was trained nor where it is
    return tmp_path


def test_the_run_records_absolute_paths_and_how_its_features_were_made(moved, tiny_backbone_file):
    root, run, _, _ = moved
    record = runs.read_record(run)
    assert record.inputs.features == str(root / "project" / "feat" / "tiny")
    assert record.extraction.config.backbone == str(tiny_backbone_file)  # found again from any folder
    assert record.extraction.features == record.feature_settings


def test_export_works_from_any_folder_after_the_features_moved(moved, elsewhere):
    """(The folder it was trained on is no more where the run says: moved or deleted is all one.)"""
    _, run, _, _ = moved
    assert not Path(runs.read_record(run).inputs.features).exists()
    assert main(["export", str(run), "--out", "saved"]) == 0
    assert (elsewhere / "saved" / "tiny" / "1" / "saved_model.pb").is_file()


def test_predict_from_slides_extracts_them_as_the_run_was_trained(moved, elsewhere, tiny_run):
    _, run, _, before = moved
    assert main(["predict", str(run), "--slides", str(tiny_run / "cohort" / "slides" / "demo-03.tiff"),
                 "--annotations", str(tiny_run / "cohort" / "annotations"), "--out", "p.csv", "--no-progress"]) == 0
    after = pd.read_csv(elsewhere / "p.csv", index_col=0)
    np.testing.assert_allclose(after.loc["demo-03"], before.loc["demo-03"], rtol=1e-4, atol=1e-4)


def test_spatial_maps_and_the_report_need_neither_the_tables_nor_the_old_folder(moved, elsewhere, tiny_run):
    _, run, features, _ = moved
    assert main(["spatial", str(run), "--features", str(features), "--slides",
                 str(tiny_run / "cohort" / "slides" / "demo-03.tiff"), "--genes", "ESR1", "--no-subtypes", "--out", "maps"]) == 0  # (12 patients: too few for the PAM50 map)
    assert (elsewhere / "maps" / "demo-03_ESR1.png").is_file()
    assert main(["report", str(run), "--n-boot", "10", "--out", "report/report.html"]) == 0
    assert "PAM50 subtype from predicted genes" in (elsewhere / "report" / "report.html").read_text()


def test_the_baseline_takes_the_features_where_they_are_now(moved, elsewhere, capsys):
    _, run, features, _ = moved
    assert main(["baseline", str(run), "--out", "b", "--max-epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not there (moved or deleted?)" in err and "--features DIR" in err
    assert main(["baseline", str(run), "--features", str(features), "--out", "b", "--max-epochs", "1",
                 "--no-progress"]) == 0
    assert runs.read_record(elsewhere / "b").approach == runs.PATCH_BASED
