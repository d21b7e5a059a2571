"""Predictions per patient (model/predict.py): from stored features or from slides extracted with the
run's own settings, refusing features made otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.errors import Hist2RNAError, SettingsError
from hist2rna_tf.model import runs
from hist2rna_tf.model.predict import Predictor, predict_patients


def test_predict_from_features_and_from_slides_agree(tiny_run, tmp_path):
    run = tiny_run / "run"
    assert main(["predict", str(run), "--features", str(tiny_run / "features" / "tiny"),
                 "--out", str(tmp_path / "from_features.csv")]) == 0
    table = pd.read_csv(tmp_path / "from_features.csv", index_col=0)
    assert table.shape == (12, 138) and list(table.columns) == runs.read_genes(run)
    assert main(["predict", str(run), "--slides", str(tiny_run / "cohort" / "slides" / "demo-03.tiff"),
                 "--annotations", str(tiny_run / "cohort" / "annotations"), "--out", str(tmp_path / "from_slide.csv"),
                 "--no-progress"]) == 0
    one = pd.read_csv(tmp_path / "from_slide.csv", index_col=0)
    np.testing.assert_allclose(one.loc["demo-03"].to_numpy(), table.loc["demo-03"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(table.loc["demo-03"].to_numpy(), table.loc["demo-04"].to_numpy())


def test_wrong_feature_size_is_a_clear_error(tiny_run):
    predictor = Predictor(tiny_run / "run")
    with pytest.raises(Hist2RNAError, match=r"features of shape \(2, 7\), but the hist2rna head reads \[N, 24\]"):
        predictor(np.zeros((2, 7)))
    with pytest.raises(Hist2RNAError, match="NaN"):
        predictor(np.full((1, 24), np.nan))


def _extract(tiny_run, backbone, out, *extra) -> None:
    assert main(["extract", "--slides", str(tiny_run / "cohort" / "slides" / "demo-03.tiff"), "--annotations",
                 str(tiny_run / "cohort" / "annotations"), "--out", str(out), "--backbone",
                 str(backbone), "--weights", "none", "--batch-size", "16", "--no-progress", *extra]) == 0


def test_features_of_the_other_normaliser_are_refused(tiny_run, tiny_backbone_file, tmp_path, capsys):
    """A run (or its head export) trained on the authors' Macenko refuses features normalised the HEnorm
    way, naming the change; nothing is written."""
    _extract(tiny_run, tiny_backbone_file, tmp_path / "henorm", "--stain", "macenko-henorm")
    henorm = str(tmp_path / "henorm" / "tiny")
    assert main(["predict", str(tiny_run / "run"), "--features", henorm, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{henorm}: made with other settings than the features {tiny_run / 'run'} was trained on" in err
    assert "normaliser: 'macenko' -> 'macenko-henorm'" in err and "--slides" in err
    assert not (tmp_path / "p.csv").exists()
    assert main(["export", str(tiny_run / "run"), "--out", str(tmp_path / "saved")]) == 0
    head = Predictor(tmp_path / "saved" / "tiny_head" / "1")
    with pytest.raises(SettingsError, match="normaliser: 'macenko' -> 'macenko-henorm'"):
        predict_patients(head, henorm)
    with pytest.raises(Hist2RNAError, match="give the training run folder to predict from slides"):
        head.extraction()  # a head export does not say how to extract slides; its run does
    assert Predictor(tiny_run / "run").extraction() == runs.read_record(tiny_run / "run").extraction


def test_a_run_of_random_weights_says_so(tiny_run):
    """The tiny backbone is a model file (its weights: the file), not a catalog backbone with random
    weights, as the demo's is."""
    from dataclasses import replace

    predictor = Predictor(tiny_run / "run")
    assert not predictor.trained_on_random_weights
    predictor.feature_settings = replace(predictor.feature_settings, backbone="efficientnetv2s", weights="none")
    assert predictor.trained_on_random_weights
