"""External-cohort analysis with predicted genes (sections 3.3, 4.3, 4.4): the clinical table, the
biomarker checks (Figures 7, 8), Luminal A vs B from predicted genes, and Tables 1-2.

The clinical table's column names are mapped by `ClinicalColumns` (a JSON file of
{"our name": "your column"}; null for a column the table does not have, which skips the analyses
that need it). IHC status columns accept 1/0, pos/neg, positive/negative, +/-, true/false.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hist2rna_tf.analysis.subtype import LUMINAL, luminal_calls
from hist2rna_tf.analysis.survival import LuminalSurvival, luminal_survival
from hist2rna_tf.errors import ClinicalError
from hist2rna_tf.expression import read_table_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClinicalColumns:
    """Our column -> the clinical table's column (None: the table lacks it)."""

    patient_id: str = "patient_id"  # (the mapping may name this key "patient", as before 0.5.0)
    os_months: str | None = "os_months"  # overall survival time
    os_event: str | None = "os_event"  # 1 = died, 0 = censored
    grade: str | None = "grade"  # 1, 2, 3
    size_mm: str | None = "size_mm"
    age: str | None = "age"
    node_positive: str | None = "node_positive"  # IHC-style status
    er: str | None = "er"
    pr: str | None = "pr"
    her2: str | None = "her2"
    ki67_percent: str | None = "ki67_percent"
    ihc_subtype: str | None = "ihc_subtype"  # LumA, LumB, Her2, Basal (or TNBC)

    @classmethod
    def from_json(cls, path: str | Path) -> "ClinicalColumns":
        try:
            mapping = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ClinicalError(f"{path}: not a readable JSON column mapping ({exc}).") from None
        if not isinstance(mapping, dict):
            raise ClinicalError(f"{path}: a column mapping is a JSON object of our names to yours, e.g. "
                                '{"patient_id": "PATIENT", "os_months": "OS_MONTHS"}.')
        if "patient" in mapping and "patient_id" not in mapping:
            mapping = {("patient_id" if key == "patient" else key): value for key, value in mapping.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ClinicalError(f"{path}: unknown keys {unknown}; the keys are {sorted(known)}.")
        if mapping.get("patient_id", "patient_id") is None:
            raise ClinicalError(f"{path}: 'patient_id' cannot be null: the table's patient column is how it meets "
                                "the predictions.")
        return cls(**mapping)


STATUS_COLUMNS = ("er", "pr", "her2", "node_positive")
NUMERIC_COLUMNS = ("os_months", "os_event", "grade", "size_mm", "age", "ki67_percent")
_POSITIVE = {"1", "1.0", "pos", "positive", "+", "true", "yes", "y"}
_NEGATIVE = {"0", "0.0", "neg", "negative", "-", "false", "no", "n"}
# No usable status (TCGA's clinical tables use these words): read as missing, like a blank.
_NO_STATUS = {"not performed", "performed but not available", "not available", "equivocal", "indeterminate",
              "unknown", "na", "n/a", "nan", "[not available]", "[not evaluated]", "[unknown]", "[not applicable]"}


def read_clinical(path: str | Path, columns: ClinicalColumns = ClinicalColumns(),
                  flag: str = "--clinical-columns") -> pd.DataFrame:
    """The clinical table indexed by patient, with our column names; statuses as 1/0 floats (NaN when
    blank), numbers as floats. A mapped column the table lacks, or a malformed value, is an error
    (`flag`: the option that maps this table's columns, for the message)."""
    path = Path(path)
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    raw = read_table_file(path, ClinicalError, sep=sep, dtype=str, keep_default_na=True)
    mapping = {ours: theirs for ours, theirs in asdict(columns).items() if theirs is not None}
    missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in raw.columns}
    if missing:
        listed = ", ".join(repr(theirs) if theirs == ours else f"{theirs!r} (for {ours})"
                           for ours, theirs in missing.items())
        raise ClinicalError(f"{path}: no column {listed}. Its columns are {', '.join(raw.columns)}. Map yours "
                            f'with {flag} FILE.json, e.g. {{"os_months": "OS_MONTHS"}}, or null if absent.')
    table = raw[list(mapping.values())].set_axis(list(mapping), axis=1)
    if table["patient_id"].isna().any() or table["patient_id"].duplicated().any():
        raise ClinicalError(f"{path}: column {mapping['patient_id']!r} has blank or repeated patient IDs.")
    table = table.set_index("patient_id")
    for name in table.columns:
        if name in STATUS_COLUMNS:
            table[name] = _status(table[name], path, mapping[name])
        elif name in NUMERIC_COLUMNS:
            table[name] = _numeric(table[name], path, mapping[name])
    if "os_event" in table and not table["os_event"].dropna().isin([0, 1]).all():
        raise ClinicalError(f"{path}: {mapping['os_event']!r} must be 1 (event) or 0 (censored).")
    if "grade" in table and not table["grade"].dropna().isin([1, 2, 3]).all():
        raise ClinicalError(f"{path}: {mapping['grade']!r} must be 1, 2 or 3.")
    for name in ("os_months", "size_mm", "age", "ki67_percent"):
        if name in table and (table[name] < 0).any():
            bad = table.index[table[name] < 0]
            raise ClinicalError(f"{path}: {mapping[name]!r} is negative for {len(bad)} patients ({', '.join(map(str, bad[:5]))}"
                                f"{', ...' if len(bad) > 5 else ''}); times, sizes, ages and percentages cannot be.")
    return table


