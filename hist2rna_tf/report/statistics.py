"""What a run's report shows, computed in one pass before anything is drawn (report.py only renders it):
the held-out predictions and metrics the run holds, their bootstrap CIs, the soft-voting subtype
classifier's scores, the biomarker tests of every cohort given, the external cohort's analysis (LumA/LumB
calls, Cox tables, Kaplan-Meier) and the baseline's summaries beside the run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hist2rna_tf.analysis import sequoia
from hist2rna_tf.analysis.clinical import ExternalCohort, biomarker_tests, external_cohort, held_out_cohorts
from hist2rna_tf.analysis.evaluate import bootstrap_median_ci, summary
from hist2rna_tf.analysis.subtype import held_out_scores
from hist2rna_tf.config import ReportInputs
from hist2rna_tf.model import runs
from hist2rna_tf.model.costs import approach_label


@dataclass
class ReportStatistics:
    predicted: pd.DataFrame  # held-out patients x genes, predicted log2(1+RSEM)
    truth: pd.DataFrame  # the same, measured
    metrics: dict  # runs.metrics: across_genes, across_patients, r_squared
    ci_genes: dict  # bootstrap median CI across genes (median, ci_low, ci_high)
    ci_patients: dict
    subtypes: tuple[dict, pd.DataFrame] | None  # the classifier's metrics and probabilities; None: too few labels
    cohorts: dict[str, pd.DataFrame] = field(default_factory=dict)  # Figure 7's cohorts, by label
    biomarkers: dict[str, pd.DataFrame] = field(default_factory=dict)  # their tests, by label
    external: ExternalCohort | None = None
    baseline: dict[str, dict] | None = None  # approach -> {median across genes, genes FDR < 0.05, median across patients}
    sequoia: pd.DataFrame | None = None  # SEQUOIA's gene table (analysis.sequoia); None: a run before 0.8.0
    sequoia_figures: dict[str, str] | None = None  # its figures, by what they are


def report_statistics(inputs: ReportInputs, run: Path, record: runs.RunRecord, run_clinical: pd.DataFrame | None,
                      external: tuple[pd.DataFrame, pd.DataFrame] | None,
                      baseline: tuple[runs.RunRecord, dict] | None) -> ReportStatistics:
    """Everything the report shows of `run` and of the tables given with it (read and checked before)."""
    predicted, truth = runs.held_out(run)
    metrics = runs.metrics(run)  # written (runs.write_metrics) when the run was trained
    reference = runs.training_reference(run, record)
    stats = ReportStatistics(predicted, truth, metrics, bootstrap_median_ci(predicted, truth, "genes", inputs.n_boot),
                             bootstrap_median_ci(predicted, truth, "patients", inputs.n_boot),
                             held_out_scores(predicted, runs.split_labels(run), *reference))
    if (run / runs.RANDOM_PREDICTIONS).is_file():
        stats.sequoia = sequoia.gene_table(truth, predicted, runs.read_patients_table(run / runs.RANDOM_PREDICTIONS))
        figures = sequoia.summary(stats.sequoia)
        stats.sequoia_figures = {
            "significant genes": f"{figures['significant']}/{figures['total']}",
            f"median r of the top {sequoia.TOP_GENES} genes": f"{figures[f'median_r_top_{sequoia.TOP_GENES}']:.3f}",
            f"genes with r > {sequoia.HIGH_R}": str(figures[f"r_above_{sequoia.HIGH_R}"])}
    if run_clinical is not None:
        stats.cohorts = held_out_cohorts(predicted, truth, run_clinical, f"{inputs.run_clinical} (--run-clinical; map "
                                         "its patient column with --run-clinical-columns)")
    if external is not None:
        stats.external = external_cohort(*external, *reference, source=f"{inputs.clinical} (--clinical; map its "
                                         "patient column with --clinical-columns)")
        stats.cohorts = {**stats.cohorts, "external, predicted": stats.external.data}
    stats.biomarkers = {label: biomarker_tests(data) for label, data in stats.cohorts.items()}
    if baseline is not None:
        mode = baseline[0].baseline.mode if baseline[0].baseline else "?"
        stats.baseline = {label: {"median across genes": summary(t["across_genes"])["median"],
                                  "genes FDR < 0.05": summary(t["across_genes"])["significant"],
                                  "median across patients": summary(t["across_patients"])["median"]}
                          for label, t in ((approach_label(record.train.head), metrics),
                                           (f"patch-based ({mode})", baseline[1]))}
    return stats
