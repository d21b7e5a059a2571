"""One self-contained HTML report of a training run (and, optionally, an external cohort): the config,
the section 2.5 metrics with bootstrap CIs, Figures 3-5, the subtype classifier, the biomarker checks,
Luminal A/B reclassification, Tables 1-2 and Kaplan-Meier curves, with the paper's own figures quoted
beside ours. Figures are embedded (base64 PNG) and also written as files with the tables as CSV.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf import __version__
from hist2rna_tf.analysis.clinical import SURVIVAL_BY, ClinicalColumns, read_clinical
from hist2rna_tf.atomic import building_files, write_bytes, write_table, write_text
from hist2rna_tf.config import ReportInputs
from hist2rna_tf.errors import Hist2RNAError, RunError
from hist2rna_tf.expression import load_panel, numeric_values, read_table_file
from hist2rna_tf.model import runs
from hist2rna_tf.outputs import input_paths, refuse_non_html, refuse_overlap
from hist2rna_tf.progress import Stages
from hist2rna_tf.report.figures import (biomarker_violins, correlation_boxes, cost_bars, kaplan_meier_plot,
                                        mki67_scatter, png_bytes, r_squared_bars, top_gene_scatter)
from hist2rna_tf.report.spatial_folder import map_figures, map_files, roles_of
from hist2rna_tf.analysis.encoder_robustness import TABLE, robustness_results
from hist2rna_tf.report.spot_section import hest_bench_results, hest_bench_section, spot_section
from hist2rna_tf.report.statistics import ReportStatistics, report_statistics

log = logging.getLogger(__name__)

# The paper's figures (Mondol et al. 2023, EfficientNetV2S on TCGA-BRCA, 160 held-out patients).
PAPER = {"across_patients_median": 0.82, "across_genes_median": 0.29, "significant_genes": "105/138",
         "r2_genes": 32, "subtype_accuracy": 0.55, "subtype_macro_f1": 0.54,
         "auroc": {"LumA": 0.79, "LumB": 0.63, "Basal": 0.89, "Her2": 0.78}}
PAPER_TABLE_1 = pd.DataFrame(
    [["Tumour Grade", "1 & 2 vs. 3", "324 vs. 81", "0.94", "0.62-1.42", "0.76", "0.92", "0.31-1.36", "0.67"],
     ["Tumour Size", ">20 vs. <=20 (mm)", "297 vs. 108", "1.57", "1.11-2.21", "0.01", "1.56", "0.77-2.15", "0.01"],
     ["Age", ">55 vs. <=55", "139 vs. 266", "3.04", "2.02-4.58", "<0.005", "2.96", "1.49-4.43", "<0.005"],
     ["LN status", "pos. vs. neg.", "283 vs. 122", "1.24", "0.89-1.73", "0.2", "1.43", "0.67-1.96", "0.03"],
     ["hist2RNA Predicted", "LumB vs. LumA", "69 vs. 336", "1.87", "1.30-2.68", "<0.005", "2.16", "1.12-3.06", "<0.005"]],
    columns=["Parameter", "Risk group cut-off", "Patients per group", "Multivariate HR", "Multivariate 95% CI",
             "Multivariate p", "Univariate HR", "Univariate 95% CI", "Univariate p"])


class Page:
    """Sections of HTML, and the figure/table files written beside the report."""

    def __init__(self, folder: Path):
        self.parts: list[str] = []
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, frame: pd.DataFrame, name: str | None = None, index: bool = True) -> None:
        if name:
            write_table(frame, self.folder / f"{name}.csv", index=index)
        self.parts.append(frame.to_html(index=index, float_format=lambda v: f"{v:.3g}", border=0, classes="t", na_rep="-"))

    def figure(self, figure, name: str, caption: str) -> None:
        data = png_bytes(figure)
        write_bytes(self.folder / f"{name}.png", data)
        self.embed(data, caption)

    def file(self, name: str, data: bytes, caption: str) -> None:
        """A file written beside the report, linked with its caption."""
        write_bytes(self.folder / name, data)
        self.parts.append(f'<p><a href="{html.escape(name)}">{html.escape(name)}</a>: {html.escape(caption)}</p>')

    def embed(self, data: bytes, caption: str) -> None:
        """PNG bytes as an inline image with its caption."""
        self.parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode()}" '
                          f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.6em 0}table.t td,table.t th{padding:.25em .6em;
border-bottom:1px solid #eee;text-align:right}table.t th{background:#f6f6f6}figure{margin:1em 0}
img{max-width:100%}figcaption{font-size:.85em;color:#555}.note{background:#fff4e5;border-left:4px solid #e67e22;
padding:.6em 1em}pre{background:#f6f6f6;padding:.6em;font-size:.8em;overflow-x:auto}"""


