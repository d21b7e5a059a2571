"""SEQUOIA's test of a well-predicted gene, exact to their evaluation script (evaluate_model.py run as
it stands on the same predictions: tests/fixtures/make_head_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.analysis.sequoia import COLUMNS, gene_table, significant, steiger_p, summary


@pytest.fixture(scope="module")
def theirs(reference_data):
    folder = reference_data / "heads" / "sequoia_evaluation"
    tables = {name: pd.read_csv(folder / f"{name}.csv", index_col=0) for name in ("real", "pred", "random")}
    return tables, pd.read_csv(folder / "all_genes.csv", index_col=0), pd.read_csv(folder / "sig_genes.csv", index_col=0)


def test_the_gene_table_is_exact_to_sequoias_script(theirs):
    tables, all_genes, sig_genes = theirs
    ours = gene_table(tables["real"], tables["pred"], tables["random"])
    assert list(ours.columns) == COLUMNS == [c for c in all_genes.columns if c != "cancer"]
    assert sorted(ours.index) == sorted(all_genes.index)
    # Where a prediction is constant their script keeps the previous gene's random_real_r (`xy, xy, yz = 0, 0,
    # 0` leaves xz as it was); ours is that gene's own. Every other cell is theirs.
    constant = all_genes.index == "GENE07"
    expected = all_genes[COLUMNS].copy()
    expected.loc[constant, "random_real_r"] = np.corrcoef(tables["real"]["GENE07"], tables["random"]["GENE07"])[0, 1]
    np.testing.assert_allclose(ours.loc[all_genes.index, COLUMNS].to_numpy(), expected.to_numpy(), rtol=1e-9,
                               atol=1e-12)
    assert list(ours["pred_real_r"]) == sorted(ours["pred_real_r"], reverse=True)
    assert sorted(significant(ours).index) == sorted(sig_genes.index)
    assert 0 < len(sig_genes) < len(all_genes)  # the fixture has genes on both sides
    assert ours.loc["GENE07", "pred_real_r"] == 0 and ours.loc["GENE07", "Steiger_p"] == 1  # constant prediction


def test_a_model_no_better_than_its_random_twin_has_no_significant_gene(theirs):
    tables, _, _ = theirs
    table = gene_table(tables["real"], tables["random"] + 0.0, tables["random"])
    assert len(significant(table)) == 0
    figures = summary(gene_table(tables["real"], tables["pred"], tables["random"]))
    assert figures["total"] == 40 and figures["significant"] == 23
    assert figures["r_above_0.4"] >= figures["significant"] // 2


def test_steiger_is_one_tailed_and_symmetric_in_sign():
    assert steiger_p(0.6, 0.1, 0.2, 50) == pytest.approx(steiger_p(0.1, 0.6, 0.2, 50))
    assert steiger_p(0.6, 0.1, 0.2, 50) < 0.01 < steiger_p(0.3, 0.25, 0.2, 50)
