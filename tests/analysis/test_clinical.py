"""The external-cohort layer: clinical table mapping and errors, biomarker tests, LumA/LumB moves, Tables 1-2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hist2rna_tf.analysis.clinical import (ClinicalColumns, ClinicalError, biomarker_tests, read_clinical,
                                           reclassification)
from hist2rna_tf.analysis.survival import survival_table


def _clinical(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A synthetic cohort: LumB doubles the hazard, age > 55 triples it; grade has no effect."""
    rng = np.random.default_rng(seed)
    lumb = rng.random(n) < 0.3
    age = rng.uniform(35, 80, n)
    hazard = 0.005 * np.exp(np.log(2.0) * lumb + np.log(3.0) * (age > 55))
    death, censor = rng.exponential(1 / hazard), rng.uniform(60, 150, n)
    return pd.DataFrame({
        "PATIENT": [f"P{i:03d}" for i in range(n)], "OS_M": np.minimum(death, censor).round(2),
        "DEAD": (death <= censor).astype(int), "GRADE": rng.integers(1, 4, n), "SIZE": rng.uniform(5, 50, n).round(1),
        "AGE": age.round(0), "LN": rng.choice(["pos", "neg"], n), "ER": rng.choice(["Positive", "Negative"], n),
        "PR": rng.choice(["+", "-"], n), "HER2": rng.choice(["1", "0"], n), "KI67": rng.uniform(1, 60, n).round(0),
        "SUBTYPE": np.where(lumb, "LumB", "LumA")})


MAPPING = {"patient_id": "PATIENT", "os_months": "OS_M", "os_event": "DEAD", "grade": "GRADE", "size_mm": "SIZE",
           "age": "AGE", "node_positive": "LN", "er": "ER", "pr": "PR", "her2": "HER2", "ki67_percent": "KI67",
           "ihc_subtype": "SUBTYPE"}


@pytest.fixture()
def clinical_file(tmp_path):
    path = tmp_path / "clinical.csv"
    _clinical().to_csv(path, index=False)
    mapping = tmp_path / "columns.json"
    mapping.write_text(json.dumps(MAPPING))
    return path, mapping


def test_columns_are_mapped_and_statuses_normalised(clinical_file):
    path, mapping = clinical_file
    table = read_clinical(path, ClinicalColumns.from_json(mapping))
    assert table.index.name == "patient_id" and len(table) == 400
    assert set(table["er"].unique()) == {0.0, 1.0} and set(table["pr"].unique()) == {0.0, 1.0}
    assert (table["er"] == 1).sum() == (_clinical()["ER"] == "Positive").sum()
    assert table["grade"].isin([1, 2, 3]).all()


def test_missing_and_malformed_columns_name_the_file_and_the_fix(clinical_file, tmp_path):
    path, mapping = clinical_file
    with pytest.raises(ClinicalError, match=r"clinical.csv: no column 'patient_id', 'os_months'.*Its columns are PATIENT.*--clinical-columns"):
        read_clinical(path)  # default names do not exist in this table
    partial = ClinicalColumns(**{**MAPPING, "ki67_percent": None})
    assert "ki67_percent" not in read_clinical(path, partial).columns
    bad = _clinical()
    bad.loc[3, "ER"] = "weak"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ClinicalError, match=r"bad.csv: column 'ER' has values \['weak'\]"):
        read_clinical(tmp_path / "bad.csv", ClinicalColumns(**MAPPING))
    bad = _clinical()
    bad.loc[0, "GRADE"] = 4
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ClinicalError, match="must be 1, 2 or 3"):
        read_clinical(tmp_path / "bad.csv", ClinicalColumns(**MAPPING))
    (tmp_path / "keys.json").write_text(json.dumps({"survival": "OS"}))
    with pytest.raises(ClinicalError, match="unknown keys"):
        ClinicalColumns.from_json(tmp_path / "keys.json")