def _status(values: pd.Series, path: Path, column: str) -> pd.Series:
    text = values.str.strip().str.lower()
    bad = text.notna() & ~text.isin(_POSITIVE | _NEGATIVE | _NO_STATUS)
    if bad.any():
        raise ClinicalError(f"{path}: column {column!r} has values {sorted(set(values[bad]))[:5]}; expected "
                            "positive/negative (1/0, pos/neg, +/-; blank or 'Not Performed'/'Equivocal' for none).")
    return text.map(lambda v: 1.0 if v in _POSITIVE else 0.0 if v in _NEGATIVE else np.nan)


def _numeric(values: pd.Series, path: Path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise ClinicalError(f"{path}: column {column!r} has non-numeric values {sorted(set(values[bad]))[:5]}.")
    return numbers.astype(float)


def joined(predicted: pd.DataFrame, clinical: pd.DataFrame,
           source: str = "the clinical table") -> tuple[pd.DataFrame, dict]:
    """Patients in both tables (predicted genes + clinical columns) and who was left out on each side.
    `source` names the clinical table (and how to map its patient column) when none is shared."""
    shared = _shared_patients(predicted, clinical, source)
    report = {"predicted_only": sorted(set(predicted.index) - set(shared)),
              "clinical_only": sorted(set(clinical.index) - set(shared))}
    for side, names in report.items():
        if names:
            log.warning("%d patients only in the %s table (e.g. %s).", len(names), side.split("_")[0], names[0])
    return predicted.loc[shared].join(clinical.loc[shared], rsuffix="_clinical"), report


def _shared_patients(predicted: pd.DataFrame, clinical: pd.DataFrame, source: str) -> pd.Index:
    """The patients of both tables; a ClinicalError naming `source` and both sides' IDs when none."""
    shared = predicted.index.intersection(clinical.index)
    if len(shared) == 0:
        examples = (f"its patients e.g. {', '.join(map(repr, clinical.index[:3]))}" if len(clinical) else
                    "it has no patients")
        raise ClinicalError(f"{source}: none of its patients has predictions ({examples}; the predictions' e.g. "
                            f"{', '.join(map(repr, predicted.index[:3]))}); check its patient ID column.")
    return shared


# --- biomarker checks (Figures 7 and 8) ------------------------------------------------------------------

BIOMARKERS = (("ESR1", "er"), ("PGR", "pr"), ("ERBB2", "her2"))


def biomarker_tests(data: pd.DataFrame) -> pd.DataFrame:
    """Welch t-tests of predicted ESR1/PGR/ERBB2 between IHC-positive and -negative patients, one-way
    ANOVA of predicted MKI67 across grades 1-3, Spearman of predicted MKI67 with Ki67 %. One row per
    test: gene, clinical variable, test, groups (n), effect (difference of means or rho), statistic, p."""
    rows = []
    for gene, status in BIOMARKERS:
        if gene in data and status in data:
            pos, neg = data.loc[data[status] == 1, gene].dropna(), data.loc[data[status] == 0, gene].dropna()
            if len(pos) >= 2 and len(neg) >= 2:
                t = stats.ttest_ind(pos, neg, equal_var=False)
                rows.append({"gene": gene, "variable": f"{status.upper()} IHC", "test": "Welch t-test",
                             "groups": f"pos {len(pos)} vs neg {len(neg)}", "effect": pos.mean() - neg.mean(),
                             "statistic": t.statistic, "p": t.pvalue})
    if "MKI67" in data and "grade" in data:
        groups = [data.loc[data["grade"] == g, "MKI67"].dropna() for g in (1, 2, 3)]
        if sum(len(g) >= 2 for g in groups) >= 2:
            f = stats.f_oneway(*[g for g in groups if len(g) >= 2])
            rows.append({"gene": "MKI67", "variable": "grade", "test": "one-way ANOVA",
                         "groups": " / ".join(f"G{g} {len(v)}" for g, v in zip((1, 2, 3), groups)),
                         "effect": groups[2].mean() - groups[0].mean() if len(groups[0]) and len(groups[2]) else np.nan,
                         "statistic": f.statistic, "p": f.pvalue})
    if "MKI67" in data and "ki67_percent" in data:
        both = data[["MKI67", "ki67_percent"]].dropna()
        if len(both) >= 3:
            rho = stats.spearmanr(both["MKI67"], both["ki67_percent"])
            rows.append({"gene": "MKI67", "variable": "Ki67 %", "test": "Spearman", "groups": f"n {len(both)}",
                         "effect": rho.statistic, "statistic": rho.statistic, "p": rho.pvalue})
    return pd.DataFrame(rows, columns=["gene", "variable", "test", "groups", "effect", "statistic", "p"])


# --- Luminal A vs B from predicted genes (the calls: subtype.luminal_calls) ----------------------------


def reclassification(ihc: pd.Series, predicted_call: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Cross-table of IHC luminal subtype (rows) vs the predicted call (columns) in IHC-luminal
    patients, and how many moved each way (the paper: 27 of 96 IHC-LumB called LumA)."""
    shared = ihc.dropna().index.intersection(predicted_call.dropna().index)
    ihc, call = ihc.loc[shared], predicted_call.loc[shared]
    luminal = ihc.isin(LUMINAL)
    table = pd.crosstab(ihc[luminal].rename("IHC"), call[luminal].rename("hist2RNA")).reindex(
        index=list(LUMINAL), columns=list(LUMINAL), fill_value=0)
    moved = {"LumB_to_LumA": int(table.loc["LumB", "LumA"]), "LumA_to_LumB": int(table.loc["LumA", "LumB"]),
             "n": int(luminal.sum()), "ihc_LumB": int(table.loc["LumB"].sum()), "predicted_LumB": int(table["LumB"].sum())}
    return table, moved


# --- the analyses, cohort by cohort ------------------------------------------------------------------------


def held_out_cohorts(predicted: pd.DataFrame, measured: pd.DataFrame, clinical: pd.DataFrame,
                     source: str = "the run's clinical table") -> dict[str, pd.DataFrame]:
    """A run's held-out patients with their clinical data, for Figure 7's TCGA rows: their predicted
    genes, and their measured ones (the ceiling). label -> genes joined with the clinical columns.
    `source` names the clinical table when it shares no held-out patient."""
    clinical = clinical.loc[_shared_patients(predicted, clinical, source)]  # not the training patients
    return {label: joined(genes, clinical, source)[0]
            for label, genes in (("held-out, predicted", predicted), ("held-out, measured", measured.loc[predicted.index]))}


SURVIVAL_BY = (("hist2rna_subtype", "hist2RNA Predicted"), ("ihc_subtype", "IHC Subtype"))  # Tables 1 and 2


@dataclass
class ExternalCohort:
    """The external cohort's analyses (sections 3.3, 4.3, 4.4)."""

    data: pd.DataFrame  # predicted genes joined with the clinical columns (and hist2rna_subtype, p_LumB)
    left_out: dict[str, list]  # predicted_only, clinical_only: patients on one side only
    calls: pd.DataFrame | None = None  # LumA/LumB call and p_LumB per patient (None without an IHC subtype)
    reclassification: pd.DataFrame | None = None  # IHC luminal subtype x predicted call
    moved: dict | None = None  # how many moved each way (`reclassification`)
    survival: dict[str, LuminalSurvival] = field(default_factory=dict)  # SURVIVAL_BY column -> Tables 1-2, Figure 9


def external_cohort(predicted: pd.DataFrame, clinical: pd.DataFrame, reference: pd.DataFrame,
                    reference_labels: pd.Series, source: str = "the clinical table") -> ExternalCohort:
    """Predicted genes (patients x genes) and the clinical table of an external cohort -> the joined
    table; with an IHC subtype, the LumA/LumB calls from the predicted PAM50 genes (the classifier
    trained on `reference`, measured log2 expression, and its PAM50 `reference_labels`), the
    reclassification against IHC, and the luminal patients' Tables 1-2 and Kaplan-Meier curves.
    `source` names the clinical table in messages."""
    data, left_out = joined(predicted, clinical, source)
    if "ihc_subtype" not in data:
        return ExternalCohort(data, left_out)
    calls = luminal_calls(data, reference, reference_labels)
    data = data.join(calls.rename(columns={"call": "hist2rna_subtype"}))
    cross, moved = reclassification(data["ihc_subtype"], data["hist2rna_subtype"])
    luminal = data[data["ihc_subtype"].isin(LUMINAL)]
    survival = {column: luminal_survival(luminal, column, label) for column, label in SURVIVAL_BY}
    return ExternalCohort(data, left_out, calls, cross, moved, survival)
