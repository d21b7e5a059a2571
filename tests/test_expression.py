"""Expression targets on real TCGA-BRCA RNA-seq: panel, readers, log2(1+x), barcodes, joins, splits."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.expression import (ExpressionError, alias_map, average_by_patient, join_patients, load_panel,
                                    load_split, log2_expression, read_expression, read_labels, save_split, select_genes,
                                    stratified_split, to_patients)


@pytest.fixture(scope="module")
def rsem_path(reference_data):
    return reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv"


def test_panel_sizes_and_aliases(tmp_path):
    assert len(load_panel("panel")) == 138 and len(set(load_panel("panel"))) == 138
    assert len(load_panel("pam50")) == 50 and len(load_panel("oncotype")) == 21
    aliases = alias_map()
    assert aliases["ORC6L"] == "ORC6" and aliases["KNTC2"] == "NDC80" and aliases["CDCA1"] == "NUF2"
    listed = tmp_path / "genes.txt"
    listed.write_text("ESR1\nORC6L\nKNTC2\n")
    assert load_panel(str(listed)) == ["ESR1", "ORC6", "NDC80"]
    with pytest.raises(ExpressionError, match="not 'panel', 'all'"):
        load_panel("nonsense")


def test_tidy_and_cbioportal_layouts_agree(rsem_path, tmp_path):
    tidy = read_expression(rsem_path)
    assert tidy.shape == (1093, 50) and tidy.index[0] == "TCGA-3C-AAAU"
    # The same values in cBioPortal's layout: genes as rows, samples as columns, an old symbol.
    cbio = tidy.iloc[:20].T.rename(index={"NUF2": "CDCA1"})
    cbio.columns = [f"{p}-01" for p in cbio.columns]
    cbio.insert(0, "Entrez_Gene_Id", range(len(cbio)))
    cbio.insert(0, "Hugo_Symbol", cbio.index)
    path = tmp_path / "data_mrna_seq_v2_rsem.txt"
    cbio.to_csv(path, sep="\t", index=False)
    loaded = to_patients(read_expression(path))
    pd.testing.assert_frame_equal(loaded[tidy.columns], tidy.iloc[:20], check_names=False)


def test_log2_and_its_checks(rsem_path, caplog):
    raw = read_expression(rsem_path)
    logged = log2_expression(raw)
    np.testing.assert_allclose(logged.to_numpy(), np.log2(1 + raw.to_numpy()))
    with pytest.raises(ExpressionError, match="negative"):
        log2_expression(raw - 10)
    with caplog.at_level(logging.WARNING):
        log2_expression(logged)
    assert "already logged" in caplog.text


def test_missing_genes_are_listed_or_dropped(rsem_path):
    raw = read_expression(rsem_path)
    with pytest.raises(ExpressionError, match="88 of 138 genes missing") as info:
        select_genes(raw, load_panel("panel"))
    assert "ACTB" in str(info.value)
    kept, missing = select_genes(raw, load_panel("panel"), drop_missing=True)
    assert kept.shape[1] == 50 and len(missing) == 88
    assert list(kept.columns) == [g for g in load_panel("panel") if g in raw.columns]


def test_primary_tumours_and_repeated_samples():
    table = pd.DataFrame({"ESR1": [10.0, 30.0, 999.0, 5.0]},
                         index=["TCGA-AA-0001-01A", "TCGA-AA-0001-01B", "TCGA-AA-0001-11A", "TCGA-BB-0002-01"])
    patients = to_patients(table)
    assert patients.loc["TCGA-AA-0001", "ESR1"] == 20.0  # normal tissue (11) left out, tumours averaged
    assert list(patients.index) == ["TCGA-AA-0001", "TCGA-BB-0002"]


def test_stratified_split_in_the_paper_proportions(reference_data, tmp_path):
    labels = read_labels(reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv").dropna()
    labels = labels[labels.isin(["LumA", "LumB", "Basal", "Her2"])]
    split = stratified_split(labels, seed=1)
    assert split.value_counts()["test"] / len(split) == pytest.approx(160 / 495, abs=0.01)
    for label in ("LumA", "LumB", "Basal", "Her2"):
        members = split[labels == label]
        assert (members == "test").mean() == pytest.approx(160 / 495, abs=0.02)
    assert (stratified_split(labels, seed=1) == split).all() and not (stratified_split(labels, seed=2) == split).all()
    path = save_split(split, labels, tmp_path / "split.csv")
    assert (load_split(path) == split).all()


def test_slides_join_patients_and_report_the_rest():
    slides = pd.DataFrame([[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], index=["s1", "s2", "s3"])
    patients = pd.Series(["TCGA-AA-0001", "TCGA-AA-0001", "TCGA-CC-0003"], index=slides.index)
    features = average_by_patient(slides, patients)
    np.testing.assert_array_equal(features.loc["TCGA-AA-0001"].to_numpy(), [2.0, 3.0])
    targets = pd.DataFrame({"ESR1": [1.0, 2.0]}, index=["TCGA-AA-0001", "TCGA-BB-0002"])
    x, y, report = join_patients(features, targets)
    assert list(x.index) == list(y.index) == ["TCGA-AA-0001"]
    assert report["features_without_expression"] == ["TCGA-CC-0003"]
    assert report["expression_without_features"] == ["TCGA-BB-0002"]
    with pytest.raises(ExpressionError, match="no patient has both"):
        join_patients(features.rename(index=lambda i: i.lower()), targets)


def test_genes_all_is_every_gene_of_the_table_and_panel_the_papers_138():
    from hist2rna_tf.expression import run_genes

    table = pd.DataFrame(np.ones((2, 300)), columns=[f"G{k}" for k in range(300)])
    assert run_genes("all", table, "t.csv") == list(table.columns)
    assert run_genes("panel", table, "t.csv") == load_panel() and len(load_panel()) == 138
    assert run_genes("pam50", table, "t.csv") == load_panel("pam50")
    with pytest.raises(ExpressionError, match="t.csv: --genes all takes every gene of the table, and it has 3"):
        run_genes("all", table.iloc[:, :3], "t.csv")
