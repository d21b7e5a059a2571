"""Survival analysis with lifelines (sections 3.3, 4.3): Cox models, the paper's cut-offs, Kaplan-Meier.

Conventions: hazard ratios are exp(coef) per unit of a covariate (for the paper's binary cut-offs: the
risk group vs the rest); c-index follows lifelines, whose `concordance_index(times, scores, events)`
expects a higher score for LONGER survival, so risk scores are passed negated.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hist2rna_tf.errors import ClinicalError, Hist2RNAError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutOffs:
    """The paper's risk groups (Tables 1-2): 1 = the higher-risk side."""

    grade_high: int = 3  # grade 3 vs 1 & 2
    size_mm: float = 20.0  # > 20 mm vs <= 20 mm
    age_years: float = 55.0  # > 55 vs <= 55
    high_subtype: str = "LumB"  # LumB vs LumA


def paper_covariates(clinical: pd.DataFrame, subtype_column: str, cut: CutOffs = CutOffs()) -> pd.DataFrame:
    """Binary covariates from a clinical table with columns grade, size_mm, age, node_positive (0/1) and a
    subtype column (LumA/LumB); rows of other subtypes are dropped (the paper's luminal patients)."""
    needed = ["grade", "size_mm", "age", "node_positive", subtype_column]
    missing = [c for c in needed if c not in clinical.columns]
    if missing:
        raise ClinicalError(f"clinical table lacks {', '.join(missing)} (columns: {', '.join(clinical.columns)}).")
    luminal = clinical[clinical[subtype_column].isin(["LumA", cut.high_subtype])]
    return pd.DataFrame({
        "grade_3": (luminal["grade"] >= cut.grade_high).astype(int),
        "size_gt_20mm": (luminal["size_mm"] > cut.size_mm).astype(int),
        "age_gt_55": (luminal["age"] > cut.age_years).astype(int),
        "node_positive": luminal["node_positive"].astype(int),
        f"{cut.high_subtype}_vs_LumA": (luminal[subtype_column] == cut.high_subtype).astype(int),
    }, index=luminal.index)


def _check(data: pd.DataFrame, duration: str, event: str, covariates: list[str]) -> pd.DataFrame:
    missing = [c for c in [duration, event, *covariates] if c not in data.columns]
    if missing:
        raise ClinicalError(f"survival table lacks columns: {', '.join(missing)}.")
    table = data[[duration, event, *covariates]].apply(pd.to_numeric, errors="coerce")
    bad = table.isna().any(axis=1)
    if bad.any():
        log.warning("%d rows with missing or non-numeric survival data are left out.", int(bad.sum()))
    table = table[~bad]
    if (table[duration] < 0).any():
        raise ClinicalError(f"negative survival times in {duration!r}.")
    return table


def cox(data: pd.DataFrame, duration: str, event: str, covariates: list[str]) -> tuple[pd.DataFrame, dict]:
    """A multivariate Cox model (Efron ties, as R's coxph): per covariate HR, 95% CI, p, coef; and the
    model's c-index, likelihood-ratio test and n."""
    from lifelines import CoxPHFitter

    table = _check(data, duration, event, covariates)
    with warnings.catch_warnings(record=True) as caught:  # lifelines' convergence warnings: said as ours, below
        warnings.simplefilter("always")
        fitter = CoxPHFitter().fit(table, duration_col=duration, event_col=event)
    notes = sorted({str(w.message).strip().splitlines()[0] for w in caught})
    for note in notes:
        log.warning("the Cox model of %s (%d patients, %d events): %s", ", ".join(covariates), len(table),
                    int(table[event].sum()), note)
    s = fitter.summary
    result = pd.DataFrame({"hr": s["exp(coef)"], "ci_low": s["exp(coef) lower 95%"], "ci_high": s["exp(coef) upper 95%"],
                           "p": s["p"], "coef": s["coef"]})
    lr = fitter.log_likelihood_ratio_test()
    return result, {"c_index": float(fitter.concordance_index_), "lr_statistic": float(lr.test_statistic),
                    "lr_df": int(lr.degrees_freedom), "lr_p": float(lr.p_value), "n": int(len(table)),
                    "events": int(table[event].sum()), "notes": notes}


def univariate(data: pd.DataFrame, duration: str, event: str, covariates: list[str]) -> pd.DataFrame:
    """One Cox model per covariate: HR, 95% CI, p and that model's c-index."""
    rows = []
    for covariate in covariates:
        result, model = cox(data, duration, event, [covariate])
        rows.append({**result.loc[covariate].to_dict(), "c_index": model["c_index"], "n": model["n"]})
    return pd.DataFrame(rows, index=covariates)


