"""Sites, and folds that keep each site whole (issue 38; Howard et al., Nat Commun 2021, 12:4423).

A TCGA patient's tissue source site is the two characters after `TCGA-` in its barcode; any other cohort
names its sites in a column of its clinical table. Site-preserved folds put every patient of a site in one
fold and balance the folds' label proportions as well as whole sites allow, by Howard's objective: the
sum over classes c and folds f of (k x n_cf - N_c)^2 (n_cf: patients of class c in fold f; N_c: in the
cohort; zero when every fold holds exactly 1/k of every class).

That objective is convex in the whole-number counts n_cf, so it is solved exactly as a mixed-integer
LINEAR program: each square replaced by its secants between consecutive whole numbers (t_cf at least
each; at a whole number the largest secant is the square itself), each site a binary choice of fold, the
largest site fixed to the first fold (the folds are interchangeable). scipy's `milp` (HiGHS, open) solves
it within a time limit and says whether it proved the optimum; the objective is then recounted from the
folds. Howard's code used CPLEX (commercial) through cvxpy; no commercial solver is needed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hist2rna_tf.errors import CrossvalError

TCGA_SITE = re.compile(r"^TCGA-([A-Z0-9]{2})-")


def tcga_site(patient: str) -> str | None:
    """The tissue source site of a TCGA barcode (`TCGA-A2-A04R` -> `A2`), None for any other identifier."""
    match = TCGA_SITE.match(str(patient).upper())
    return match.group(1) if match else None


def howard_objective(labels: pd.Series, folds: pd.Series, k: int) -> float:
    """Sum over classes and folds of (k x n_cf - N_c)^2 (`labels`, `folds`: patient -> class, fold 1..k)."""
    counts = pd.crosstab(labels, folds.reindex(labels.index)).reindex(columns=range(1, k + 1), fill_value=0)
    totals = labels.value_counts().reindex(counts.index)
    return float(((k * counts).sub(totals, axis=0) ** 2).to_numpy().sum())


@dataclass(frozen=True)
class SiteFolds:
    """Each patient's fold (1..k), Howard's objective of them, and what the solver said: "optimal" (proven),
    "time limit" (the best found when time ran out) and its proven lower bound."""

    folds: pd.Series
    objective: float
    status: str
    bound: float
    seconds: float


def check_sites(sites: pd.Series, k: int) -> None:
    """A CrossvalError naming why `sites` (patient -> site) cannot make `k` site-preserved folds: fewer
    sites than folds, or a site holding more than 1/k of the patients; and a column that gives every
    patient a site of its own (a column of patients, not of sites: the folds would be patient-level)."""
    refuse_a_site_each(sites, "site-preserved folds", "the folds would be patient-level")
    sizes = sites.value_counts()
    if len(sizes) < k:
        raise CrossvalError(f"--folds {k} site-preserved: the cohort has {len(sizes)} site(s) "
                            f"({', '.join(sizes.index[:6])}), fewer than the folds; give fewer folds.")
    share = sizes.iloc[0] / len(sites)
    if share > 1 / k:
        raise CrossvalError(f"--folds {k} site-preserved: site {sizes.index[0]} holds {sizes.iloc[0]} of the "
                            f"{len(sites)} patients ({share:.0%}), more than a fold's 1/{k}; give fewer folds.")


def refuse_a_site_each(sites: pd.Series, what: str, because: str) -> None:
    """A CrossvalError when every patient (over 3) has a site of its own: a column of patients, not of sites."""
    if len(sites) > 3 and sites.nunique() == len(sites):
        raise CrossvalError(f"{what}: each of the {len(sites)} patients has a site of its own (e.g. {sites.index[0]}: "
                            f"{sites.iloc[0]}), so {because}; give --site-column naming the column of sites "
                            "(hospitals, centres), not of patients.")


def site_preserved_folds(labels: pd.Series, sites: pd.Series, k: int, time_limit: float = 60.0) -> SiteFolds:
    """Site-preserved folds of `labels` (patient -> class) at `sites` (patient -> site), Howard's objective
    minimised (see the module). Deterministic: the same cohort gives the same folds."""
    import time

    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    sites = sites.reindex(labels.index)
    if sites.isna().any():
        raise CrossvalError(f"{int(sites.isna().sum())} patient(s) without a site (e.g. {sites.index[sites.isna()][0]}); "
                            "give every patient's site (--site-column).")
    check_sites(sites, k)
    table = pd.crosstab(sites, labels)  # sites x classes: patients
    order = table.sum(axis=1).sort_values(ascending=False, kind="stable").index  # the largest site first
    table = table.loc[order]
    counts, totals = table.to_numpy(), table.sum(axis=0).to_numpy()
    n_sites, n_classes = counts.shape
    n_x = n_sites * k  # x[s, f] at s * k + f, then t[c, f] at n_x + c * k + f
    rows, lower, upper = [], [], []

    def row() -> lil_matrix:
        return lil_matrix((1, n_x + n_classes * k))

    for s in range(n_sites):  # each site in one fold
        r = row()
        for f in range(k):
            r[0, s * k + f] = 1
        rows.append(r), lower.append(1), upper.append(1)
    for c in range(n_classes):  # t[c, f] >= each secant of (k n - N_c)^2 at n = j, j + 1
        square = lambda n: (k * n - totals[c]) ** 2  # noqa: E731 - the objective's term, at whole numbers
        for j in range(int(totals[c])):
            slope = square(j + 1) - square(j)
            for f in range(k):
                r = row()
                for s in range(n_sites):
                    if counts[s, c]:
                        r[0, s * k + f] = slope * counts[s, c]
                r[0, n_x + c * k + f] = -1
                rows.append(r), lower.append(-np.inf), upper.append(slope * j - square(j))
    from scipy.sparse import vstack

    matrix = vstack(rows).tocsr()
    cost = np.r_[np.zeros(n_x), np.ones(n_classes * k)]
    low, high = np.zeros(n_x + n_classes * k), np.r_[np.ones(n_x), np.full(n_classes * k, np.inf)]
    low[0] = 1  # the largest site in the first fold: the folds are interchangeable
    integrality = np.r_[np.ones(n_x), np.zeros(n_classes * k)]
    start = time.perf_counter()
    result = milp(cost, constraints=LinearConstraint(matrix, lower, upper), integrality=integrality,
                  bounds=Bounds(low, high), options={"time_limit": float(time_limit), "disp": False})
    seconds = time.perf_counter() - start
    if result.x is None:
        raise CrossvalError(f"the fold solver found no assignment of the {n_sites} sites in {time_limit:g} s "
                            f"({result.message}); give a longer time limit.")
    chosen = np.asarray(result.x[:n_x]).reshape(n_sites, k).argmax(axis=1) + 1
    fold_of_site = pd.Series(chosen, index=order)
    folds = sites.map(fold_of_site).astype(int).rename("fold")
    status = "optimal" if result.status == 0 else "time limit"
    bound = float(getattr(result, "mip_dual_bound", np.nan) or np.nan)
    return SiteFolds(folds, howard_objective(labels, folds, k), status, bound, seconds)


def known_sites(patients: pd.Index, table: pd.Series | None = None) -> pd.Series:
    """Each patient's site: `table`'s (patient -> site, a clinical table's column), else its TCGA barcode's
    tissue source site; missing (NaN) where neither names one."""
    sites = (table.reindex(patients) if table is not None
             else pd.Series([tcga_site(p) for p in patients], index=patients, dtype=object))
    return sites.replace("", np.nan).rename("site")


def patient_sites(patients: pd.Index, table: pd.Series | None = None) -> pd.Series:
    """known_sites, every patient with one: a CrossvalError naming the patients without one and the fix."""
    sites = known_sites(patients, table)
    missing = sites.index[sites.isna()]
    if len(missing) and table is not None:
        raise CrossvalError(f"{len(missing)} of {len(patients)} patients have no site in the site column (e.g. "
                            f"{missing[0]}); fill in every patient's site there, or give --site-column naming "
                            "another column.")
    if len(missing):
        raise CrossvalError(f"{len(missing)} of {len(patients)} patients have no site in a TCGA barcode (TCGA-XX-...) "
                            f"(e.g. {missing[0]}); give --site-column naming the clinical table's column of sites.")
    return sites


def fold_table(labels: pd.Series, sites: pd.Series, folds: pd.Series) -> pd.DataFrame:
    """patient_id, label, site, fold: what `hist2rna folds` writes and `crossval --folds-file` reads."""
    return pd.DataFrame({"patient_id": labels.index, "label": labels.to_numpy(),
                         "site": sites.reindex(labels.index).to_numpy(), "fold": folds.reindex(labels.index).to_numpy()})


# --- what the sites do to a crossval's figures ---------------------------------------------------

MIN_SITE_PATIENTS = 5  # a site's median Spearman across genes (each gene over its patients) needs a few


def is_site_preserved(folds: pd.Series, sites: pd.Series) -> bool:
    """Every site's patients in one fold (patient -> fold, patient -> site; patients without a site aside)."""
    pairs = pd.DataFrame({"site": sites.reindex(folds.index), "fold": folds}).dropna()
    shared = pairs["site"].value_counts().max() > 1 if len(pairs) else False  # one patient a site: patient-level
    return bool(shared) and bool((pairs.groupby("site")["fold"].nunique() == 1).all())


def per_site_figures(predicted: pd.DataFrame, measured: pd.DataFrame, sites: pd.Series,
                     min_patients: int = MIN_SITE_PATIENTS) -> pd.DataFrame:
    """Held-out figures of each site (patients x genes tables, patient -> site): its patients, the median
    over genes of each gene's Spearman across the site's patients (NaN under `min_patients`), and the
    median over its patients of each patient's Spearman across genes; sites by patients, largest first."""
    from hist2rna_tf.analysis.evaluate import spearman_table

    sites = sites.reindex(predicted.index).fillna("(none)")
    rows = {}
    for site, patients in sites.groupby(sites).groups.items():
        mine, truth = predicted.loc[patients], measured.loc[patients, predicted.columns]
        genes = (float(spearman_table(mine, truth)["rho"].median()) if len(patients) >= min_patients else np.nan)
        each = spearman_table(mine.T, truth.T)["rho"].median()
        rows[site] = {"patients": len(patients), "median_rho_genes": genes, "median_rho_patients": float(each)}
    table = pd.DataFrame(rows).T.sort_values("patients", ascending=False, kind="stable")
    table.index.name = "site"
    return table.astype({"patients": int})


def most_different_site(figures: pd.DataFrame, column: str = "median_rho_genes") -> tuple[str, float, float] | None:
    """The site whose `column` lies furthest from the median of all sites' (those with a figure): its name,
    its figure and that median; None with fewer than three such sites."""
    values = figures[column].dropna()
    if len(values) < 3:
        return None
    middle = float(values.median())
    site = (values - middle).abs().idxmax()
    return str(site), float(values[site]), middle


def welch_difference(first, second, level: float = 0.95) -> tuple[float, float, float]:
    """The difference of two samples' means (first - second) and its Welch t confidence interval (the
    samples unpaired: folds of other patients)."""
    from scipy import stats

    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    difference = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if not np.isfinite(va + vb) or va + vb == 0:
        return difference, float("nan"), float("nan")
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + level) / 2, dof) * np.sqrt(va + vb))
    return difference, difference - half, difference + half