def build_report(inputs: ReportInputs, out: str | Path | None = None, progress: bool = False) -> Path:
    """Write the report (default `<run>/report/report.html`, figures and tables beside it). Every input is read
    first (a missing run or a malformed table stops it before anything is written); it is built aside and moved
    into place when complete (the HTML last): a failed report leaves nothing."""
    run = Path(inputs.run)
    if bool(inputs.external_predictions) != bool(inputs.clinical):
        raise Hist2RNAError("--external-predictions and --clinical go together (predicted genes and the clinical "
                            "table of the same external cohort).")
    out = Path(out) if out else run / "report" / "report.html"
    read = {"RUN": run, "--compare": inputs.compare, "--baseline": inputs.baseline,
            "--external-predictions": inputs.external_predictions, "--clinical": inputs.clinical,
            "--clinical-columns": inputs.clinical_columns, "--run-clinical": inputs.run_clinical,
            "--run-clinical-columns": inputs.run_clinical_columns, "--costs": inputs.costs, "--spatial-maps": inputs.spatial_maps,
            "--hest-bench": list(inputs.hest_bench), "--robustness": inputs.robustness}
    refuse_overlap(out, read, may_hold=("RUN", "--compare", "--baseline"))
    refuse_non_html(out)
    record = evaluated_record(run)
    given = _read_inputs(inputs)
    with Stages("report", ["statistics: bootstrap CIs, subtypes, clinical tests", "figures and tables", "writing"],
                progress) as stages, building_files(out.parent, out.stem, last=out.name, keep=input_paths(read)) as work:
        stats = report_statistics(inputs, run, record, given.run_clinical, given.external, given.baseline)
        stages.next()
        _write_report(inputs, given, stats, record, run, Page(work), work / out.name, stages)
    return out


def evaluated_record(run: str | Path, flag: str = "") -> runs.RunRecord:
    """A run's record; a RunError saying how to add one when it is an imported run without an evaluation."""
    record = runs.read_record(run)
    if record.approach == runs.IMPORTED and not (Path(run) / runs.TEST_PREDICTIONS).is_file():
        raise RunError(f"{flag}{run}: imported without --expression, so it has no evaluation to report; run `hist2rna "
                       f"import-run` of its fold ({record.imported_from['folder']}) again with --features DIR "
                       "--expression TABLE --labels TABLE (and its --genes FILE, if any), then report that run.")
    return record


@dataclass
class _Given:
    """What the user gave beside the run, read and checked before any work."""

    compare: dict[str, dict]  # a name per run (none the report's run's) -> its held-out metrics (Figure 3)
    run_clinical: pd.DataFrame | None = None
    external: tuple[pd.DataFrame, pd.DataFrame] | None = None  # predicted genes, clinical table
    baseline: tuple[runs.RunRecord, dict] | None = None  # the baseline's record and metrics
    costs: pd.DataFrame | None = None
    figures: dict[str, bytes] = field(default_factory=dict)  # title -> PNG
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # title -> (file name, its bytes)
    hest_bench: list = field(default_factory=list)  # (task, table, PNG) of each --hest-bench folder