def kaplan_meier(data: pd.DataFrame, duration: str, event: str, group: str) -> dict:
    """Kaplan-Meier fits per group and the log-rank test between the groups."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    table = data[[duration, event, group]].dropna()
    fits = {}
    for name, part in table.groupby(group):
        fits[name] = KaplanMeierFitter(label=str(name)).fit(part[duration], part[event])
    test = multivariate_logrank_test(table[duration], table[group], table[event])
    return {"fits": fits, "logrank_p": float(test.p_value), "logrank_statistic": float(test.test_statistic),
            "n": {k: int(v) for k, v in table[group].value_counts().items()}}


def c_index_of_risk(times: np.ndarray, risk: np.ndarray, events: np.ndarray) -> float:
    """Harrell's c-index of a risk score (higher = worse); lifelines wants the negation."""
    from lifelines.utils import concordance_index

    return float(concordance_index(times, -np.asarray(risk, float), events))


# --- Tables 1 and 2 ---------------------------------------------------------------------------------------

TABLE_ROWS = (("grade_3", "Tumour Grade", "3 vs. 1 & 2"), ("size_gt_20mm", "Tumour Size", ">20 vs. <=20 (mm)"),
              ("age_gt_55", "Age", ">55 vs. <=55"), ("node_positive", "LN status", "pos. vs. neg."))


def survival_table(data: pd.DataFrame, subtype_column: str, subtype_label: str) -> tuple[pd.DataFrame, dict]:
    """Tables 1-2 layout for luminal patients: per parameter the risk-group cut-off, patients per
    group, multivariate and univariate Cox HR (95% CI) and p; and both models' c-index for the
    subtype. `data` needs os_months, os_event, grade, size_mm, age, node_positive and the subtype column."""
    needed = ["os_months", "os_event", "grade", "size_mm", "age", "node_positive", subtype_column]
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise ClinicalError(f"survival tables need the clinical columns {', '.join(absent)}.")
    complete = data.dropna(subset=needed)
    covariates = paper_covariates(complete, subtype_column)
    table = covariates.join(complete[["os_months", "os_event"]])
    names = list(covariates.columns)
    multi, model = cox(table, "os_months", "os_event", names)
    uni = univariate(table, "os_months", "os_event", names)
    rows = []
    for key, label, cut in (*TABLE_ROWS, (names[-1], subtype_label, "LumB vs. LumA")):
        high = int(table[key].sum())
        rows.append({"Parameter": label, "Risk group cut-off": cut, "Patients per group": f"{high} vs. {len(table) - high}",
                     "Multivariate HR": multi.loc[key, "hr"], "Multivariate 95% CI":
                     f"{multi.loc[key, 'ci_low']:.2f}-{multi.loc[key, 'ci_high']:.2f}", "Multivariate p": multi.loc[key, "p"],
                     "Univariate HR": uni.loc[key, "hr"], "Univariate 95% CI":
                     f"{uni.loc[key, 'ci_low']:.2f}-{uni.loc[key, 'ci_high']:.2f}", "Univariate p": uni.loc[key, "p"]})
    return pd.DataFrame(rows), {"n": model["n"], "events": model["events"], "multivariate_c_index": model["c_index"],
                                "univariate_c_index_subtype": float(uni.loc[names[-1], "c_index"]),
                                "notes": model["notes"]}


@dataclass
class LuminalSurvival:
    """Table 1 or 2 and Figure 9 for one subtype column: the table and both Cox models' figures
    (`survival_table`) and the Kaplan-Meier fits (`kaplan_meier`); or, when lifelines could not fit
    the models (a small cohort, too few events), `error` saying why."""

    table: pd.DataFrame | None = None
    model: dict | None = None
    km: dict | None = None
    error: str | None = None


def luminal_survival(luminal: pd.DataFrame, subtype_column: str, subtype_label: str) -> LuminalSurvival:
    """Tables 1-2 and Kaplan-Meier curves of luminal patients by `subtype_column`. A wrong table (a
    missing column) raises; a model lifelines cannot fit is reported in `error`."""
    try:
        table, model = survival_table(luminal, subtype_column, subtype_label)
    except Hist2RNAError:  # the user's data is wrong: say so
        raise
    except Exception as exc:  # noqa: BLE001 - lifelines convergence or too few events in a small cohort
        return LuminalSurvival(error=f"{type(exc).__name__}: {exc}")
    km = kaplan_meier(luminal.dropna(subset=["os_months", "os_event"]), "os_months", "os_event", subtype_column)
    return LuminalSurvival(table, model, km)
