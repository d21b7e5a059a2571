"""The chain a user runs: extract -> train -> predict (from features or slides) -> export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.demo import build_demo_cohort, write_demo_expression
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.predict import Predictor


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
    assert main(["export", str(trained / "run"), "--out", str(tmp_path / "saved")]) == 0
    head, full = tmp_path / "saved" / "tiny_head" / "1", tmp_path / "saved" / "tiny" / "1"
    assert (head / "saved_model.pb").is_file() and (full / "saved_model.pb").is_file()
    from_export = Predictor(head)
    from_run = Predictor(trained / "run")
    x = np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32)
    np.testing.assert_allclose(from_export(x), from_run(x), rtol=1e-5, atol=1e-5)
    assert from_export.genes == from_run.genes
    with pytest.raises(Hist2RNAError, match="end-to-end"):
        Predictor(full)
