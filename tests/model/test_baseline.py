"""The patch-based baseline: tiles learn their slide's expression, on the run's split, with both costs."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.expression import load_panel
from hist2rna_tf.extract.records import read_record, write_record
from hist2rna_tf.model import runs

from synthetic import record, write_expression, write_labels, write_records


@pytest.fixture(scope="module")
def tile_cohort(tmp_path_factory):
    """72 patients, one slide each of 4-9 tiles; each tile's feature is a noisy view of the patient's
    3-d latent, which also drives the PAM50 expression. A hist2RNA run trained on it."""
    root = tmp_path_factory.mktemp("tile_cohort")
    rng = np.random.default_rng(1)
    n, genes = 72, load_panel("pam50")
    latent = rng.normal(size=(n, 3))
    mixing = rng.normal(size=(3, 32))
    patients = [f"TCGA-TT-{i:04d}" for i in range(n)]
    records = []
    for i, patient in enumerate(patients):
        n_tiles = int(rng.integers(4, 10))
        tiles = np.tanh(latent[i] @ mixing + 0.4 * rng.normal(size=(n_tiles, 32))).astype(np.float32)
        records.append(record(f"{patient}-01Z-00-DX1", tiles.mean(0), backbone="resnet50", tiles=tiles))
    write_records(root / "features", records)
    log2 = 9 + latent @ rng.normal(size=(3, len(genes))) + 0.3 * rng.normal(size=(n, len(genes)))
    write_expression(root / "expression.csv", pd.DataFrame(log2, index=patients, columns=genes))
    write_labels(root / "clinical.csv", patients)
    assert main(["train", "--features", str(root / "features" / "resnet50"), "--expression",
                 str(root / "expression.csv"), "--labels", str(root / "clinical.csv"), "--genes", "pam50",
                 "--out", str(root / "run"), "--max-epochs", "60"]) == 0
    return root


def _median(folder) -> float:
    return float(runs.metrics(folder)["across_genes"]["rho"].median())


@pytest.mark.slow
def test_patch_baseline_learns_from_tiles_on_the_runs_split(tile_cohort, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert main(["baseline", str(tile_cohort / "run"), "--out", str(out), "--max-epochs", "10", "--quiet",
                 "--device-watts", "250", "--n-devices", "2"]) == 0
    assert "patch-based baseline (frozen" in capsys.readouterr().out
    run_test, run_targets = runs.held_out(tile_cohort / "run")
    predictions, targets = runs.held_out(out)
    assert list(predictions.index) == list(run_test.index) and list(predictions.columns) == list(run_test.columns)
    pd.testing.assert_frame_equal(targets, run_targets)
    assert _median(out) > 0.5, _median(out)
    record = runs.read_record(out)
    n_tiles = {r.slide_id[:12]: r.n_tiles for r in map(read_record, (tile_cohort / "features").rglob("*.tfrecord"))}
    assert record.tiles["test"] == sum(n_tiles[p] for p in predictions.index)
    assert record.approach == runs.PATCH_BASED and record.hist2rna_run == str((tile_cohort / "run").resolve())
    assert record.train.max_epochs == 10 and record.train.batch_size == runs.read_record(tile_cohort / "run").train.batch_size

    costs = runs.read_costs(out)
    assert list(costs["approach"]) == ["hist2RNA (slide mean)", "patch-based (frozen)"]
    assert (costs["seconds"] > 0).all() and (costs["watts"] == 250).all() and (costs["n_devices"] == 2).all()
    np.testing.assert_allclose(costs["kwh"], costs["seconds"] / 3600 * 250 * 2 / 1000)

    # Tile features moved to other slides (slide means untouched): the baseline no longer learns.
    paths = sorted((tile_cohort / "features").rglob("*.tfrecord"))
    records = [read_record(p) for p in paths]
    order = np.random.default_rng(5).permutation(len(records))
    for path, original, source in zip(paths, records, order):
        tiles = records[source].tile_features
        write_record(replace(original, tile_features=tiles, n_tiles=len(tiles),
                             tile_xy_px=np.zeros((len(tiles), 2), np.int64)), path)
    shuffled = tmp_path / "shuffled"
    try:
        assert main(["baseline", str(tile_cohort / "run"), "--out", str(shuffled), "--max-epochs", "10",
                     "--quiet"]) == 0
    finally:
        for path, original in zip(paths, records):
            write_record(original, path)
    assert _median(shuffled) < _median(out) - 0.3, (_median(shuffled), _median(out))


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    for command in (["baseline", str(empty), "--out", str(tmp_path / "b")], ["report", str(empty)]):
        assert main(command) == 2
        assert "not a training run folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_run"] and not any(empty.iterdir())
    demo = tmp_path / "demo_output"  # a folder that holds a run (the demo's): the run is named
    (demo / "run").mkdir(parents=True)
    (demo / "run" / "config.json").write_text("{}")
    assert main(["report", str(demo)]) == 2
    assert f"holds 1 (e.g. {demo / 'run'}); give one of them" in capsys.readouterr().err


def test_baseline_needs_tile_features_and_slides(tile_cohort, tmp_path, capsys):
    assert main(["baseline", str(tile_cohort / "run"), "--out", str(tmp_path / "f"), "--mode", "finetune"]) == 2
    assert "--slides" in capsys.readouterr().err
    path = next((tile_cohort / "features").rglob("*.tfrecord"))
    record = read_record(path)
    write_record(replace(record, tile_features=None), path)
    try:
        assert main(["baseline", str(tile_cohort / "run"), "--out", str(tmp_path / "b")]) == 2
    finally:
        write_record(record, path)
    assert "--save-tile-features" in capsys.readouterr().err
    assert not (tmp_path / "b" / runs.COSTS).exists()


def test_moved_features_are_named_and_found_with_features(tile_cohort, tmp_path, capsys):
    """The run records where its features were; when they moved, baseline says so and takes --features."""
    run = shutil.copytree(tile_cohort / "run", tmp_path / "run")
    moved = shutil.copytree(tile_cohort / "features" / "resnet50", tmp_path / "moved" / "resnet50")
    record = runs.read_record(run)
    data = record.to_json()
    data["inputs"]["features"] = str(tmp_path / "gone" / "resnet50")
    (run / runs.CONFIG).write_text(__import__("json").dumps(data))
    assert main(["baseline", str(run), "--out", str(tmp_path / "b"), "--max-epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "gone" / "resnet50") in err and "--features DIR" in err
    assert main(["baseline", str(run), "--features", str(moved), "--out", str(tmp_path / "b"), "--max-epochs", "1",
                 "--quiet"]) == 0
    assert runs.read_record(tmp_path / "b").inputs.features == str(moved)


def test_the_baseline_keeps_the_layers_a_run_gave_the_papers_head(tile_cohort, tmp_path):
    """`train --head-option filters=64,32 kernel_size=3`: the run's head has those layers (recorded), and
    the patch-based baseline of that run, "the same head", has them too."""
    import keras

    run, baseline = tmp_path / "run", tmp_path / "baseline"
    assert main(["train", "--features", str(tile_cohort / "features" / "resnet50"), "--expression",
                 str(tile_cohort / "expression.csv"), "--labels", str(tile_cohort / "clinical.csv"), "--genes",
                 "pam50", "--out", str(run), "--max-epochs", "1", "--head-option", "filters=64,32",
                 "kernel_size=3"]) == 0
    assert runs.read_record(run).head_settings == {"filters": [64, 32], "kernel_size": 3}
    assert main(["baseline", str(run), "--out", str(baseline), "--max-epochs", "1", "--quiet"]) == 0
    for model in (keras.models.load_model(runs.model_path(run)), keras.models.load_model(runs.model_path(baseline))):
        convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
        assert [(c.filters, c.kernel_size) for c in convolutions] == [(64, (3,)), (32, (1,))]
    assert runs.read_record(baseline).train.head_options == ("filters=64,32", "kernel_size=3")
