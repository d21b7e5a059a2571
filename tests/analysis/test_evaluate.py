"""Section 2.5 metrics against scipy and scikit-learn, on real TCGA expression with noisy 'predictions'."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hist2rna_tf.analysis.evaluate import across_genes, across_patients, r_squared, summary
from hist2rna_tf.expression import log2_expression, read_expression


@pytest.fixture(scope="module")
def truth_and_prediction(reference_data):
    truth = log2_expression(read_expression(reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv")).iloc[:160]
    rng = np.random.default_rng(0)
    # a 'prediction' that tracks the truth for half of the genes and is noise for the others
    noise = rng.normal(0, truth.std().to_numpy() * np.r_[np.full(25, 0.7), np.full(25, 8.0)], truth.shape)
    return truth + noise, truth


def test_across_genes_matches_scipy(truth_and_prediction):
    predicted, truth = truth_and_prediction
    table = across_genes(predicted, truth)
    assert list(table.index) == list(truth.columns) and (table["n"] == 160).all()
    for gene in ("ESR1", "NDC80", truth.columns[-1]):
        reference = stats.spearmanr(predicted[gene], truth[gene])
        assert table.loc[gene, "rho"] == pytest.approx(reference.statistic)
        assert table.loc[gene, "p"] == pytest.approx(reference.pvalue, rel=1e-6, abs=0)  # no absolute slack for tiny p
    np.testing.assert_allclose(table["fdr"], stats.false_discovery_control(table["p"], method="bh"))
    s = summary(table)
    assert 20 <= s["significant"] <= 40 and s["total"] == 50  # the tracked half, plus chance
    assert table["rho"].iloc[:25].median() > 0.5 > table["rho"].iloc[25:].abs().median()


def test_across_patients_is_per_patient(truth_and_prediction):
    predicted, truth = truth_and_prediction
    table = across_patients(predicted, truth)
    assert list(table.index) == list(truth.index) and (table["n"] == 50).all()
    patient = truth.index[7]
    assert table.loc[patient, "rho"] == pytest.approx(stats.spearmanr(predicted.loc[patient], truth.loc[patient]).statistic)
    tracked = truth.columns[:25]  # where the prediction follows the truth, each patient's gene ranking is kept
    assert summary(across_patients(predicted[tracked], truth[tracked]))["median"] > 0.8


def test_r_squared_matches_sklearn_and_is_negative_for_noise(truth_and_prediction):
    from sklearn.metrics import r2_score

    predicted, truth = truth_and_prediction
    r2 = r_squared(predicted, truth)
    assert r2["ESR1"] == pytest.approx(r2_score(truth["ESR1"], predicted["ESR1"]))
    assert (r2.iloc[25:] < 0).all() and (r2.iloc[:25] >= 0.1).sum() >= 20


def test_constant_prediction_gives_nan_with_a_warning(truth_and_prediction, caplog):
    predicted, truth = truth_and_prediction
    flat = predicted.copy()
    flat["ESR1"] = 5.0
    with caplog.at_level(logging.WARNING):
        table = across_genes(flat, truth)
    assert np.isnan(table.loc["ESR1", "rho"]) and np.isnan(table.loc["ESR1", "fdr"])
    assert table["fdr"].notna().sum() == 49 and "constant" in caplog.text
    with pytest.raises(ValueError, match="at least 3 shared patients"):
        across_genes(predicted.iloc[:2], truth)


def test_bootstrap_ci_brackets_the_median_and_narrows_with_more_patients():
    from scipy import stats

    from hist2rna_tf.analysis.evaluate import _column_spearman, bootstrap_median_ci

    def cohort(n):
        rng = np.random.default_rng(n)
        truth = pd.DataFrame(rng.normal(size=(n, 30)))
        return truth + rng.normal(scale=1.5, size=truth.shape), truth

    small, large = bootstrap_median_ci(*cohort(30), n_boot=300), bootstrap_median_ci(*cohort(300), n_boot=300)
    for ci in (small, large):
        assert ci["ci_low"] < ci["median"] < ci["ci_high"]
    assert large["ci_high"] - large["ci_low"] < 0.6 * (small["ci_high"] - small["ci_low"])
    assert 0.4 < large["median"] < 0.65  # r = 1/sqrt(1 + 1.5^2) = 0.55
    predicted, truth = cohort(40)
    np.testing.assert_allclose(_column_spearman(predicted.to_numpy(), truth.to_numpy()),
                               [stats.spearmanr(predicted[c], truth[c]).statistic for c in truth.columns])
    patients = bootstrap_median_ci(predicted, truth, over="patients", n_boot=300)
    assert patients["ci_low"] < patients["median"] < patients["ci_high"]
