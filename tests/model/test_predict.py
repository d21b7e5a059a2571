"""The chain a user runs: extract -> train -> predict (from features or slides) -> export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.demo.cohort import build_demo_cohort, write_demo_expression
from hist2rna_tf.errors import Hist2RNAError, SettingsError
from hist2rna_tf.model.predict import Predictor, predict_patients


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone_file):
    root = tmp_path_factory.mktemp("chain")
    build_demo_cohort(root / "cohort", n_slides=12)
    expression, labels = write_demo_expression(root / "cohort")
    assert main(["extract", "--slides", str(root / "cohort" / "slides"), "--annotations",
                 str(root / "cohort" / "annotations"), "--out", str(root / "features"), "--backbone",
                 str(tiny_backbone_file), "--weights", "none", "--batch-size", "16", "--no-progress"]) == 0
    assert main(["train", "--features", str(root / "features" / "tiny"), "--expression", str(expression),
                 "--labels", str(labels), "--out", str(root / "run"), "--max-epochs", "3"]) == 0
    return root


def test_predict_from_features_and_from_slides_agree(trained, tmp_path):
    assert main(["predict", "--model", str(trained / "run"), "--features", str(trained / "features" / "tiny"),
                 "--out", str(tmp_path / "from_features.csv")]) == 0
    table = pd.read_csv(tmp_path / "from_features.csv", index_col=0)
    assert table.shape == (12, 138) and list(table.columns) == (trained / "run" / "genes.txt").read_text().split()
    assert main(["predict", "--model", str(trained / "run"), "--slides",
                 str(trained / "cohort" / "slides" / "demo-03.tiff"), "--annotations",
                 str(trained / "cohort" / "annotations"), "--out", str(tmp_path / "from_slide.csv"),
                 "--no-progress"]) == 0
    one = pd.read_csv(tmp_path / "from_slide.csv", index_col=0)
    np.testing.assert_allclose(one.loc["demo-03"].to_numpy(), table.loc["demo-03"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(table.loc["demo-03"].to_numpy(), table.loc["demo-04"].to_numpy())


def test_wrong_feature_size_is_a_clear_error(trained):
    predictor = Predictor(trained / "run")
    with pytest.raises(Hist2RNAError, match=r"expects \[N, 24\]"):
        predictor(np.zeros((2, 7)))
    with pytest.raises(Hist2RNAError, match="NaN"):
        predictor(np.full((1, 24), np.nan))


def test_export_command_writes_both_models(trained, tmp_path):
    import tensorflow as tf

    assert main(["export", str(trained / "run"), "--out", str(tmp_path / "saved")]) == 0
    head, full = tmp_path / "saved" / "tiny_head" / "1", tmp_path / "saved" / "tiny" / "1"
    assert (head / "saved_model.pb").is_file() and (full / "saved_model.pb").is_file()
    for export in (head, full):  # each carries the normaliser its run was trained with
        assert tf.saved_model.load(str(export)).metadata()["normaliser"].numpy() == b"macenko"
    from_export = Predictor(head)
    from_run = Predictor(trained / "run")
    x = np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32)
    np.testing.assert_allclose(from_export(x), from_run(x), rtol=1e-5, atol=1e-5)
    assert from_export.genes == from_run.genes
    with pytest.raises(Hist2RNAError, match="end-to-end"):
        Predictor(full)


def _extract(trained, backbone, out, *extra) -> None:
    assert main(["extract", "--slides", str(trained / "cohort" / "slides" / "demo-03.tiff"), "--annotations",
                 str(trained / "cohort" / "annotations"), "--out", str(out), "--backbone",
                 str(backbone), "--weights", "none", "--batch-size", "16", "--no-progress", *extra]) == 0


def test_features_of_the_other_normaliser_are_refused(trained, tiny_backbone_file, tmp_path, capsys):
    """A run (or its head export) trained on the authors' Macenko refuses features normalised the HEnorm
    way, naming the change; nothing is written."""
    _extract(trained, tiny_backbone_file, tmp_path / "henorm", "--stain", "macenko-henorm")
    henorm = str(tmp_path / "henorm" / "tiny")
    assert main(["predict", "--model", str(trained / "run"), "--features", henorm, "--out",
                 str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "normaliser: 'macenko' -> 'macenko-henorm'" in err and "--slides" in err
    assert not (tmp_path / "p.csv").exists()
    assert main(["export", str(trained / "run"), "--out", str(tmp_path / "saved")]) == 0
    with pytest.raises(SettingsError, match="normaliser: 'macenko' -> 'macenko-henorm'"):
        predict_patients(Predictor(tmp_path / "saved" / "tiny_head" / "1"), henorm)


def test_a_run_whose_features_were_re_extracted_otherwise_is_not_exported(trained, tiny_backbone_file, tmp_path,
                                                                          capsys):
    """The end-to-end export takes its normaliser from the run's features folder: if that folder was
    re-extracted with the other variant since training, export (and predict --slides) refuse."""
    shutil.copytree(trained / "features", tmp_path / "features")
    shutil.copytree(trained / "run", tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["inputs"]["features"] = str(tmp_path / "features" / "tiny")
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert config["feature_settings"]["normaliser"] == "macenko"
    _extract(trained, tiny_backbone_file, tmp_path / "features", "--stain", "macenko-henorm", "--overwrite")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "saved")]) == 2
    assert "normaliser: 'macenko' -> 'macenko-henorm'" in capsys.readouterr().err
    assert not (tmp_path / "saved").exists()


def test_a_report_that_fails_leaves_no_report_behind(trained, tmp_path, capsys):
    """A clinical table with a negative survival time stops the report before it is written; the
    figures it had drawn by then are not left behind."""
    predictions = pd.read_csv(trained / "run" / "test_predictions.csv", index_col=0)
    predictions.to_csv(tmp_path / "external.csv")
    clinical = pd.DataFrame({"patient_id": predictions.index, "os_months": 12.0, "os_event": 1})
    clinical.loc[0, "os_months"] = -1.0
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    columns = {k: None for k in ("grade", "size_mm", "age", "node_positive", "er", "pr", "her2", "ki67_percent",
                                 "ihc_subtype")}
    (tmp_path / "columns.json").write_text(json.dumps(columns))
    out = tmp_path / "report" / "report.html"
    assert main(["report", str(trained / "run"), "--external-predictions", str(tmp_path / "external.csv"),
                 "--clinical", str(tmp_path / "clinical.csv"), "--clinical-columns", str(tmp_path / "columns.json"),
                 "--n-boot", "10", "--out", str(out)]) == 2
    assert "negative" in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())
