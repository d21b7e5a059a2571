"""The demo's whole chain: the head learns what the synthetic slides show, and shuffled targets do not."""

from __future__ import annotations

import pytest

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.cli import main
from hist2rna_tf.extract.records import read_record, write_record
from hist2rna_tf.model import folds, runs
from hist2rna_tf.model.crossval import crossval
from hist2rna_tf.report.spatial_folder import OBJECTS, TILES


@pytest.mark.slow
def test_demo_learns_beyond_shuffled_controls(tmp_path, tiny_backbone_file, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--backbone", str(tiny_backbone_file), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "demo_summary.json").read_text())
    learned, controls = summary["learned_median"], summary["control_medians"]
    assert len(controls) == 3
    assert learned > 0.4, learned
    assert learned - max(controls) > 0.25, (learned, controls)
    assert "beats every shuffled control" in printed and "nothing about real biology" in printed
    assert f"spatial maps and QuPath objects of every held-out slide: {out / 'spatial'}" in printed
    objects = summary["paths"]["spatial_objects"]  # JSON, as every path of the summary (a dict: title -> file)
    assert isinstance(objects, dict) and all((out.parent / p).is_file() or Path(p).is_file() for p in objects.values())

    # Spatial transcriptomics (issue 37): SYNTHETIC Visium sections in HEST's layout, the bulk map scored at
    # their spots beside a control's map, a spot run held out on one section beside its shuffled-spot control.
    spots = summary["spots"]
    assert "spatial (SYNTHETIC Visium sections" in printed and "shuffled-spot control" in printed, printed
    assert spots["map_median_pearson"] > spots["map_control_median_pearson"] + 0.1, spots
    assert spots["spot_head"] > spots["spot_control"] + 0.1, spots
    assert spots["held_out"] == "visium-04" and (out / "spots" / "sections" / "st" / "visium-04.h5ad").is_file()
    assert runs.read_record(out / "spots" / "spot_run").spots["samples"]["visium-04"]["subset"] == "test"

    # Sites (issue 38): a patient-level and a site-preserved crossval of the same patients, the site-leak gap and
    # PathoROB's robustness index of the features, printed and in the report.
    sites = summary["sites"]
    assert "site-leak gap: per gene" in printed and "PathoROB's robustness index of the features" in printed
    assert sites["sites"] == 6 and sites["status"] == "optimal" and 0 <= sites["robustness_index"] <= 1
    preserved = pd.read_csv(out / "sites" / "site_preserved" / "folds.csv")
    assert (preserved.groupby("site")["fold"].nunique() == 1).all() and len(preserved) == 36
    patient_level = pd.read_csv(out / "sites" / "patient_level" / "folds.csv")
    assert (patient_level.groupby("site")["fold"].nunique() > 1).any()
    split = pd.read_csv(out / "sites" / "site_preserved" / "fold-1" / runs.SPLIT)  # each fold's split: its sites
    assert set(split.loc[split["subset"] == "test", "site"]) == set(preserved.loc[preserved["fold"] == 1, "site"])
    sited = {name: out / "sites" / name for name in ("patient_level", "site_preserved")}
    gap = folds.compare(sited["site_preserved"], sited["patient_level"])  # either order: patient-level first
    assert isinstance(gap, folds.SiteLeakGap) and gap.names == ("patient_level", "site_preserved")
    assert len(gap.genes) == 138 and list(gap.difference_ci) == pytest.approx(sites["gap_folds"])
    page_path = tmp_path / "gap" / "report.html"
    assert main(["report", str(sited["patient_level"]), "--compare", str(sited["site_preserved"]), "--robustness",
                 str(out / "sites" / "robustness"), "--out", str(page_path)]) == 0
    said, page = capsys.readouterr().out, page_path.read_text()
    assert "site-leak gap" in said and "differs most" in said and (page_path.parent / "robustness.png").is_file()
    assert "Held-out figures per site" in page and "The encoders: PathoROB" in page and "site-leak gap" in page
    table = out / "sites" / "folds_site_preserved.csv"  # the folds file changed under a crossval: refused, not mixed
    changed = pd.read_csv(table)
    moved = int(changed.index[changed["fold"] != changed.loc[0, "fold"]][0])
    changed.loc[[0, moved], "fold"] = changed.loc[[moved, 0], "fold"].to_numpy()
    changed.to_csv(table, index=False)
    fold_run = runs.read_record(sited["site_preserved"] / "fold-1")
    with pytest.raises(folds.CrossvalError, match="a crossval of other folds .*changed since it began"):
        crossval(replace(fold_run.inputs, split=None), sited["site_preserved"], fold_run.train, folds_file=table)

    predictions = pd.read_csv(out / "predictions.csv", index_col=0)
    assert predictions.shape == (36, 138) and np.isfinite(predictions.to_numpy()).all()
    assert (out / "saved_models" / "tiny_head" / "1" / "saved_model.pb").is_file()
    assert (out / "saved_models" / "tiny" / "1" / "saved_model.pb").is_file()

    # The report: self-contained (figures embedded), every section present, tables beside it as CSV.
    report = (out / "report" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 8 and "SYNTHETIC" in report
    assert "The map against measurement (beyond the paper)" in report
    assert "PathoROB&#x27;s robustness index (beyond the paper" in report
    for section in ("Gene expression prediction", "PAM50 subtype from predicted genes", "External cohort",
                    "Luminal A vs B", "Tables 1 and 2"):
        assert section in report, section
    run_median = runs.metrics(out / "run")["across_genes"]["rho"].median()
    assert f"<td>{run_median:.2f} (" in report  # the run's own held-out median, with its bootstrap CI
    biomarkers = pd.read_csv(out / "report" / "biomarker_tests.csv")  # Figure 7: the run's cohort beside the external
    assert list(biomarkers["cohort"].unique()) == ["held-out, predicted", "held-out, measured", "external, predicted"]
    measured = biomarkers[biomarkers["cohort"] == "held-out, measured"].set_index("gene")
    assert measured.loc["ERBB2", "effect"] > 0 and measured.loc["ESR1", "effect"] > 0
    table1 = pd.read_csv(out / "report" / "table1_predicted_subtype.csv")
    assert list(table1["Parameter"]) == ["Tumour Grade", "Tumour Size", "Age", "LN status", "hist2RNA Predicted"]
    for kind in ("Multivariate", "Univariate"):  # each hazard ratio inside its own 95% CI, p a probability
        bounds = table1[f"{kind} 95% CI"].str.split("-", expand=True).astype(float)
        assert ((bounds[0] <= table1[f"{kind} HR"].round(2)) & (table1[f"{kind} HR"].round(2) <= bounds[1])).all()
        assert table1[f"{kind} p"].between(0, 1, inclusive="right").all()
    assert len(pd.read_csv(out / "external" / "predictions.csv")) == 60

    # Spatial maps: every tile of every held-out slide predicted by the head, drawn over the thumbnail, and
    # written as QuPath objects, which the report links (a copy beside it).
    held_out = sorted(runs.held_out(out / "run")[0].index)
    maps = sorted((out / "spatial").glob("*.png"))
    subtype_maps = [m for m in maps if m.name.endswith("_PAM50.png")]  # and one gene's (the best-predicted)
    assert len(maps) == 2 * len(held_out) and len(subtype_maps) == len(held_out)
    assert "PAM50 call from its predicted genes" in report
    objects = sorted(p.name for p in (out / "spatial").glob(f"*{OBJECTS}"))
    assert objects == [f"{s}{OBJECTS}" for s in held_out]
    for name in objects:
        assert f'href="{name}"' in report and (out / "report" / name).read_bytes() == (out / "spatial" / name).read_bytes()
    tiles = pd.read_csv(next((out / "spatial").glob(f"*{TILES}")))
    slide_id = next((out / "spatial").glob(f"*{TILES}")).name.removesuffix(TILES)
    assert len(tiles) == read_record(out / "features" / "tiny" / f"{slide_id}.tfrecord").n_tiles
    genes = runs.read_genes(out / "run")
    assert tiles[genes].std().median() > 0  # tiles differ
    assert tiles["call"].isin(["LumA", "LumB", "Basal", "Her2"]).all()
    np.testing.assert_allclose(tiles.filter(like="p_").sum(axis=1), 1.0, atol=1e-6)

    # `hist2rna spatial` for any slides with tile features: gene maps, PAM50 map, the tiles' table.
    mine = tmp_path / "maps"
    assert main(["spatial", str(out / "run"), "--features", str(out / "features" / "tiny"), "--slides",
                 str(out / "cohort" / "slides" / "demo-01.tiff"), str(out / "cohort" / "slides" / "demo-02.tiff"),
                 "--genes", "ESR1", "ERBB2", "--out", str(mine)]) == 0
    assert sorted(p.name for p in mine.iterdir()) == sorted(
        f"demo-0{i}_{name}" for i in (1, 2) for name in ("ESR1.png", "ERBB2.png", "PAM50.png", "tiles.csv",
                                                          "tiles.geojson"))
    assert main(["spatial", str(out / "run"), "--features", str(out / "features" / "tiny"), "--slides",
                 str(out / "cohort" / "slides" / "demo-01.tiff"), "--genes", "NOTAGENE", "--out", str(mine)]) == 2
    from hist2rna_tf.report.spatial_folder import \
        map_figures  # what `report --spatial-maps` embeds (tests/report/test_report.py)

    assert sum(title.startswith("Spatial map (beyond the paper): demo-0") for title in map_figures(mine)) == 6

    # The patch-based baseline on the same split, its Figure 10 and both approaches' cost (Figure 6).
    baseline = runs.metrics(out / "baseline")["across_genes"]["rho"].median()
    assert baseline > 0.3, baseline
    costs = runs.read_costs(out / "baseline")
    assert list(costs["approach"]) == ["hist2RNA (slide mean)", "patch-based (frozen)"] and (costs["kwh"] > 0).all()
    assert "Patch-based baseline (Figure 10)" in report and "Training time and energy" in report
    assert "patch-based baseline (frozen" in printed

    # The paper's patch-based models trained the backbone too: --mode finetune, from the slides' tiles.
    tuned = tmp_path / "finetune"
    assert main(["baseline", str(out / "run"), "--out", str(tuned), "--mode", "finetune", "--slides",
                 str(out / "cohort" / "slides"), "--annotations", str(out / "cohort" / "annotations"),
                 "--tiles-per-slide", "6", "--max-epochs", "2", "--quiet"]) == 0
    predicted, _ = runs.held_out(tuned)
    assert predicted.shape == runs.held_out(out / "run")[0].shape
    assert np.isfinite(predicted.to_numpy()).all()
    import keras

    before = keras.models.load_model(tiny_backbone_file).get_layer(index=2).get_weights()[0]
    after = keras.models.load_model(runs.model_path(tuned)).get_layer("tiny_avg").get_layer(index=2).get_weights()[0]
    assert before.shape == after.shape and not np.allclose(before, after)  # the backbone itself was trained
    assert runs.read_record(tuned).tiles["train"] <= 6 * 36

    # (The demo's report above holds the external cohort's sections; `hist2rna report`'s options are
    # checked in tests/cli/test_parser.py, each section in tests/report/test_report.py.)
    assert (out / "report" / "table2_ihc_subtype.csv").is_file()

    # Slide features shuffled between slides: the demo's training (its settings, inputs and split) no longer
    # learns (the features carry the signal).
    from hist2rna_tf.model.train import train_run

    records = sorted((out / "features" / "tiny").glob("*.tfrecord"))
    loaded = [read_record(p) for p in records]
    order = np.random.default_rng(3).permutation(len(loaded))
    for path, record, source in zip(records, loaded, order):
        write_record(replace(record, feature=loaded[source].feature), path)
    demo_run = runs.read_record(out / "run")
    shuffled = train_run(replace(demo_run.inputs, split=str(runs.split_path(out / "run"))), tmp_path / "shuffled",
                         demo_run.train).metrics["across_genes"]["median"]
    assert shuffled < learned - 0.3, (shuffled, learned)


def test_demo_replaces_its_own_features_made_with_other_settings(demo_cohort, tiny_backbone_file, tmp_path):
    from hist2rna_tf.config import ExtractConfig, StainConfig
    from hist2rna_tf.demo.chain import _extract

    config = ExtractConfig(backbone=str(tiny_backbone_file), weights="none", batch_size=16)
    first = _extract(demo_cohort, tmp_path, config, progress=False)
    before = read_record(first[0].record)
    again = _extract(demo_cohort, tmp_path, replace(config, stain=StainConfig(method="none")), progress=False)
    assert {r.status for r in first} == {r.status for r in again} == {"done"}
    after = read_record(again[0].record)
    assert (before.normaliser, after.normaliser) == ("macenko", "none")
    assert not np.allclose(before.feature, after.feature)