def _read_inputs(inputs: ReportInputs) -> _Given:
    compare, taken = {}, {runs.display_name(inputs.run)}
    for other in inputs.compare:
        evaluated_record(other, "--compare ")  # a folder that is not a complete run is named here
        name = runs.display_name(other)
        name = name if name not in taken else Path(other).name  # two runs of one backbone
        compare[name] = runs.metrics(other)
        taken.add(name)
    given = _Given(compare)
    if inputs.run_clinical:
        given.run_clinical = _clinical(inputs.run_clinical, inputs.run_clinical_columns, "--run-clinical-columns")
    if inputs.external_predictions and inputs.clinical:
        predicted = read_table_file(inputs.external_predictions, sep=",", index_col=0)
        given.external = (numeric_values(predicted, inputs.external_predictions),
                          _clinical(inputs.clinical, inputs.clinical_columns, "--clinical-columns"))
    if inputs.baseline:
        given.baseline = runs.read_record(inputs.baseline), runs.metrics(inputs.baseline)
    costs = inputs.costs or inputs.baseline
    if costs:
        given.costs = _costs(Path(costs))
    maps = ((map_figures(inputs.spatial_maps, roles_of(inputs.run)), map_files(inputs.spatial_maps))
            if inputs.spatial_maps else ({}, {}))
    for title, path in {**inputs.extra_figures, **maps[0]}.items():
        given.figures[title] = _read_bytes(path)
    for title, path in {**inputs.extra_files, **maps[1]}.items():
        given.files[title] = Path(path).name, _read_bytes(path)
    given.hest_bench = [hest_bench_results(folder) for folder in inputs.hest_bench]
    if inputs.robustness:  # its figure (the index of each encoder in its caption), its table linked
        table, png, caption = robustness_results(inputs.robustness)
        given.figures[caption], given.files[caption.split(":")[0]] = png, (TABLE, table.to_csv().encode())
    return given


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Hist2RNAError(f"{path}: cannot be read for the report ({exc.strerror}).") from None


def _costs(path: Path) -> pd.DataFrame:
    """A costs.csv (`path`: the file or a baseline folder holding it), or an error naming it."""
    file = path / runs.COSTS if path.is_dir() else path
    table = read_table_file(file, sep=",")
    missing = {"approach", "hours", "kwh"} - set(table.columns)
    if missing:
        raise Hist2RNAError(f"{file}: no column {', '.join(sorted(missing))}; a costs table has approach, hours and "
                            "kwh (`hist2rna baseline` writes one).")
    return table


def _write_report(inputs: ReportInputs, given: _Given, stats: ReportStatistics, record: runs.RunRecord, run: Path,
                  page: "Page", out: Path, stages: Stages) -> None:
    """Render what `stats` holds (computed before, in one pass), section by section."""
    page.parts.append(f"<h1>{html.escape(inputs.title)}</h1><p>hist2rna-tf {__version__}, "
                      f"{time.strftime('%Y-%m-%d %H:%M')}; run folder <code>{html.escape(str(run))}</code></p>")
    if inputs.note:
        page.parts.append(f'<p class="note">{html.escape(inputs.note)}</p>')
    _config_section(page, record, run)
    if record.spots is not None:  # a spot run: per held-out sample, against HEST's ridge (spot_section.py)
        spot_section(page, run, record)
    else:
        _gene_section(page, run, stats, given.compare)
    if stats.sequoia is not None:
        _sequoia_section(page, stats.sequoia, stats.sequoia_figures)
    if record.spots is None:
        _subtype_section(page, stats.subtypes)
    if stats.external is not None:
        _external_section(page, stats)
    elif stats.cohorts:
        _biomarker_section(page, stats)
    if stats.baseline is not None:
        _baseline_section(page, stats, *given.baseline)
    if given.costs is not None:
        _cost_section(page, given.costs)
    for task, table, png in given.hest_bench:
        hest_bench_section(page, task, table, png)
    for title, png in given.figures.items():
        page.heading(title)
        page.embed(png, title)
    if given.files:
        page.heading("Files beside the report")
        for title, (name, data) in given.files.items():
            page.file(name, data, title)
    stages.next()
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(inputs.title)}</title>"
                f"<style>{CSS}</style></head><body>{''.join(page.parts)}</body></html>")
    write_text(out, document)
    stages.next()