def test_biomarker_tests_match_scipy(clinical_file):
    path, mapping = clinical_file
    table = read_clinical(path, ClinicalColumns.from_json(mapping))
    rng = np.random.default_rng(1)
    # ESR1 varies 4x more in ER-positive patients, and (below) they are the smaller group: there
    # Welch's and Student's p differ (the paper used Welch's).
    genes = pd.DataFrame({"ESR1": 8 + 1.5 * table["er"] + rng.normal(0, 1, len(table)) * np.where(table["er"] == 1, 2, 0.5),
                          "PGR": rng.normal(6, 1, len(table)), "ERBB2": rng.normal(9, 1, len(table)),
                          "MKI67": 5 + 0.5 * table["grade"] + 0.02 * table["ki67_percent"] + rng.normal(0, 0.5, len(table))},
                         index=table.index)
    data = genes.join(table)
    data = data[(data.er == 0) | (np.arange(len(data)) % 4 == 0)]  # ~50 ER-positive, ~200 ER-negative
    tests = biomarker_tests(data).set_index(["gene", "variable"])
    positive, negative = data.loc[data.er == 1, "ESR1"], data.loc[data.er == 0, "ESR1"]
    welch = stats.ttest_ind(positive, negative, equal_var=False).pvalue
    student = stats.ttest_ind(positive, negative, equal_var=True).pvalue
    ours = tests.loc[("ESR1", "ER IHC"), "p"]
    assert np.log10(ours) == pytest.approx(np.log10(welch), abs=1e-6) and welch < 0.05  # on a log scale: p is tiny
    assert abs(np.log10(student) - np.log10(welch)) > 0.1  # the test can tell the two apart
    assert tests.loc[("PGR", "PR IHC"), "p"] > 1e-3  # no association built in
    anova = stats.f_oneway(*[data.loc[data.grade == g, "MKI67"] for g in (1, 2, 3)])
    assert np.log10(tests.loc[("MKI67", "grade"), "p"]) == pytest.approx(np.log10(anova.pvalue), abs=1e-6)
    rho = stats.spearmanr(data["MKI67"], data["ki67_percent"]).statistic
    assert tests.loc[("MKI67", "Ki67 %"), "effect"] == pytest.approx(rho)


def test_reclassification_counts_moves():
    ihc = pd.Series(["LumA", "LumB", "LumB", "LumB", "Basal", "LumA"], index=list("abcdef"))
    called = pd.Series(["LumA", "LumA", "LumB", "LumA", "LumB", "LumB"], index=list("abcdef"))
    table, moved = reclassification(ihc, called)
    assert table.loc["LumB", "LumA"] == 2 and table.loc["LumA", "LumB"] == 1
    assert moved == {"LumB_to_LumA": 2, "LumA_to_LumB": 1, "n": 5, "ihc_LumB": 3, "predicted_LumB": 2}


def test_survival_table_recovers_the_built_in_hazards(clinical_file):
    path, mapping = clinical_file
    table = read_clinical(path, ClinicalColumns.from_json(mapping))
    result, model = survival_table(table, "ihc_subtype", "IHC Subtype")
    result = result.set_index("Parameter")
    assert list(result.index) == ["Tumour Grade", "Tumour Size", "Age", "LN status", "IHC Subtype"]
    assert 1.4 < result.loc["IHC Subtype", "Multivariate HR"] < 2.9 and result.loc["IHC Subtype", "Multivariate p"] < 0.01
    assert 2.0 < result.loc["Age", "Multivariate HR"] < 4.5
    assert result.loc["Tumour Grade", "Multivariate p"] > 0.01
    n_lumb = int((table["ihc_subtype"] == "LumB").sum())
    assert result.loc["IHC Subtype", "Patients per group"] == f"{n_lumb} vs. {400 - n_lumb}"
    assert 0.5 < model["multivariate_c_index"] < 0.8
    with pytest.raises(ClinicalError, match="size_mm"):
        survival_table(table.drop(columns="size_mm"), "ihc_subtype", "IHC Subtype")


