"""A run of a head that reads every tile, through the commands a user runs after `train`: predict from
records and from slides, both exports reloaded in a process of TensorFlow alone (one bag: genes and each
tile's attention), spatial maps of attention and its QuPath measurement, a crossval of it compared with the
paper's head on the same folds, and SEQUOIA's
test in the report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hist2rna_tf.cli import main
from hist2rna_tf.extract.records import read_record, record_files
from hist2rna_tf.model import runs
from hist2rna_tf.model.predict import Predictor, predict_patients
from hist2rna_tf.report.spatial_folder import SpatialFolder

from commandline import run_tensorflow_only


@pytest.fixture(scope="module")
def abmil_run(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("abmil_run")
    cohort = tiny_run / "cohort"
    assert main(["train", "--features", str(tiny_run / "features" / "tiny"), "--expression",
                 str(cohort / "expression.csv"), "--labels", str(cohort / "clinical.csv"), "--head", "abmil",
                 "--standardize", "--max-epochs", "2", "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.mark.slow
def test_an_abmil_run_exports_and_reloads_in_a_fresh_process(abmil_run, tiny_run, tmp_path):
    record = runs.read_record(abmil_run)
    assert record.train.head == "abmil" and (abmil_run / runs.RANDOM_PREDICTIONS).is_file()
    assert main(["export", str(abmil_run), "--out", str(tmp_path / "saved")]) == 0
    # named by backbone and head: another head's export is another model (another signature), not a version
    head, full = tmp_path / "saved" / "tiny_abmil_head" / "1", tmp_path / "saved" / "tiny_abmil" / "1"
    slide = record_files(tiny_run / "features" / "tiny")[0]
    stored = read_record(slide)
    np.save(tmp_path / "features.npy", stored.tile_features)
    printed = run_tensorflow_only(f"""
        import numpy as np
        model = tf.saved_model.load({str(head)!r})
        out = model.serve(tf.constant(np.load({str(tmp_path / 'features.npy')!r})))
        np.save({str(tmp_path / 'genes.npy')!r}, out["log2_expression"].numpy())
        np.save({str(tmp_path / 'attention.npy')!r}, out["attention"].numpy())
        print(model.metadata()["head"].numpy().decode(), model.metadata()["n_tiles"].numpy() if "n_tiles" in
              model.metadata() else "")
    """)
    assert printed.split()[0] == "abmil"
    run = Predictor(abmil_run)
    expected = run.predict([[slide]])[0]  # a bag head's examples: each patient's records
    np.testing.assert_allclose(np.load(tmp_path / "genes.npy"), expected, rtol=1e-5, atol=1e-4)
    attention = np.load(tmp_path / "attention.npy")
    assert attention.shape == (stored.n_tiles,) and attention.sum() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(attention, run.tile_values(stored.tile_features)[1], atol=1e-6)
    # The end-to-end export reads the slide's tiles itself: it names its head and gives each tile's attention.
    printed = run_tensorflow_only(f"""
        import numpy as np
        model = tf.saved_model.load({str(full)!r})
        tiles = np.full((5, 224, 224, 3), 200, np.uint8)
        out = model.serve(tf.constant(tiles))
        print(model.metadata()["head"].numpy().decode(), int(out["n_tiles"]), out["attention"].shape[0],
              out["log2_expression"].shape[0])
    """)
    assert printed.split() == ["abmil", "5", "5", str(record.genes)]
    # The head export predicts a features folder as the run does.
    from_export = predict_patients(Predictor(head), tiny_run / "features" / "tiny")
    from_run = predict_patients(run, tiny_run / "features" / "tiny")
    np.testing.assert_allclose(from_export.to_numpy(), from_run.to_numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_an_abmil_run_maps_attention_and_predicts_slides(abmil_run, tiny_run, tmp_path):
    slides = sorted((tiny_run / "cohort" / "slides").iterdir())[:2]
    out = tmp_path / "spatial"
    assert main(["spatial", str(abmil_run), "--features", str(tiny_run / "features" / "tiny"), "--slides",
                 *map(str, slides), "--out", str(out), "--genes", "ESR1", "--no-subtypes", "--no-progress"]) == 0
    folder = SpatialFolder(out)
    slide = folder.slides()[0]
    tiles = pd.read_csv(folder.tiles(slide))
    assert tiles["attention"].sum() == pytest.approx(1, abs=1e-4)
    # the attention drawn over the slide: its own colours, not the gene's map of the same tiles
    attention, gene = (np.asarray(Image.open(folder.map(slide, name)).convert("RGB")) for name in ("attention", "ESR1"))
    assert attention.shape == gene.shape and (attention != gene).any(axis=-1).mean() > 0.01
    objects = json.loads(folder.objects(slide).read_text())["features"]
    assert objects[0]["properties"]["measurements"]["attention"] == pytest.approx(tiles["attention"][0], abs=1e-4)
    # From slides: extracted with the run's settings, tile features kept for the head that reads them.
    assert main(["predict", str(abmil_run), "--slides", *map(str, slides), "--annotations",
                 str(tiny_run / "cohort" / "annotations"), "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    predicted = pd.read_csv(tmp_path / "p.csv", index_col=0)
    from_records = predict_patients(Predictor(abmil_run), tiny_run / "features" / "tiny").loc[predicted.index]
    np.testing.assert_allclose(predicted.to_numpy(), from_records.to_numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_a_crossval_names_its_head_and_refuses_another_and_the_report_shows_sequoias_test(tiny_run, abmil_run,
                                                                                           tmp_path, capsys):
    cohort = tiny_run / "cohort"
    args = ["crossval", "--features", str(tiny_run / "features" / "tiny"), "--expression",
            str(cohort / "expression.csv"), "--labels", str(cohort / "clinical.csv"), "--folds", "2", "--max-epochs",
            "1", "--standardize", "--subtypes", "LumA", "LumB", "--out", str(tmp_path / "cv"), "--no-progress"]
    assert main([*args, "--head", "abmil"]) == 0
    summary = pd.read_csv(tmp_path / "cv" / "summary.csv", index_col=0)
    assert "genes_sequoia_significant" in summary.columns
    pooled = pd.read_csv(tmp_path / "cv" / runs.SEQUOIA_TABLES["all_genes"], index_col=0)
    assert len(pooled) == 138 and "Steiger_p" in pooled.columns
    before = sorted(p.name for p in (tmp_path / "cv").iterdir())
    assert main(args) == 2  # the same folder, the paper's head: refused, naming the head
    assert "head: 'abmil' -> 'hist2rna'" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == before
    # The paper's head on the same folds, in its own folder: the report pairs the two heads gene by gene.
    assert main([*args[:-2], str(tmp_path / "cv-paper"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "cv"), "--compare", str(tmp_path / "cv-paper")]) == 0
    out = capsys.readouterr().out
    assert "cv (abmil)" in out and "cv-paper (hist2rna)" in out and "Wilcoxon" in out  # the folders, by head
    report = shutil.copytree(abmil_run, tmp_path / "run")
    assert main(["report", str(report), "--n-boot", "5", "--no-progress"]) == 0
    page = (report / "report" / "report.html").read_text()
    assert "SEQUOIA&#x27;s test of a well-predicted gene" in page and "abmil" in page


@pytest.mark.slow
def test_a_sequoia_run_exports_serves_cluster_means_and_maps_windows(tiny_run, tmp_path):
    """SEQUOIA's head on the demo slides: the head export serves one slide's cluster means (reloaded in a
    process of TensorFlow alone), the end-to-end export gives the tiles' features to cluster, and
    `spatial` maps SEQUOIA's sliding windows. (A ViS of 2 blocks of 2 heads: what is exported and served
    is the same at SEQUOIA's sizes, and the full one takes ~13 s to trace on 2 cores.)"""
    from hist2rna_tf.model.inputs.kmeans import slide_cluster_file

    cohort, features = tiny_run / "cohort", tiny_run / "features" / "tiny"
    run = tmp_path / "run"
    assert main(["train", "--features", str(features), "--expression", str(cohort / "expression.csv"), "--labels",
                 str(cohort / "clinical.csv"), "--head", "sequoia", "--standardize", "--max-epochs", "1",
                 "--head-option", "clusters=4", "depth=2", "heads=2", "--out", str(run), "--no-progress"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "saved"), "--no-progress"]) == 0
    slide = record_files(features)[0]
    np.save(tmp_path / "clusters.npy", np.load(slide_cluster_file(slide, 4)))
    printed = run_tensorflow_only(f"""
        import numpy as np
        head = tf.saved_model.load({str(tmp_path / 'saved' / 'tiny_sequoia_head' / '1')!r})
        np.save({str(tmp_path / 'genes.npy')!r}, head.serve(tf.constant(np.load({str(tmp_path / 'clusters.npy')!r})))
                ["log2_expression"].numpy())
        full = tf.saved_model.load({str(tmp_path / 'saved' / 'tiny_sequoia' / '1')!r})
        out = full.serve(tf.constant(np.full((5, 224, 224, 3), 200, np.uint8)))
        import json
        print(head.metadata()["head"].numpy().decode(), json.loads(head.metadata()["head_settings"].numpy())["clusters"],
              out["tile_features"].shape)
    """)
    assert printed.split()[:2] == ["sequoia", "4"] and "(5, 24)" in printed
    expected = Predictor(run).predict([[str(slide_cluster_file(slide, 4))]])[0]  # SEQUOIA's: cluster-means files
    np.testing.assert_allclose(np.load(tmp_path / "genes.npy"), expected, rtol=1e-5, atol=1e-4)
    out = tmp_path / "spatial"
    assert main(["spatial", str(run), "--features", str(features), "--slides", str(sorted((cohort / "slides").iterdir())[0]),
                 "--out", str(out), "--genes", "ESR1", "--no-subtypes", "--no-progress"]) == 0
    folder = SpatialFolder(out)
    tiles = pd.read_csv(folder.tiles(folder.slides()[0]))
    assert len(tiles) > 0 and np.isfinite(tiles["ESR1"]).all() and tiles["ESR1"].std() > 0