def _config_section(page: Page, record: runs.RunRecord, run: Path) -> None:
    page.heading("Run")
    features = runs.feature_settings(run, record)
    rows = {"backbone": features.backbone if features else "?", "weights": features.weights if features else "?",
            "stain normalisation": features.normaliser if features else "?",
            "feature size": record.feature_dim, "genes": record.genes,
            f"{'spots' if record.spots else 'patients'} (train / held-out)": f"{record.patients['train']} / "
                                                                             f"{record.patients['test']}",
            "epochs (best validation MSE)": (f"{record.epochs} ({record.best_val_loss:.3f})" if record.imported_from is None
                                             else f"imported ({record.imported_from.get('source')}: "
                                                  f"{record.imported_from.get('folder')}), not trained here"),
            "head": record.train.head, "standardised in the model (not the paper)": record.train.standardize,
            "expression": record.inputs.expression, "labels": record.inputs.labels}
    page.table(pd.DataFrame({"value": rows}).astype(str))
    text = json.dumps(record.to_json(), indent=1)
    page.parts.append(f"<details><summary>config.json</summary><pre>{html.escape(text)}</pre></details>")


def _gene_section(page: Page, run: Path, stats: ReportStatistics, others: dict[str, dict]) -> None:
    pam50 = set(load_panel("pam50"))
    metrics, predicted, truth = stats.metrics, stats.predicted, stats.truth
    genes, patients, r2 = metrics["across_genes"], metrics["across_patients"], metrics["r_squared"]
    ci_genes, ci_patients = stats.ci_genes, stats.ci_patients
    top20 = genes["rho"].dropna().sort_values(ascending=False).index[:20]
    summary = pd.DataFrame({
        "ours": [f"{ci_patients['median']:.2f} ({ci_patients['ci_low']:.2f}-{ci_patients['ci_high']:.2f})",
                 f"{ci_genes['median']:.2f} ({ci_genes['ci_low']:.2f}-{ci_genes['ci_high']:.2f})",
                 f"{int((genes['fdr'] < 0.05).sum())}/{len(genes)}", f"{int((patients['fdr'] < 0.05).sum())}/{len(patients)}",
                 f"{int((r2 >= 0.1).sum())} ({sum(g in pam50 for g in r2[r2 >= 0.1].index)} PAM50)",
                 f"{sum(g in pam50 for g in top20)}/{len(top20)}"],
        "paper (EfficientNet, TCGA, n=160)": [PAPER["across_patients_median"], PAPER["across_genes_median"],
                                              PAPER["significant_genes"], "-", "32 (17 PAM50)", "13/20"]},
        index=["median Spearman across patients (95% bootstrap CI)", "median Spearman across genes (95% bootstrap CI)",
               "genes with FDR < 0.05", "patients with FDR < 0.05", "genes with R2 >= 0.1", "PAM50 genes among the top 20"])
    page.heading("Gene expression prediction (held-out patients)")
    page.table(summary.astype(str))
    compared = {runs.display_name(run): metrics, **others}  # (named apart from the run by _read_inputs)
    page.figure(correlation_boxes(compared), "figure3_correlations",
                "Figure 3: Spearman correlation and -log10 FDR across patients and across genes (paper: medians "
                "0.82 and 0.29 for EfficientNet).")
    page.figure(top_gene_scatter(predicted, truth, genes, pam50), "figure4_top_genes",
                "Figure 4: predicted vs true for the top 20 genes; PAM50 genes in red (paper: 13 of 20 PAM50).")
    page.figure(r_squared_bars(r2, pam50), "figure5_r_squared",
                "Figure 5: genes with R2 >= 0.1, PAM50 in red (paper: 32 genes, 17 PAM50).")
    table = genes.join(r2).sort_values("rho", ascending=False)
    table.insert(0, "pam50", [g in pam50 for g in table.index])
    page.parts.append("<details><summary>all genes</summary>")
    page.table(table, "genes")
    page.parts.append("</details>")
    write_table(patients, page.folder / "patients.csv")


