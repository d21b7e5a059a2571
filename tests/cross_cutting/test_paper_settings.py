"""The paper's settings (sections 2.4, 2.6, 3.2, 3.3), pinned where a user meets them: the library's
defaults, the command line's defaults, what a saved run records, and what training really does."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.config import PAM50_LABEL_COLUMN, RunInputs, TrainConfig
from hist2rna_tf.expression import load_panel
from hist2rna_tf.model import runs
from hist2rna_tf.model.train import fit_head, validation_rows

from synthetic import record, write_records

PAPER_TRAINING = {"learning_rate": 1e-3, "batch_size": 12, "patience": 4, "max_epochs": 150,
                  "validation_fraction": 0.1, "standardize": False}
PAPER_SUBTYPES = ["LumA", "LumB", "Basal", "Her2"]  # section 2.1: Normal-like patients are left out


def test_library_defaults_are_the_papers():
    config = TrainConfig()
    assert {key: getattr(config, key) for key in PAPER_TRAINING} == PAPER_TRAINING
    assert list(RunInputs("f", "e", "l").subtypes) == PAPER_SUBTYPES


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`hist2rna train` with nothing but the required arguments, on 40 patients of whom 6 are
    Normal-like; small random features (training stops early, so the 150-epoch cap is cheap)."""
    root = tmp_path_factory.mktemp("paper_run")
    rng = np.random.default_rng(0)
    patients = [f"P{i:02d}" for i in range(40)]
    labels = (PAPER_SUBTYPES * 9)[:34] + ["Normal"] * 6
    write_records(root / "features", [record(p, rng.normal(size=8), patient_id=p, version="0.2.0") for p in patients])
    expression = pd.DataFrame(rng.uniform(1, 500, size=(40, 50)), index=patients, columns=load_panel("pam50"))
    expression.rename_axis("patient").to_csv(root / "expression.csv")
    pd.DataFrame({"patient": patients, PAM50_LABEL_COLUMN: labels}).to_csv(root / "labels.csv", index=False)
    assert main(["train", "--features", str(root / "features" / "efficientnetv2s"), "--expression",
                 str(root / "expression.csv"), "--labels", str(root / "labels.csv"), "--genes", "pam50", "--out",
                 str(root / "run")]) == 0
    return root / "run", dict(zip(patients, labels))


def test_the_command_line_trains_with_the_papers_settings_and_records_them(cli_run):
    run, labels = cli_run
    record = runs.read_record(run)
    assert {key: getattr(record.train, key) for key in PAPER_TRAINING} == PAPER_TRAINING
    assert record.inputs.subtypes == tuple(PAPER_SUBTYPES)
    split = runs.read_split(run)
    assert len(split) == 34 and not any(labels[p] == "Normal" for p in split.index)  # Normal-like left out
    assert record.epochs == len(pd.read_csv(run / runs.HISTORY)) <= 150


def _diverging(n: int = 60, seed: int = 0):
    """Features and targets whose validation rows (the ones `validation_rows` holds back at the paper's
    10%) have the training rows' mapping reversed: the better the head fits the training patients, the
    worse its validation loss, from the first epoch on, while its training loss keeps falling."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    y = 5.0 * x @ rng.normal(size=(16, 6)).astype(np.float32)
    val = validation_rows(n, 0.1, 0)
    y[val] = -y[val]
    return x, y, val


def test_training_stops_on_validation_loss_after_4_epochs_without_gain_and_keeps_the_best():
    """Adam 1e-3, MSE, minibatches of 12, early stopping on the validation patients' loss with patience 4
    that restores the best weights. Stopping on the training loss would run to max_epochs; any other
    patience stops at another epoch; without restoring, the model would be the last epoch's."""
    x, y, val = _diverging()
    model, history = fit_head(x, y, TrainConfig(max_epochs=30))
    assert history["loss"].is_monotonic_decreasing and history["val_loss"].is_monotonic_increasing
    assert len(history) == 1 + 4  # the best epoch is the first; four more without gain
    restored = float(np.mean((model(x[val][:, None, :], training=False).numpy() - y[val]) ** 2))
    assert restored == pytest.approx(history["val_loss"].iloc[0], rel=1e-4)
    assert restored < history["val_loss"].iloc[-1] * 0.99
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3, rel=1e-6)
    assert model.loss == "mse"
    n_train = int((~val).sum())
    assert int(model.optimizer.iterations.numpy()) == len(history) * math.ceil(n_train / 12)  # batches of 12


def test_validation_patients_are_the_papers_10_percent():
    for n in (10, 54, 335):
        assert validation_rows(n, TrainConfig().validation_fraction, 0).sum() == max(1, round(n / 10))


def test_the_subtype_classifier_soft_votes_over_the_papers_four_members():
    """Section 2.6: random forest, MLP, LDA and logistic regression, soft voting with equal weights (a
    class probability is the mean of the members'). Dropping a member or hard voting changes it."""
    from sklearn.datasets import make_classification
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from hist2rna_tf.analysis.subtype import voting_classifier
    from hist2rna_tf.config import PAPER_SUBTYPES as SUBTYPES

    assert list(SUBTYPES) == PAPER_SUBTYPES
    x, y = make_classification(n_samples=160, n_features=12, n_informative=6, n_classes=4, random_state=0)
    model = voting_classifier().fit(x, y)
    assert model.voting == "soft" and model.weights is None
    members = {name: (m.steps[-1][1] if hasattr(m, "steps") else m) for name, m in model.named_estimators_.items()}
    assert len(members) == 4 and {type(m) for m in members.values()} == {
        RandomForestClassifier, MLPClassifier, LinearDiscriminantAnalysis, LogisticRegression}, members
    assert members["rf"].n_estimators == 300
    mean = np.mean([m.predict_proba(x) for m in model.estimators_], axis=0)
    np.testing.assert_allclose(model.predict_proba(x), mean, rtol=1e-10)


def test_predicting_with_a_random_weight_model_warns(cli_run, tmp_path, capsys):
    """The run's features came from a known backbone with random weights (--weights none): predictions
    from it demonstrate the pipeline, not biology, and `predict` says so."""
    run, _ = cli_run
    assert main(["predict", "--model", str(run), "--features", str(run.parent / "features" / "efficientnetv2s"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert "random weights" in capsys.readouterr().err
