"""`hist2rna train` end to end on stored feature records: joins, split, run folder, learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from hist2rna_tf.cli import main
from hist2rna_tf.expression import load_panel
from hist2rna_tf.model import runs

from synthetic import record, write_expression, write_labels, write_records


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """120 patients whose features and PAM50 expression share a 3-d latent; one patient has two slides,
    one slide has no expression, one expressed patient has no slide."""
    root = tmp_path_factory.mktemp("train_cohort")
    rng = np.random.default_rng(0)
    n, genes = 120, load_panel("pam50")
    latent = rng.normal(size=(n, 3))
    features = np.tanh(latent @ rng.normal(size=(3, 48))) + 0.1 * rng.normal(size=(n, 48))
    log2 = 8 + latent @ rng.normal(size=(3, len(genes))) + 0.3 * rng.normal(size=(n, len(genes)))
    patients = [f"TCGA-ZZ-{i:04d}" for i in range(n)]
    records = [record(f"{patient}-01Z-00-DX1", features[i]) for i, patient in enumerate(patients[:-1])]
    records += [record(f"{patients[0]}-01Z-00-DX2", features[0]),  # a patient with two slides
                record("TCGA-YY-9999-01Z-00-DX1", features[1])]  # a slide without expression
    write_records(root / "features", records)  # the last patient has expression but no slide
    write_expression(root / "expression.csv", pd.DataFrame(log2, index=patients, columns=genes))
    write_labels(root / "clinical.csv", patients)
    return root


def test_train_command_writes_a_self_describing_run(cohort, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--features", str(cohort / "features" / "efficientnetv2s"), "--expression",
            str(cohort / "expression.csv"), "--labels", str(cohort / "clinical.csv"), "--genes", "pam50",
            "--out", str(run), "--max-epochs", "80"]
    assert main(args) == 0
    for name in (*runs.REQUIRED, runs.HISTORY, *runs.METRICS.values()):
        assert (run / name).is_file(), name
    record = runs.read_record(run)
    report = record.join_report
    assert report["features_without_expression"] == ["TCGA-YY-9999"]
    assert report["expression_without_features"] == ["TCGA-ZZ-0119"]
    assert record.patients["train"] + record.patients["test"] == 119
    assert record.patients["test"] / 119 == pytest.approx(160 / 495, abs=0.02)
    predictions, truth = runs.held_out(run)
    assert list(predictions.columns) == load_panel("pam50") == runs.read_genes(run)
    truth = truth.loc[predictions.index, predictions.columns]
    rhos = [spearmanr(predictions[g], truth[g]).statistic for g in predictions.columns]
    assert np.median(rhos) > 0.5  # the shared latent is learned from the stored features
    assert f"across genes median {np.median(rhos):.2f}" in capsys.readouterr().out
    # The training patients' measured targets are kept: the run needs its expression table no more.
    measured = np.log2(1 + pd.read_csv(cohort / "expression.csv", index_col=0))
    measured.index = measured.index.str[:12]
    train, _ = runs.training_reference(run)
    assert len(train) == record.patients["train"]
    np.testing.assert_allclose(train.to_numpy(), measured.loc[train.index, train.columns].to_numpy(), rtol=1e-12)
    # Reusing the split gives the same patients in each subset.
    again = tmp_path / "again"
    assert main(args[:-4] + ["--out", str(again), "--split", str(runs.split_path(run)), "--max-epochs", "2"]) == 0
    assert runs.read_split(again).equals(runs.read_split(run))


def test_missing_genes_stop_the_run_with_the_list(cohort, tmp_path, capsys):
    args = ["train", "--features", str(cohort / "features"), "--expression", str(cohort / "expression.csv"),
            "--labels", str(cohort / "clinical.csv"), "--genes", "panel", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "88 of 138 genes missing" in err and "--drop-missing-genes" in err


def test_training_on_random_weight_features_says_so_and_suggests_standardize(cohort, tmp_path, caplog, capsys):
    """Features of a catalog backbone with random weights (the demo's) learn nothing through the paper's
    head as it is: training says so, and what to do; with that done (--standardize), nothing more. (Its
    epochs are a progress bar, a line each in a log.)"""
    args = ["train", "--features", str(cohort / "features" / "efficientnetv2s"), "--expression",
            str(cohort / "expression.csv"), "--labels", str(cohort / "clinical.csv"), "--genes", "pam50",
            "--max-epochs", "1"]
    with caplog.at_level("WARNING"):
        assert main(args + ["--out", str(tmp_path / "raw")]) == 0
    assert "efficientnetv2s with random weights (--weights none)" in caplog.text
    assert "add --standardize" in caplog.text
    err = capsys.readouterr().err
    assert "epochs: 1/1 epoch" in err and "val_loss=" in err and "\r" not in err
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(args + ["--out", str(tmp_path / "standardized"), "--standardize"]) == 0
    assert "random weights" not in caplog.text  # what it advised is done: said once, not at every run (the demo's)


def test_running_out_of_memory_while_training_is_one_line_and_leaves_nothing(cohort, tmp_path, capsys, monkeypatch):
    """A head within the machine's memory by its estimate can still run out (other processes, a GPU's
    smaller memory): said in one line naming the head and what to do, nothing written."""
    import tensorflow as tf

    from hist2rna_tf.model import train

    def out_of_memory(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[24,99999]\nmore")

    monkeypatch.setattr(train, "fit", out_of_memory)
    code = main(["train", "--features", str(cohort / "features" / "efficientnetv2s"), "--expression",
                 str(cohort / "expression.csv"), "--labels", str(cohort / "clinical.csv"), "--genes", "pam50",
                 "--out", str(tmp_path / "run")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and not (tmp_path / "run").exists()
    assert "out of memory building or training the hist2rna head" in errors[0]
    assert "shape[24,99999]" in errors[0] and "give smaller --head-option values" in errors[0]