def _sequoia_section(page: Page, genes: pd.DataFrame, figures: dict[str, str]) -> None:
    page.heading("SEQUOIA's test of a well-predicted gene (held-out patients)")
    page.text("Per gene, Pearson r of the predictions and of the same head untrained (its initialisation at the "
              "run's seed), Steiger's test between the two, RMSE of both and FDR of both p-values (Pizurica et al., "
              "Nat Commun 2024). A gene counts when r > 0, p < 0.05, its RMSE and r beat the untrained head's, Steiger "
              "p < 0.05 and its FDR < 0.2. Columns as SEQUOIA's all_genes.csv.")
    page.table(pd.DataFrame({"value": figures}))
    page.parts.append("<details><summary>all genes (SEQUOIA's columns)</summary>")
    page.table(genes, "sequoia_all_genes")
    page.parts.append("</details>")


def _subtype_section(page: Page, scores: tuple[dict, pd.DataFrame] | None) -> None:
    page.heading("PAM50 subtype from predicted genes (soft voting: RF, MLP, LDA, LR)")
    if scores is None:
        page.text("Too few labelled patients for the subtype classifier.")
        return
    metrics, probabilities = scores
    page.text("Trained on the training patients' measured RNA-seq (PAM50 genes) and their PAM50 labels, applied "
              "to the held-out patients' predicted PAM50 genes, as in the paper: the score says how much of the "
              "subtype the predicted genes carry.")
    rows = {"accuracy": (metrics["accuracy"], PAPER["subtype_accuracy"]),
            "macro F1": (metrics["macro_f1"], PAPER["subtype_macro_f1"]),
            **{f"AUROC {k}": (v, PAPER["auroc"].get(k, np.nan)) for k, v in metrics["auroc"].items()}}
    page.table(pd.DataFrame(rows, index=["ours", "paper"]).T, "subtype_metrics")
    page.text("Confusion matrix (rows: true subtype; columns: predicted):")
    page.table(metrics["confusion"], "subtype_confusion")
    write_table(probabilities, page.folder / "subtype_probabilities.csv")


def _clinical(path: Path, columns_json: Path | None, flag: str) -> pd.DataFrame:
    """A clinical table with our column names; `flag`: the option that maps its columns."""
    columns = ClinicalColumns.from_json(columns_json) if columns_json else ClinicalColumns()
    return read_clinical(path, columns, flag=flag)


def _biomarker_section(page: Page, stats: ReportStatistics) -> None:
    """Figure 7 (one row per cohort), its tests, and Figure 8 for the external cohort (its Ki67 %)."""
    page.heading("Biomarker genes against IHC and grade (Figures 7 and 8)", 3)
    cohorts, tests = stats.cohorts, stats.biomarkers
    ki67 = stats.external.data if stats.external is not None else None
    table = pd.concat([t.assign(cohort=label) for label, t in tests.items()], ignore_index=True)
    page.table(table[["cohort", *[c for c in table.columns if c != "cohort"]]], "biomarker_tests", index=False)
    page.figure(biomarker_violins(cohorts, tests), "figure7_biomarkers",
                "Figure 7: ESR1, PGR, ERBB2 by IHC status (Welch t-test) and MKI67 by grade (ANOVA), one row per "
                "cohort (paper: significant in both TCGA and the TMA cohort).")
    if ki67 is not None:
        page.figure(mki67_scatter(ki67), "figure8_mki67_ki67",
                    "Figure 8: predicted MKI67 vs Ki67 % (paper: rho = 0.31, p = 2.8e-12, n = 498).")


