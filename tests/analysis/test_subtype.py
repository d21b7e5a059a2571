"""PAM50 nearest-centroid calls on real TCGA-BRCA RNA-seq against the TCGA labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hist2rna_tf.analysis.subtype import centroid_calls, pam50_centroids
from hist2rna_tf.expression import ExpressionError, log2_expression, read_expression, read_labels


@pytest.fixture(scope="module")
def tcga(reference_data):
    expression = log2_expression(read_expression(reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv"))
    labels = read_labels(reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv").reindex(expression.index)
    keep = labels.notna()
    return expression[keep], labels[keep]


def test_centroids_cover_the_pam50_genes():
    centroids = pam50_centroids()
    assert centroids.shape == (50, 5) and {"ORC6", "NDC80", "NUF2"} <= set(centroids.index)


def test_calls_agree_with_tcga_labels(tcga):
    expression, labels = tcga
    calls = centroid_calls(expression)
    agreement = (calls["call"] == labels).mean()
    # ../shared/README.md: naive median-centring on TCGA RSEM agrees ~70%; Basal almost always.
    assert 0.65 <= agreement <= 0.85, agreement
    basal = labels == "Basal"
    assert (calls.loc[basal, "call"] == "Basal").mean() > 0.9
    sample = expression.index[0]
    centred = expression - expression.median()
    genes = pam50_centroids().index
    expected = stats.spearmanr(centred.loc[sample, genes], pam50_centroids()["LumA"]).statistic
    assert calls.loc[sample, "LumA"] == pytest.approx(expected)


REFERENCE = Path(__file__).resolve().parents[1] / "data" / "pam50"  # hoadley-lab/pam50's own test data and output
REFERENCE_NAMES = {"basal": "Basal", "her2": "Her2", "luminal_a": "LumA", "luminal_b": "LumB", "normal": "Normal"}


def test_calls_with_missing_values_equal_the_reference_implementation(tmp_path, capsys):
    """hoadley-lab/pam50's 200 microarray samples, 99 of them missing some of 217 values: every call and
    every correlation equal the reference's (pairwise-complete Spearman, medians over the samples that
    have each gene), and the output says how many genes each call used."""
    from hist2rna_tf.cli import main

    out = tmp_path / "calls.csv"
    assert main(["subtype", "--method", "centroid", "--no-log", "--expression",
                 str(REFERENCE / "pam50_testdata.tsv"), "--out", str(out)]) == 0
    ours = pd.read_csv(out, index_col=0)
    theirs = pd.read_csv(REFERENCE / "pam50_testdata_assignments.tsv", sep="\t", index_col=0).reindex(ours.index)
    assert len(ours) == 200 and ours["call"].notna().all()
    assert (ours["call"] == theirs["assignment"].map(REFERENCE_NAMES)).all()
    for name, column in REFERENCE_NAMES.items():
        np.testing.assert_allclose(ours[column], theirs[name], rtol=0, atol=1e-9, err_msg=column)
    table = pd.read_csv(REFERENCE / "pam50_testdata.tsv", sep="\t", index_col=0)
    np.testing.assert_array_equal(ours["n_genes"], table.notna().sum(axis=0).reindex(ours.index))
    assert (ours["n_genes"] < 50).sum() == 99 and ours["n_genes"].min() == 44
    assert "called on fewer than 50" in capsys.readouterr().out


def test_a_sample_with_too_few_genes_is_refused(tmp_path, capsys):
    from hist2rna_tf.cli import main

    table = pd.read_csv(REFERENCE / "pam50_testdata.tsv", sep="\t", index_col=0)
    table.iloc[:20, 4] = np.nan  # S5 keeps 30 of the 50 genes
    table.to_csv(tmp_path / "sparse.tsv", sep="\t")
    assert main(["subtype", "--no-log", "--expression", str(tmp_path / "sparse.tsv"), "--out",
                 str(tmp_path / "calls.csv")]) == 2
    err = capsys.readouterr().err
    assert "S5 (30)" in err and "fewer than 40 of the 50 PAM50 genes" in err
    assert not (tmp_path / "calls.csv").exists()
    with pytest.raises(ExpressionError, match="S5"):
        centroid_calls(table.T, min_genes=31)
    assert centroid_calls(table.T, min_genes=30).loc["S5", "n_genes"] == 30


def test_shuffled_genes_lose_the_agreement(tcga):
    expression, labels = tcga
    shuffled = expression.copy()
    shuffled.columns = np.random.default_rng(0).permutation(expression.columns)
    assert (centroid_calls(shuffled)["call"] == labels).mean() < 0.5


def test_too_few_genes_is_an_error(tcga):
    expression, _ = tcga
    with pytest.raises(ExpressionError, match="of the 50 PAM50 genes"):
        centroid_calls(expression.iloc[:, :20])
    assert isinstance(centroid_calls(expression.iloc[:5]), pd.DataFrame)


def test_subtype_command(reference_data, tmp_path, capsys):
    from hist2rna_tf.cli import main

    out = tmp_path / "calls.csv"
    assert main(["subtype", "--expression", str(reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv"),
                 "--out", str(out)]) == 0
    calls = pd.read_csv(out, index_col=0)
    assert list(calls.columns) == ["call", "n_genes", "Basal", "Her2", "LumA", "LumB", "Normal"] and len(calls) == 1093
    assert "1093 samples" in capsys.readouterr().out


def test_voting_classifier_on_measured_expression(tcga):
    """Sanity of the paper's classifier on measured RNA-seq (the upper bound for predicted genes)."""
    from hist2rna_tf.analysis.subtype import fit_and_score_voting
    from hist2rna_tf.config import PAPER_SUBTYPES
    from hist2rna_tf.expression import stratified_split

    expression, labels = tcga
    keep = labels.isin(PAPER_SUBTYPES)
    expression, labels = expression[keep], labels[keep]
    split = stratified_split(labels, seed=0)
    train, test = split == "train", split == "test"
    metrics, probabilities = fit_and_score_voting(expression[train], labels[train], expression[test], labels[test])
    assert metrics["accuracy"] > 0.75 and metrics["macro_f1"] > 0.65
    assert metrics["auroc"]["Basal"] > 0.95 and min(metrics["auroc"].values()) > 0.8
    assert metrics["confusion"].to_numpy().sum() == test.sum()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    shuffled, _ = fit_and_score_voting(expression[train], labels[train].sample(frac=1, random_state=0).set_axis(
        labels[train].index), expression[test], labels[test])
    assert shuffled["accuracy"] < metrics["accuracy"] - 0.2


