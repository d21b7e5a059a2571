"""Sites and site-preserved folds (analysis/sites.py, issue 38): a TCGA barcode's tissue source site;
folds that keep every site whole and reach the least of Howard's objective (checked against every
assignment of a small cohort's sites); the cohorts that cannot be split named with the site and its share."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.analysis.sites import site_preserved_folds, tcga_site
from hist2rna_tf.errors import CrossvalError


def _cohort(sizes: list[int], seed: int = 0, classes=("LumA", "LumB", "Basal", "Her2")):
    """Sites of the given sizes, each with its own mix of classes."""
    rng = np.random.default_rng(seed)
    labels, sites = {}, {}
    for s, size in enumerate(sizes):
        mix = rng.dirichlet(np.ones(len(classes)))
        for i in range(size):
            patient = f"TCGA-{s:02d}-{i:04d}"
            labels[patient], sites[patient] = rng.choice(classes, p=mix), f"S{s:02d}"
    return pd.Series(labels), pd.Series(sites)


def _exhaustive(labels: pd.Series, sites: pd.Series, k: int) -> float:
    """The least objective over every assignment of the sites to k non-empty folds (numpy, all at once)."""
    table = pd.crosstab(sites, labels).to_numpy()  # sites x classes
    assignments = np.array(list(itertools.product(range(k), repeat=len(table))))
    assignments = assignments[[len(set(a)) == k for a in assignments]]
    one_hot = np.eye(k)[assignments]  # [M, sites, k]
    counts = np.einsum("msf,sc->mfc", one_hot, table)
    return float((((k * counts - table.sum(axis=0)) ** 2).sum(axis=(1, 2))).min())


def test_a_tcga_barcode_names_its_site():
    assert tcga_site("TCGA-A2-A04R") == "A2" and tcga_site("tcga-e2-a15k-01z") == "E2"
    assert tcga_site("demo-01") is None


@pytest.mark.parametrize("sizes, k, seed", [([9, 7, 7, 6, 5, 4, 3, 2], 3, 0), ([8, 8, 6, 5, 5, 4, 2, 1], 3, 1),
                                            ([6, 6, 5, 5, 4, 3, 3, 2], 2, 2)])
def test_site_preserved_folds_reach_the_optimum_and_keep_each_site_whole(sizes, k, seed):
    labels, sites = _cohort(sizes, seed)
    result = site_preserved_folds(labels, sites, k)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(_exhaustive(labels, sites, k))  # the least of every assignment
    assert (result.folds.groupby(sites).nunique() == 1).all() and set(result.folds) == set(range(1, k + 1))
    again = site_preserved_folds(labels, sites, k)
    assert again.folds.equals(result.folds)  # deterministic


def test_a_cohort_that_cannot_be_split_names_the_site_and_its_share():
    labels, sites = _cohort([20, 5, 5, 4])
    with pytest.raises(CrossvalError, match=r"site S00 holds 20 of the 34 patients \(59%\), more than a fold's 1/3"):
        site_preserved_folds(labels, sites, 3)
    labels, sites = _cohort([5, 5])
    with pytest.raises(CrossvalError, match=r"2 site\(s\) \(S00, S01\), fewer than the folds"):
        site_preserved_folds(labels, sites, 3)


def test_the_folds_command_writes_site_preserved_and_patient_level_folds(tmp_path, capsys):
    """`hist2rna folds`: each patient's label, site and fold, the objective and the solver's word beside;
    site-preserved folds keep every site whole, patient-level ones do not; a bad cohort is one line."""
    import json

    from hist2rna_tf.cli import main

    labels, sites = _cohort([9, 7, 7, 6, 5, 4, 3, 2], seed=3)
    table = tmp_path / "clinical.csv"
    pd.DataFrame({"PATIENT": labels.index, "BRCA_Subtype_PAM50": labels.to_numpy(),
                  "centre": sites.to_numpy()}).to_csv(table, index=False)
    out = tmp_path / "folds.csv"
    assert main(["folds", "--labels", str(table), "--folds", "3", "--site-preserved", "--out", str(out)]) == 0
    assert "in 3 site-preserved folds: Howard's objective" in capsys.readouterr().out
    written = pd.read_csv(out, dtype=str)
    assert list(written.columns) == ["patient_id", "label", "site", "fold"] and len(written) == len(labels)
    assert (written.groupby("site")["fold"].nunique() == 1).all() and set(written["site"]) == {f"{s:02d}" for s in
                                                                                               range(8)}
    assert json.loads(out.with_suffix(".json").read_text())["status"] == "optimal"
    by_column = tmp_path / "by_column.csv"  # sites from a column: the same folds as from the barcodes here
    assert main(["folds", "--labels", str(table), "--folds", "3", "--site-preserved", "--site-column", "centre",
                 "--out", str(by_column)]) == 0
    assert pd.read_csv(by_column, dtype=str)["fold"].equals(written["fold"])
    plain = tmp_path / "plain.csv"
    assert main(["folds", "--labels", str(table), "--folds", "3", "--out", str(plain)]) == 0
    assert (pd.read_csv(plain, dtype=str).groupby("site")["fold"].nunique() > 1).any()  # sites split
    capsys.readouterr()
    assert main(["folds", "--labels", str(table), "--folds", "5", "--site-preserved", "--out",
                 str(tmp_path / "x.csv")]) == 2  # a site over a fold's 1/5
    assert "site 00 holds 9 of the 43 patients (21%)" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    (tmp_path / "mine.json").write_text("my notes")  # a file of the user's where the summary would go: refused
    assert main(["folds", "--labels", str(table), "--folds", "3", "--out", str(tmp_path / "mine.csv")]) == 2
    assert "mine.json" in capsys.readouterr().err and (tmp_path / "mine.json").read_text() == "my notes"
    assert not (tmp_path / "mine.csv").exists()
    other = tmp_path / "other.csv"  # patient-level folds of a cohort whose patients name no site: the site blank
    pd.DataFrame({"PATIENT": [f"P{i}" for i in range(len(labels))], "BRCA_Subtype_PAM50": labels.to_numpy()}).to_csv(
        other, index=False)
    assert main(["folds", "--labels", str(other), "--folds", "3", "--out", str(tmp_path / "o.csv")]) == 0
    assert pd.read_csv(tmp_path / "o.csv")["site"].isna().all()


def test_a_column_of_patients_is_not_a_column_of_sites():
    sites = pd.Series([f"P{i}" for i in range(9)], index=[f"P{i}" for i in range(9)])
    labels = pd.Series(["LumA", "Basal", "Her2"] * 3, index=sites.index)
    with pytest.raises(CrossvalError, match="each of the 9 patients has a site of its own.*not of patients"):
        site_preserved_folds(labels, sites, 3)


def test_per_site_figures_flag_the_site_the_model_reads_otherwise():
    """Five sites of 8 patients; at site E the predictions are another patient's: its median Spearman
    across genes falls to about 0 and it is the site named."""
    from hist2rna_tf.analysis.sites import is_site_preserved, most_different_site, per_site_figures

    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(40)]
    sites = pd.Series(np.repeat(list("ABCDE"), 8), index=patients)
    measured = pd.DataFrame(rng.normal(size=(40, 30)), index=patients)
    predicted = measured + 0.5 * rng.normal(size=(40, 30))
    predicted.iloc[32:] = predicted.iloc[32:].to_numpy()[rng.permutation(8)]  # site E's rows between its patients
    figures = per_site_figures(predicted, measured, sites)
    assert list(figures["patients"]) == [8] * 5 and figures.loc["A", "median_rho_genes"] > 0.6
    site, value, middle = most_different_site(figures)
    assert site == "E" and value < 0.3 < middle
    folds = pd.Series(np.repeat([1, 2, 3, 1, 2], 8), index=patients)
    assert is_site_preserved(folds, sites) and not is_site_preserved(pd.Series(np.arange(40) % 3, index=patients),
                                                                      sites)


def test_the_gap_between_folds_of_other_patients_is_welch_s():
    """The fold medians of two crossvals are unpaired: the difference's CI is Welch's (scipy's)."""
    from scipy import stats

    from hist2rna_tf.analysis.sites import welch_difference

    a, b = [0.62, 0.58, 0.71, 0.66, 0.6], [0.41, 0.52, 0.37, 0.5]
    difference, low, high = welch_difference(a, b)
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference == pytest.approx(np.mean(a) - np.mean(b)) and (low, high) == pytest.approx(
        (interval.low, interval.high), rel=1e-12)