def _external_section(page: Page, stats: ReportStatistics) -> None:
    cohort = stats.external
    page.heading("External cohort")
    page.text(f"{len(cohort.data)} patients with predicted genes and clinical data "
              f"({len(cohort.left_out['predicted_only'])} predicted only, {len(cohort.left_out['clinical_only'])} "
              "clinical only).")
    _biomarker_section(page, stats)
    if cohort.calls is None:
        return
    moved = cohort.moved
    page.heading("Luminal A vs B from predicted genes", 3)
    page.text(f"In {moved['n']} IHC-luminal patients: IHC LumB {moved['ihc_LumB']}, predicted LumB "
              f"{moved['predicted_LumB']}; {moved['LumB_to_LumA']} IHC-LumB called LumA and {moved['LumA_to_LumB']} "
              "IHC-LumA called LumB (paper: 96 vs 69 LumB, a net shift of 27 from LumB to LumA).")
    page.table(cohort.reclassification, "luminal_reclassification")
    write_table(cohort.calls, page.folder / "luminal_calls.csv")
    page.heading("Overall survival of luminal patients (Tables 1 and 2, Figure 9)", 3)
    for (column, label), name in zip(SURVIVAL_BY, ("table1_predicted_subtype", "table2_ihc_subtype")):
        result = cohort.survival[column]
        if result.error:
            page.text(f"{label}: Cox models could not be fitted ({result.error}).")
            continue
        model = result.model
        page.text(f"{label}: n = {model['n']} ({model['events']} deaths); c-index multivariate "
                  f"{model['multivariate_c_index']:.2f}, univariate (subtype alone) {model['univariate_c_index_subtype']:.2f}"
                  + (" (paper: 0.65 and 0.56)." if column == "hist2rna_subtype" else "."))
        for note in model.get("notes", []):
            page.text(f"lifelines, fitting the multivariate model: {note}")
        page.table(result.table, name, index=False)
        page.figure(kaplan_meier_plot(result.km, f"{label}: LumB vs LumA"), f"figure9_km_{column}",
                    f"Figure 9: Kaplan-Meier overall survival by {label.lower()}.")
    page.text("The paper's Table 1 (TMA, n = 406 luminal patients, hist2RNA-predicted subtype), for comparison:")
    page.table(PAPER_TABLE_1, None, index=False)


def _baseline_section(page: Page, stats: ReportStatistics, record: runs.RunRecord, metrics: dict) -> None:
    mode = record.baseline.mode if record.baseline else "?"
    compared = {list(stats.baseline)[0]: stats.metrics, f"patch-based ({mode})": metrics}  # the run's label first
    page.heading("Patch-based baseline (Figure 10)")
    page.text(f"The same patients, split, genes, head and training settings; every tile's target is its slide's "
              f"RNA-seq and a slide's prediction is the mean of its tiles' ({mode}: "
              + ("the head on the frozen backbone's tile features" if mode == "frozen" else
                 "the backbone trained end to end on the tile images") +
              f"; {(record.tiles or {}).get('train', '?')} training tiles, {record.epochs} epochs). Paper: patch-based median "
              "across genes 0.18 (RegNet, 68 genes p < 0.05) against hist2RNA's 0.29.")
    page.table(pd.DataFrame(stats.baseline).T, "baseline_comparison")
    page.figure(correlation_boxes(compared), "figure10_patch_based",
                "Figure 10: Spearman correlation and -log10 FDR, hist2RNA vs the patch-based approach, same held-out "
                "patients.")


def _cost_section(page: Page, costs: pd.DataFrame) -> None:
    page.heading("Training time and energy (Figure 6)")
    if {"watts", "n_devices", "device"} <= set(costs.columns):
        rows = costs.drop_duplicates(["device", "watts", "n_devices"])
        page.text("Energy = measured training time x device power x devices: "
                  + "; ".join(f"{r.device}, {r.watts:g} W x {r.n_devices}" for r in rows.itertuples())
                  + ". The power is an assumption, not a measurement (hist2rna baseline --device-watts; the paper "
                    "took 300 W per V100). The ratio between approaches does not depend on it.")
    page.table(costs, "costs", index=False)
    page.figure(cost_bars(costs), "figure6_cost", "Training time and energy (time x device power). Paper: "
                "EfficientNet patch-based 4 GPUs x 8.48 h x 300 W = 10.2 kWh vs hist2RNA 0.66 h, 0.19 kWh (50x).")
