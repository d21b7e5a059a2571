"""The report (report.py): which sections each combination of inputs gives, the figures and tables
written beside it, and that it renders what the analysis modules wrote."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.config import BaselineConfig, ReportInputs
from hist2rna_tf.errors import ClinicalError, Hist2RNAError
from hist2rna_tf.model import runs
from hist2rna_tf.report.report import build_report
from hist2rna_tf.report.spatial_folder import TILES

ALWAYS = ("Run", "Gene expression prediction (held-out patients)", "PAM50 subtype from predicted genes")
OPTIONAL = ("Biomarker genes against IHC and grade", "External cohort", "Luminal A vs B from predicted genes",
            "Overall survival of luminal patients", "Patch-based baseline (Figure 10)",
            "Training time and energy (Figure 6)", "Spatial map")


def _headings(html: str) -> list[str]:
    return re.findall(r"<h[23]>([^<]*)</h[23]>", html)


def _has(headings: list[str], section: str) -> bool:
    return any(h.startswith(section.replace("&", "&amp;")) for h in headings)


@pytest.fixture(scope="module")
def cohort_files(synthetic_run, tmp_path_factory):
    """Predictions of every patient, and a clinical table tied to their measured genes."""
    from hist2rna_tf.model.predict import write_predictions

    run, cohort = synthetic_run
    root = tmp_path_factory.mktemp("report_inputs")
    write_predictions(run, cohort.features, root / "predictions.csv")
    measured = runs.targets(run)
    rng = np.random.default_rng(0)
    n = len(measured)
    labels = runs.split_labels(run).reindex(measured.index)
    clinical = pd.DataFrame({
        "patient_id": measured.index,
        "er": (measured["ESR1"] > measured["ESR1"].median()).astype(int),
        "pr": (measured["PGR"] > measured["PGR"].median()).astype(int),
        "her2": (measured["ERBB2"] > measured["ERBB2"].quantile(0.7)).astype(int),
        "grade": pd.qcut(measured["MKI67"], 3, labels=[1, 2, 3]).astype(int),
        "ki67_percent": (measured["MKI67"] - measured["MKI67"].min()) * 10,
        "os_months": rng.exponential(80, n).round(1), "os_event": rng.integers(0, 2, n),
        "size_mm": rng.uniform(5, 50, n).round(), "age": rng.integers(30, 85, n), "node_positive": rng.integers(0, 2, n),
        "ihc_subtype": np.where(labels.isin(["LumA", "LumB"]), labels, "Basal")})
    clinical.to_csv(root / "clinical.csv", index=False)
    return root / "predictions.csv", root / "clinical.csv"


def test_a_run_alone_gives_the_gene_and_subtype_sections_from_the_metrics_the_run_holds(synthetic_run, tmp_path):
    """The sections of a run alone, the files beside the report, and the metrics shown are the ones
    training wrote into the run (runs.write_metrics) (changed here on purpose: the change shows), not a recomputation."""
    run, _ = synthetic_run
    copy = shutil.copytree(run, tmp_path / "run")
    genes = pd.read_csv(copy / runs.METRICS["across_genes"], index_col=0)
    genes["fdr"] = 0.5  # no gene significant any more
    genes.to_csv(copy / runs.METRICS["across_genes"])
    out = build_report(ReportInputs(run=copy, n_boot=20))
    assert out == copy / "report" / "report.html"
    headings = _headings(out.read_text())
    assert all(_has(headings, s) for s in ALWAYS) and not any(_has(headings, s) for s in OPTIONAL)
    for name in ("figure3_correlations.png", "figure4_top_genes.png", "figure5_r_squared.png", "genes.csv",
                 "patients.csv", "subtype_metrics.csv", "subtype_confusion.csv", "subtype_probabilities.csv"):
        assert (out.parent / name).is_file(), name
    # no temp files left; the list of what it wrote (a re-run replaces those, never another file there)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == [f".{out.stem}.files"]
    shown = pd.read_csv(out.parent / "genes.csv", index_col=0)
    assert (shown["fdr"] == 0.5).all() and set(shown.index) == set(genes.index)
    assert f"<td>0/{len(genes)}</td>" in out.read_text()


def _shows(report, figure) -> None:
    """The report embeds the figure written beside it (its very bytes), and the figure is drawn (not blank)."""
    import base64
    import io

    from PIL import Image

    assert base64.b64encode(figure.read_bytes()).decode() in report.read_text(), figure.name
    pixels = np.asarray(Image.open(io.BytesIO(figure.read_bytes())).convert("L"))
    assert len(np.unique(pixels)) > 16, figure.name


def test_the_runs_own_clinical_table_adds_figure_7(synthetic_run, cohort_files, tmp_path):
    run, _ = synthetic_run
    _, clinical = cohort_files
    out = build_report(ReportInputs(run=run, run_clinical=clinical, n_boot=20), tmp_path / "r.html")
    headings = _headings(out.read_text())
    assert _has(headings, "Biomarker genes against IHC and grade") and not _has(headings, "External cohort")
    tests = pd.read_csv(tmp_path / "biomarker_tests.csv")
    assert set(tests["cohort"]) == {"held-out, predicted", "held-out, measured"}
    _shows(out, tmp_path / "figure7_biomarkers.png")


@pytest.mark.slow
def test_every_input_adds_its_section(synthetic_run, cohort_files, tmp_path):
    from hist2rna_tf.model.baseline import train_patch_baseline
    from hist2rna_tf.report.figures import save, tile_value_map

    run, _ = synthetic_run
    predictions, clinical = cohort_files
    baseline = tmp_path / "baseline"
    train_patch_baseline(run, baseline, BaselineConfig(max_epochs=3))
    maps = tmp_path / "maps"
    save(tile_value_map(np.zeros((8, 8, 3), np.uint8), 1.0, 1.0, pd.DataFrame({"x": [0], "y": [0], "ESR1": [1.0]}),
                        "ESR1", "s1"), maps / "s1_ESR1.png")
    pd.DataFrame({"x": [0], "y": [0], "ESR1": [1.0]}).to_csv(maps / f"s1{TILES}", index=False)  # as spatial writes
    out = build_report(ReportInputs(run=run, compare=[baseline], external_predictions=predictions, clinical=clinical,
                                    baseline=baseline, spatial_maps=maps, n_boot=20),
                       tmp_path / "report" / "report.html")
    headings = _headings(out.read_text())
    assert all(_has(headings, s) for s in (*ALWAYS, *OPTIONAL)), headings
    folder = out.parent
    for name in ("figure7_biomarkers.png", "figure8_mki67_ki67.png", "luminal_calls.csv",
                 "luminal_reclassification.csv", "figure10_patch_based.png", "baseline_comparison.csv",
                 "figure6_cost.png", runs.COSTS):
        assert (folder / name).is_file(), name
    km = sorted(p.name for p in folder.glob("figure9_km_*.png"))
    tables = sorted(p.name for p in folder.glob("table*_*.csv"))
    assert km == ["figure9_km_hist2rna_subtype.png", "figure9_km_ihc_subtype.png"]
    assert tables == ["table1_predicted_subtype.csv", "table2_ihc_subtype.csv"]
    comparison = pd.read_csv(folder / "baseline_comparison.csv", index_col=0)
    assert comparison.loc["hist2RNA (slide mean)", "median across genes"] == pytest.approx(
        runs.metrics(run)["across_genes"]["rho"].median())
    assert comparison.index[1] == "patch-based (frozen)"
    pd.testing.assert_frame_equal(runs.read_costs(folder / runs.COSTS), runs.read_costs(baseline))


def test_a_bad_clinical_table_leaves_no_report(synthetic_run, cohort_files, tmp_path):
    run, _ = synthetic_run
    predictions, clinical = cohort_files
    broken = tmp_path / "clinical.csv"
    pd.read_csv(clinical).assign(grade="high").to_csv(broken, index=False)
    with pytest.raises(ClinicalError, match="grade"):
        build_report(ReportInputs(run=run, external_predictions=predictions, clinical=broken, n_boot=20),
                     tmp_path / "report" / "report.html")
    assert not (tmp_path / "report").exists()  # not even the folder: the table was read before anything


def test_a_report_that_fails_midway_leaves_nothing_behind(synthetic_run, cohort_files, tmp_path, monkeypatch):
    """Figures already drawn when a late section fails are not left behind, nor is the folder they
    were drawn in; an earlier report in the folder stays as it was."""
    import hist2rna_tf.report.report as report_module

    run, _ = synthetic_run
    out = tmp_path / "report" / "report.html"
    build_report(ReportInputs(run=run, n_boot=10), out)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(report_module, "_subtype_section", fail)  # after Figures 3-5 are drawn
    with pytest.raises(RuntimeError):
        build_report(ReportInputs(run=run, n_boot=10), out)
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # nothing new, nothing hidden


def test_an_external_cohort_needs_both_its_tables(synthetic_run, tmp_path):
    """The library checks what goes together (the command line only parses): the clinical table without
    the predictions, or the reverse, is refused before anything is read or written."""
    run, _ = synthetic_run
    for given in ({"clinical": tmp_path / "c.csv"}, {"external_predictions": tmp_path / "p.csv"}):
        with pytest.raises(Hist2RNAError, match="--external-predictions and --clinical go together"):
            build_report(ReportInputs(run=run, **given), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_the_report_renders_the_statistics_computed_before_it(synthetic_run, tmp_path, monkeypatch):
    """Statistics are computed in one pass (report/statistics.py) before anything is drawn: what the page
    shows is what that pass gave (its CIs changed on purpose, the change shows), and the renderer computes
    none itself (it imports no statistic from analysis/)."""
    import ast

    import hist2rna_tf.report.report as report
    from hist2rna_tf.report.statistics import report_statistics

    def changed(*args, **kwargs):
        stats = report_statistics(*args, **kwargs)
        stats.ci_genes = {"median": 0.123, "ci_low": 0.045, "ci_high": 0.678}
        return stats

    monkeypatch.setattr(report, "report_statistics", changed)
    run, _ = synthetic_run
    page = build_report(ReportInputs(run=run, n_boot=5), tmp_path / "r.html").read_text()
    assert "0.12 (0.04-0.68)" in page
    imported = {alias.name for node in ast.walk(ast.parse(open(report.__file__).read()))
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hist2rna_tf.analysis")
                for alias in node.names}
    reads = {"TABLE", "robustness_results"}  # a `hist2rna robustness` folder's table and figure: nothing computed
    assert imported <= {"SURVIVAL_BY", "ClinicalColumns", "read_clinical", *reads}, imported