def test_ror_subtype_scores_rank_the_subtypes(tcga):
    from hist2rna_tf.analysis.subtype import ror_subtype_scores

    expression, labels = tcga
    calls = centroid_calls(expression)
    ror = ror_subtype_scores(calls)
    by_label = ror["ror_s"].groupby(labels).median()
    assert by_label["LumA"] < by_label["LumB"] and by_label["LumA"] < by_label["Basal"]
    assert set(ror["ror_group"]) <= {"low", "intermediate", "high"}
    assert (ror.loc[labels == "LumA", "ror_group"] == "low").mean() > (ror.loc[labels == "Basal", "ror_group"] == "low").mean()
    sample = calls.index[0]  # the formula, by hand: 0.0421 Basal + 0.1247 Her2 - 0.3524 LumA + 0.1421 LumB
    by_hand = (0.04210193 * calls.loc[sample, "Basal"] + 0.12466938 * calls.loc[sample, "Her2"]
               - 0.35235561 * calls.loc[sample, "LumA"] + 0.14213283 * calls.loc[sample, "LumB"])
    assert ror.loc[sample, "ror_s"] == pytest.approx(by_hand)


def test_subtype_command_voting(reference_data, tmp_path, capsys):
    """`--method voting`: trained on one part of TCGA (raw RSEM, logged for it), applied to another part."""
    from hist2rna_tf.cli import main
    from hist2rna_tf.expression import read_expression, read_labels, to_patients

    labels_file = reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv"
    raw = to_patients(read_expression(reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv"))
    raw.iloc[:700].rename_axis("PATIENT_ID").to_csv(tmp_path / "reference.csv")
    raw.iloc[700:].rename_axis("PATIENT_ID").to_csv(tmp_path / "cohort.csv")
    out = tmp_path / "calls.csv"
    args = ["subtype", "--method", "voting", "--expression", str(tmp_path / "cohort.csv"), "--out", str(out)]
    assert main(args) == 2
    assert "--reference-expression" in capsys.readouterr().err
    assert main([*args, "--reference-expression", str(tmp_path / "reference.csv"),
                 "--reference-labels", str(labels_file)]) == 0
    calls = pd.read_csv(out, index_col=0)
    assert list(calls.columns) == ["call", "p_Basal", "p_Her2", "p_LumA", "p_LumB"] and len(calls) == len(raw) - 700
    truth = read_labels(labels_file).reindex(calls.index)
    known = truth.isin(["LumA", "LumB", "Basal", "Her2"])
    assert (calls["call"][known] == truth[known]).mean() > 0.75
    # Each table its own scale: the cohort given logged (as predicted genes are) with --no-log, the
    # reference raw: the same calls. Without --no-log the scales differ, and a warning says so.
    import numpy as np

    np.log2(1 + raw.iloc[700:]).rename_axis("PATIENT_ID").to_csv(tmp_path / "logged.csv")
    logged = [*args[:4], str(tmp_path / "logged.csv"), *args[5:], "--reference-expression",
              str(tmp_path / "reference.csv"), "--reference-labels", str(labels_file), "--overwrite"]
    assert main([*logged, "--no-log"]) == 0
    pd.testing.assert_series_equal(pd.read_csv(out, index_col=0)["call"], calls["call"])
    capsys.readouterr()
    assert main(logged) == 0
    assert "on the same scale" in capsys.readouterr().err


def test_luminal_calls_separate_measured_luma_from_lumb(tcga):
    """LumA vs LumB from PAM50 genes (the paper's reclassification), trained on half the luminal
    patients and applied to the other half's measured genes; shuffled labels lose it."""
    from hist2rna_tf.analysis.subtype import luminal_calls
    from hist2rna_tf.errors import ClinicalError

    expression, labels = tcga
    luminal = labels[labels.isin(["LumA", "LumB"])]
    train, test = luminal.index[::2], luminal.index[1::2]
    calls = luminal_calls(expression.loc[test], expression.loc[train], labels.loc[train])
    assert list(calls.columns) == ["call", "p_LumB"] and set(calls["call"]) == {"LumA", "LumB"}
    accuracy = (calls["call"] == labels.loc[test]).mean()
    assert accuracy > 0.75
    shuffled = luminal_calls(expression.loc[test], expression.loc[train],
                             labels.loc[train].sample(frac=1, random_state=0).set_axis(train))
    assert (shuffled["call"] == labels.loc[test]).mean() < accuracy - 0.1
    with pytest.raises(ClinicalError, match="both luminal subtypes"):
        luminal_calls(expression.loc[test], expression.loc[train], labels.loc[train].replace("LumB", "LumA"))
