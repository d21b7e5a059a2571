"""The Cox layer against R's published coxph results (lifelines' Rossi data), and the paper's cut-offs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from hist2rna_tf.analysis.survival import c_index_of_risk, cox, kaplan_meier, paper_covariates, univariate
from hist2rna_tf.errors import ClinicalError

R_COXPH_EFRON = {"fin": -0.3794, "age": -0.0574, "race": 0.3139, "wexp": -0.1498, "mar": -0.4337,
                 "paro": -0.0849, "prio": 0.0915}


def test_cox_matches_r_on_rossi():
    rossi = load_rossi()
    table, model = cox(rossi, "week", "arrest", list(R_COXPH_EFRON))
    for covariate, coef in R_COXPH_EFRON.items():
        assert table.loc[covariate, "coef"] == pytest.approx(coef, abs=5e-4)
        assert table.loc[covariate, "hr"] == pytest.approx(np.exp(coef), rel=1e-3)
        assert table.loc[covariate, "ci_low"] < table.loc[covariate, "hr"] < table.loc[covariate, "ci_high"]
    assert model["lr_statistic"] == pytest.approx(33.3, abs=0.05) and model["lr_df"] == 7
    assert model["n"] == 432 and 0.6 < model["c_index"] < 0.7


def test_univariate_and_c_index_sign():
    rossi = load_rossi()
    uni = univariate(rossi, "week", "arrest", ["prio", "fin"])
    assert uni.loc["prio", "hr"] > 1 > uni.loc["fin", "hr"]  # more priors: sooner re-arrest; aid: later
    assert uni.loc["prio", "c_index"] > 0.5 and uni.loc["fin", "c_index"] > 0.5
    # prio is a risk: as a score, higher = worse, so its c-index is above 0.5 once negated for lifelines
    assert c_index_of_risk(rossi["week"], rossi["prio"], rossi["arrest"]) > 0.5


def test_kaplan_meier_and_logrank():
    rossi = load_rossi()
    km = kaplan_meier(rossi, "week", "arrest", "fin")
    assert set(km["fits"]) == {0, 1} and km["n"] == {0: 216, 1: 216}
    assert 0.01 < km["logrank_p"] < 0.1  # financial aid: a modest difference
    assert km["fits"][1].survival_function_.iloc[-1, 0] > km["fits"][0].survival_function_.iloc[-1, 0]


def test_paper_cut_offs():
    clinical = pd.DataFrame({"grade": [1, 3, 2, 3], "size_mm": [10, 25, 20, 40], "age": [50, 60, 55, 70],
                             "node_positive": [0, 1, 0, 1], "subtype": ["LumA", "LumB", "LumA", "Basal"]})
    covariates = paper_covariates(clinical, "subtype")
    assert list(covariates.index) == [0, 1, 2]  # Basal left out
    assert covariates.loc[1].tolist() == [1, 1, 1, 1, 1] and covariates.loc[2].tolist() == [0, 0, 0, 0, 0]
    with pytest.raises(ClinicalError, match="lacks"):
        paper_covariates(clinical.drop(columns="age"), "subtype")


def test_lifelines_warnings_become_one_line_naming_the_model(caplog):
    """A covariate that separates the events completely: lifelines' convergence warnings are said once
    each, naming the model, and kept with it (the report shows them beside its table)."""
    import warnings

    rng = np.random.default_rng(0)
    separated = pd.DataFrame({"t": np.r_[rng.uniform(50, 100, 15), rng.uniform(1, 10, 15)],
                              "e": np.r_[np.zeros(15), np.ones(15)], "x": np.r_[np.zeros(15), np.ones(15)]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none escapes as a Python warning
        with caplog.at_level("WARNING"):
            _, model = cox(separated, "t", "e", ["x"])
    assert model["notes"] and any("complete separation" in note for note in model["notes"])
    assert "the Cox model of x (30 patients, 15 events)" in caplog.text
