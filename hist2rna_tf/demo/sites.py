"""The demo's sites (issue 38): how much of its figures is the site its slides came from.

The demo's slides lie at six made-up tissue source sites (demo/cohort.py: a site's slides share a stain
cast; which tumours a slide mixes does not depend on its site). The demo trains the same head in two
crossvals of its patients: patient-level folds stratified by subtype, and site-preserved folds (every
site's patients in one fold, Howard's objective solved exactly: analysis/sites.py); their difference is
the site-leak gap (model/folds.py). PathoROB's robustness index of its features (analysis/robustness.py)
says whether the features' neighbours share the subtype more than the site. Whatever the figures are,
the demo prints them: on this cohort, where the site carries no biology, no gap is expected.
"""

from __future__ import annotations

from pathlib import Path

from hist2rna_tf.analysis.encoder_robustness import encoder_robustness, write_robustness
from hist2rna_tf.analysis.sites import fold_table, site_preserved_folds
from hist2rna_tf.atomic import write_table
from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.expression import read_labels
from hist2rna_tf.model.crossval import crossval
from hist2rna_tf.model.folds import compare
from hist2rna_tf.report.crossval import site_figures

DEMO_FOLDS = 3
SITE_COLUMN = "site"  # the demo's clinical.csv column of sites (demo/cohort.py)
DEMO_RI_K = 3  # PathoROB reads TCGA at k = 61; a demo subset (2 subtypes x 2 sites) holds a handful of slides


def site_demo(features: Path, expression: Path, labels: Path, out_dir: Path, train: TrainConfig,
              seed: int = 0) -> dict:
    """Both crossvals under `out_dir` (patient_level/, site_preserved/ and the folds table), the gap, each
    crossval's site that differs most and the robustness index: the figures (and the folders, `paths`)."""
    inputs = RunInputs(features=str(features), expression=str(expression), labels=str(labels), site_column=SITE_COLUMN)
    subtypes = read_labels(labels).dropna()
    sites = read_labels(labels, SITE_COLUMN).reindex(subtypes.index)
    folds = site_preserved_folds(subtypes, sites, DEMO_FOLDS)
    folds_table = out_dir / "folds_site_preserved.csv"
    write_table(fold_table(subtypes, sites, folds.folds), folds_table, index=False)
    patient_level, site_preserved = out_dir / "patient_level", out_dir / "site_preserved"
    crossval(inputs, patient_level, train, folds=DEMO_FOLDS, seed=seed)
    crossval(inputs, site_preserved, train, seed=seed, folds_file=folds_table)
    gap = compare(patient_level, site_preserved, ("patient-level", "site-preserved"))
    _, said = site_figures([patient_level, site_preserved], ["patient-level", "site-preserved"])
    table, found = encoder_robustness([features], subtypes, sites, k=DEMO_RI_K)
    write_robustness(out_dir / "robustness", table, found)
    index = next(iter(found.values()))
    mean, low, high = gap.difference_ci
    return {"folds": DEMO_FOLDS, "sites": int(sites.nunique()), "objective": folds.objective, "status": folds.status,
            "gap_median_per_gene": float(gap.genes["difference"].median()), "gap_wilcoxon_p": gap.wilcoxon_p,
            "gap_folds": [mean, low, high], "verdict": gap.verdict(), "site_sentences": said,
            "robustness_index": index.index, "robustness_k": index.k, "robustness_pairs": len(index.pairs),
            "paths": {"sites_patient_level": patient_level, "sites_site_preserved": site_preserved,
                      "sites_folds": folds_table, "sites_robustness": out_dir / "robustness"}}
