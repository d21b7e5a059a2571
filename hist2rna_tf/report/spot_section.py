"""The report's sections of spatial transcriptomics. A spot run's (spot_run/): per held-out sample,
what each model scores on its spots (HEST's figure, the mean over genes of Pearson's r across the
sample's spots; the median, and the genes at FDR < 0.05 with r > 0), the trained head beside HEST's ridge
probe and the untrained head; per gene in a figure and a table (the paper's patient-level comparisons do
not apply to spots). And a `hest-bench` folder's (`report --hest-bench DIR`): the encoders benchmarked,
beside HEST's published figures for the task, labelled as theirs."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from hist2rna_tf.model import runs
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.spot_run.metrics import PER_SAMPLE, sample_summary
from hist2rna_tf.report.figures import plt
from hist2rna_tf.spots.hest_bench import FIGURE, PUBLISHED_SOURCE, TABLE

MODEL_NAMES = {"head": "trained head", "ridge": "HEST's ridge probe", "untrained": "untrained head"}


def per_gene_figure(table: pd.DataFrame):
    """Per held-out sample, each model's per-gene Pearson r as a box with its genes as dots."""
    samples, models = list(dict.fromkeys(table["sample_id"])), list(dict.fromkeys(table["model"]))
    figure, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(samples) * len(models) / 2), 3.6))
    width, colours = 0.8 / len(models), {"head": "#1f77b4", "ridge": "#ff7f0e", "untrained": "#7f7f7f"}
    for m, model in enumerate(models):
        for s, sample in enumerate(samples):
            values = table[(table["model"] == model) & (table["sample_id"] == sample)]["pearson"].dropna()
            where = s + (m - (len(models) - 1) / 2) * width
            ax.boxplot(values, positions=[where], widths=width * 0.8, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": colours.get(model, "#2ca02c"), "alpha": 0.45})
            ax.scatter([where] * len(values), values, s=8, color=colours.get(model, "#2ca02c"), zorder=3)
    ax.set_xticks(range(len(samples)), samples)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("Pearson r across the sample's spots")
    ax.legend([plt.Rectangle((0, 0), 1, 1, color=colours.get(m, "#2ca02c"), alpha=0.6) for m in models],
              [MODEL_NAMES.get(m, m) for m in models], frameon=False, fontsize=8, loc="best")
    ax.set_title("held-out samples: each gene's Pearson r", loc="left")
    figure.tight_layout()
    return figure


def spot_section(page, run: Path, record: runs.RunRecord) -> None:
    """The section (see the module) on `page` (report.Page)."""
    spots = record.spots
    table = pd.read_csv(Path(run) / PER_SAMPLE)
    held = [s for s, info in spots["samples"].items() if info["subset"] == "test"]
    page.heading("Spot-level prediction (held-out samples)")
    page.text(f"A spot run: each spot an example, its targets the log1p of its counts"
              f"{' scaled to ' + format(spots['normalize_total'], 'g') + ' a spot' if spots['normalize_total'] else ''}"
              f" ({record.genes} genes: {html.escape(str(spots['genes']))}, chosen on the training samples); "
              f"{'each spot read with its neighbourhood within ' + format(spots['context_um'], 'g') + ' um; ' if spots['context_um'] else ''}"
              f"held out by patient: {', '.join(held)}. HEST-Benchmark's figure of a sample is the mean over genes of "
              "Pearson's r across its spots; the ridge probe is HEST's (StandardScaler, PCA, ridge) on the same "
              "spots and split.")
    summary = sample_summary(table)
    summary["model"] = summary["model"].map(lambda m: MODEL_NAMES.get(m, m))
    page.table(summary.set_index(["model", "sample_id"]).round(3), "spot_samples")
    page.figure(per_gene_figure(table), "spot_pearson_by_gene",
                "Each held-out sample's genes: Pearson r across its spots, for the trained head, HEST's ridge and the "
                "untrained head.")
    page.parts.append("<details><summary>per sample and gene (per_sample.csv)</summary>")
    page.table(table.set_index(["model", "sample_id", "gene"]).round(4), "spot_per_sample")
    page.parts.append("</details>")


def hest_bench_results(folder: str | Path) -> tuple[str, pd.DataFrame, bytes]:
    """A `hist2rna hest-bench` folder's task (its name), table and figure; a Hist2RNAError naming what is missing."""
    folder = Path(folder)
    table, figure = folder / TABLE, folder / FIGURE
    if not (table.is_file() and figure.is_file()):
        raise Hist2RNAError(f"--hest-bench {folder}: no {TABLE} and {FIGURE}; give the --out folder of a finished "
                            "`hist2rna hest-bench` run.")
    frame = pd.read_csv(table)
    task = str(frame.pop("task").iloc[0]) if "task" in frame else folder.name  # tables before 0.8 had no task column
    return task, frame, figure.read_bytes()


def hest_bench_section(page, task: str, table: pd.DataFrame, png: bytes) -> None:
    """HEST-Benchmark's table of one task: ours, then HEST's published figures (theirs, as published)."""
    page.heading(f"HEST-Benchmark: {html.escape(task)}")
    page.text(f"Mean Pearson over the task's 50 genes and its patient-level splits (HEST's probe, exact to their "
              f"code), of the encoders run here; the rows of source {html.escape(PUBLISHED_SOURCE)} are HEST's own "
              "published figures, not run here.")
    page.table(table.set_index("model").round(4), f"hest_bench_{task}")
    page.embed(png, f"HEST-Benchmark {task}: ours beside HEST's published figures")