def test_tcga_receptor_status_separates_measured_biomarker_genes(reference_data, tmp_path):
    """Real TCGA-BRCA: IHC status words ('Not Performed', 'Equivocal', ...) read as missing, and the measured
    ESR1, PGR and ERBB2 differ by ER, PR and HER2 status as they must (Figure 7's TCGA rows, measured)."""
    from hist2rna_tf.expression import log2_expression, read_expression, to_patients

    mapping = tmp_path / "tcga.json"
    mapping.write_text(json.dumps({"patient_id": "PATIENT", "er": "ERStatus", "pr": "PRStatus", "her2": "HER2FinalStatus",
                                   **{k: None for k in ("os_months", "os_event", "grade", "size_mm", "age",
                                                        "node_positive", "ki67_percent", "ihc_subtype")}}))
    clinical = read_clinical(reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv",
                             ClinicalColumns.from_json(mapping))
    raw = pd.read_csv(reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv", dtype=str)
    assert clinical["er"].notna().sum() == (raw["ERStatus"].isin(["Positive", "Negative"])).sum()
    expression = log2_expression(to_patients(read_expression(reference_data / "tcga_expression" / "tcga_brca_pam50_rsem.csv")))
    data = expression.join(clinical, how="inner")
    tests = biomarker_tests(data).set_index("gene")
    assert list(tests.index) == ["ESR1", "PGR", "ERBB2"]
    assert (tests["effect"] > 1).all() and (tests["p"] < 1e-20).all(), tests


def test_external_cohort_calls_luminal_subtypes_and_fits_tables_1_and_2(reference_data):
    """The external-cohort analysis on real TCGA PAM50 genes (measured, standing in for predicted ones):
    LumA/LumB calls that mostly agree with the labels, the reclassification counts, Tables 1-2 and
    Kaplan-Meier fits for both subtype columns; without an IHC subtype, the join alone."""
    from hist2rna_tf.analysis.clinical import SURVIVAL_BY, external_cohort, held_out_cohorts
    from hist2rna_tf.expression import log2_expression, read_expression, read_labels, to_patients

    expression = log2_expression(to_patients(read_expression(reference_data / "tcga_expression" /
                                                             "tcga_brca_pam50_rsem.csv")))
    labels = read_labels(reference_data / "tcga_labels" / "tcga_brca_subtype_receptors.csv").reindex(expression.index)
    labelled = labels.dropna().index
    reference, external = labelled[::2], labelled[1::2]
    luminal = [p for p in external if labels[p] in ("LumA", "LumB")][:300]
    table = _clinical(len(luminal)).assign(PATIENT=luminal, SUBTYPE=labels.loc[luminal].to_numpy())
    clinical = read_clinical_frame(table)
    result = external_cohort(expression.loc[luminal], clinical, expression.loc[reference], labels.loc[reference])
    assert list(result.calls.index) == luminal and {"hist2rna_subtype", "p_LumB"} <= set(result.data.columns)
    agreement = (result.calls["call"] == labels.loc[luminal]).mean()
    assert agreement > 0.7, agreement
    assert result.moved["n"] == len(luminal) and int(result.reclassification.to_numpy().sum()) == len(luminal)
    assert result.moved["LumB_to_LumA"] == int(((labels.loc[luminal] == "LumB") & (result.calls["call"] == "LumA")).sum())
    for column, _ in SURVIVAL_BY:
        fitted = result.survival[column]
        assert fitted.error is None and len(fitted.table) == 5 and set(fitted.km["fits"]) == {"LumA", "LumB"}
    plain = external_cohort(expression.loc[luminal], clinical.drop(columns="ihc_subtype"), expression.loc[reference],
                            labels.loc[reference])
    assert plain.calls is None and plain.survival == {} and len(plain.data) == len(luminal)
    cohorts = held_out_cohorts(expression.loc[luminal[:50]], expression, clinical)
    assert set(cohorts) == {"held-out, predicted", "held-out, measured"}
    assert all(list(data.index) == luminal[:50] for data in cohorts.values())


def read_clinical_frame(table: pd.DataFrame) -> pd.DataFrame:
    """`read_clinical` of a table in _clinical's layout."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clinical.csv"
        table.to_csv(path, index=False)
        return read_clinical(path, ClinicalColumns(**MAPPING))


def test_the_patient_key_is_patient_id_and_its_old_name_still_works(tmp_path):
    """Our key is patient_id, as the table's default column; mappings written before 0.5.0 say patient."""
    for key in ("patient_id", "patient"):
        (tmp_path / "m.json").write_text(json.dumps({key: "PATIENT"}))
        assert ClinicalColumns.from_json(tmp_path / "m.json").patient_id == "PATIENT"
    (tmp_path / "m.json").write_text(json.dumps({"patient_id": None}))
    with pytest.raises(ClinicalError, match="'patient_id' cannot be null"):
        ClinicalColumns.from_json(tmp_path / "m.json")

