"""SEQUOIA's head as a user meets it: each slide's k-means cluster means made as their kmean_features.py
makes them and cached by what made them; `train --head sequoia` with SEQUOIA's training settings; a
published fold imported (`import-run --from sequoia`) exact to their forward, evaluated and predicted
with; and the bad inputs (too few tiles for the clusters, a folder of another layout) refused in one
line with nothing written (a config of sizes that are not whole numbers, an imported run without an
evaluation given to `report` or as another import's --out, a cohort without the fold's genes)."""

from __future__ import annotations

import dataclasses

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from hist2rna_tf.cli import main
from hist2rna_tf.errors import ModelError
from hist2rna_tf.expression import load_panel
from hist2rna_tf.extract.records import read_record, record_files, write_record
from hist2rna_tf.model import runs
from hist2rna_tf.model.inputs import kmeans as clusters
from hist2rna_tf.model.import_run import read_fold_config
from hist2rna_tf.model.predict import Predictor, predict_patients

from synthetic import latent_cohort, record

HUB_GENES = load_panel("pam50")[:5]  # names for the fixture fold's 5 outputs (genes the cohort has)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """30 patients, one slide of 12 tiles of 32 features each (the fixture fold's width), PAM50 genes."""
    return latent_cohort(tmp_path_factory.mktemp("sequoia"), load_panel("pam50"), n_patients=30, feature_dim=32,
                         tiles_per_slide=12)


def test_cluster_means_are_sequoias_kmeans():
    from sklearn.cluster import KMeans

    tiles = np.random.default_rng(3).normal(size=(60, 6)).astype(np.float32)
    # kmean_features.py's loop, as they wrote it
    kmeans = KMeans(n_clusters=5, random_state=0).fit(tiles)
    theirs = np.asarray([np.mean(tiles[np.where(kmeans.labels_ == pos)], axis=0) for pos in range(5)])
    np.testing.assert_allclose(clusters.cluster_means(tiles, 5), theirs, rtol=1e-6)


def test_cluster_means_are_cached_beside_the_record_by_what_made_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    path = tmp_path / "features" / "slide-1.tfrecord"
    write_record(record("slide-1", np.zeros(6), tiles=rng.normal(size=(20, 6))), path)
    first = clusters.slide_cluster_file(path, 4)
    assert first.parent == path.parent / clusters.CACHE_FOLDER and np.load(first).shape == (4, 6)
    np.testing.assert_allclose(np.load(first), clusters.cluster_means(read_record(path).tile_features, 4), rtol=1e-6)

    def not_again(*args):
        raise AssertionError("computed again")

    monkeypatch.setattr(clusters, "cluster_means", not_again)
    assert clusters.slide_cluster_file(path, 4) == first  # cached
    assert record_files(tmp_path / "features") == [str(path)]  # the cache is no record
    monkeypatch.undo()
    assert clusters.slide_cluster_file(path, 3) != first  # another K, another file
    write_record(record("slide-1", np.zeros(6), tiles=rng.normal(size=(20, 6))), path)  # the slide extracted again
    again = clusters.slide_cluster_file(path, 4)
    assert again != first and not np.allclose(np.load(again), np.load(first))


def _error(capsys) -> str:
    """The one error line a refused command printed (warnings aside)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def _train(cohort, out, *extra):
    return main(["train", "--features", str(cohort.features), "--expression", str(cohort.expression), "--labels",
                 str(cohort.labels), "--genes", "pam50", "--head", "sequoia", "--standardize", "--out", str(out),
                 "--no-progress", *extra])


# A smaller ViS than SEQUOIA's (depth 6, 16 heads) where its size is not what a test checks: the run's
# mechanics are the same, and tracing the full one costs ~13 s a run on 2 cores (its exactness to
# SEQUOIA's forward at their sizes: tests/model/test_heads.py).
SMALL_VIS = ["--head-option", "depth=2", "heads=2", "dim_f=8"]


@pytest.fixture(scope="module")
def sequoia_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequoia_run") / "run"
    assert _train(cohort, out, "--max-epochs", "3", *SMALL_VIS, "clusters=4") == 0
    return out


def test_a_sequoia_run_trains_with_sequoias_settings_and_predicts_alike(sequoia_run, cohort):
    record = runs.read_record(sequoia_run)
    assert record.train.head == "sequoia" and record.train.head_options == ("depth=2", "heads=2", "dim_f=8", "clusters=4")
    assert "clusters" not in dataclasses.asdict(record.train)  # K: one home, the head's settings
    # the settings the model was built with: SEQUOIA's defaults but what --head-option set
    assert record.head_settings == {"depth": 2, "heads": 2, "dim_f": 8, "dim_s": 64, "dim_c": 64, "clusters": 4}
    import keras

    mixing = keras.models.load_model(runs.model_path(sequoia_run)).get_layer("mixing_1")
    assert (mixing.heads, mixing.dim_f, mixing.dim_s) == (2, 8, 64)
    # SEQUOIA's batch and patience (src/main.py, vit.py's train); --max-epochs as given
    assert (record.train.batch_size, record.train.patience, record.train.max_epochs) == (16, 20, 3)
    assert (sequoia_run / runs.RANDOM_PREDICTIONS).is_file() and (sequoia_run / runs.SEQUOIA_TABLES["all_genes"]).is_file()
    predicted = predict_patients(Predictor(sequoia_run), cohort.features)
    held_out = runs.held_out(sequoia_run)[0]
    np.testing.assert_allclose(predicted.loc[held_out.index].to_numpy(), held_out.to_numpy(), rtol=1e-5, atol=1e-5)
    # each patient's own cluster means: the same slides dealt to other patients give other predictions
    assert np.abs(predicted.to_numpy() - predicted.to_numpy()[::-1]).max() > 1e-3


def test_fewer_tiles_than_clusters_is_refused_in_one_line(cohort, tmp_path, capsys):
    assert _train(cohort, tmp_path / "run", "--head-option", "clusters=13") == 2
    err = _error(capsys)
    assert "fewer tiles than the 13 clusters" in err and "--head-option clusters=12" in err
    assert not (tmp_path / "run").exists()
    assert main(["train", "--features", str(cohort.features), "--expression", str(cohort.expression), "--labels",
                 str(cohort.labels), "--head", "abmil", "--head-option", "clusters=4", "--out",
                 str(tmp_path / "run")]) == 2
    assert "it is a setting of --head sequoia" in capsys.readouterr().err


def _import(folder, out, *extra):
    return main(["import-run", "--from", "sequoia", str(folder), "--out", str(out), "--no-progress", *extra])


def test_a_published_fold_imports_exact_to_their_forward_and_is_evaluated(reference_data, cohort, tmp_path):
    hub = reference_data / "heads" / "sequoia_hub"  # SEQUOIA's ViS saved by its PyTorchModelHubMixin
    genes = tmp_path / "genes.txt"
    genes.write_text("\n".join(HUB_GENES) + "\n")
    out = tmp_path / "imported"
    assert _import(hub, out, "--genes", str(genes), "--features", str(cohort.features), "--expression",
                   str(cohort.expression), "--labels", str(cohort.labels)) == 0
    record = runs.read_record(out)
    assert record.approach == runs.IMPORTED and record.train.head == "sequoia" and record.genes == 5
    assert record.imported_from["config"]["num_clusters"] == 10 and len(record.imported_from["sha256"]) == 64
    io = load_file(str(reference_data / "heads" / "vis_io.safetensors"))
    run = Predictor(out)
    out_genes = np.asarray(run.model(io["clusters"], training=False))
    assert np.abs(out_genes - io["genes"]).max() <= 1e-4 * np.abs(io["genes"]).max()
    assert run.genes == HUB_GENES
    # evaluated on every patient of the cohort, held out; the untrained ViS as SEQUOIA's random model
    predicted, measured = runs.held_out(out)
    assert len(predicted) == 30 and list(predicted.columns) == HUB_GENES
    random = pd.read_csv(out / runs.RANDOM_PREDICTIONS, index_col=0)
    assert not np.allclose(random.to_numpy(), predicted.to_numpy())
    np.testing.assert_allclose(predict_patients(run, cohort.features).loc[predicted.index].to_numpy(),
                               predicted.to_numpy(), rtol=1e-5, atol=1e-5)
    # without --genes, a fold of 5 outputs does not fit SEQUOIA's 20,820 names: said, nothing written
    assert _import(hub, tmp_path / "no_genes") == 2 and not (tmp_path / "no_genes").exists()


def test_a_folder_of_another_layout_is_refused_in_one_line(reference_data, tmp_path, capsys):
    hub = reference_data / "heads" / "sequoia_hub"
    (tmp_path / "empty").mkdir()
    assert _import(tmp_path / "empty", tmp_path / "a") == 2
    assert "empty: no config.json; give the folder a SEQUOIA fold downloads to" in _error(capsys)
    other = tmp_path / "other"
    shutil.copytree(hub, other)
    (other / "config.json").write_text(json.dumps({"n_classes": 2}))
    assert _import(other, tmp_path / "b") == 2
    assert "not a SEQUOIA ViS config (no num_outputs" in _error(capsys)
    config = json.loads((hub / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, input_dim=64)))  # weights of another feature size
    genes = tmp_path / "genes.txt"
    genes.write_text("\n".join(HUB_GENES) + "\n")
    assert _import(other, tmp_path / "c", "--genes", str(genes)) == 2
    assert "pos_emb1D is (10, 32), the model's is (10, 64)" in _error(capsys)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def _edited_fold(hub: Path, tmp_path, changes: dict) -> Path:
    """A copy of the fixture fold with `changes` made to its config.json."""
    fold = shutil.copytree(hub, tmp_path / "fold")
    config = json.loads((fold / "config.json").read_text())
    (fold / "config.json").write_text(json.dumps({**config, **changes}))
    return fold


@pytest.mark.parametrize("key, value", [("depth", "two"), ("depth", 0), ("depth", -2), ("depth", None), ("depth", True),
                                        ("nheads", 2.7), ("num_clusters", "10"), ("input_dim", 0.5),
                                        ("num_outputs", -5), ("dimensions_f", [8])])
def test_a_config_size_that_is_not_a_whole_number_is_refused_naming_it(reference_data, tmp_path, key, value):
    fold = _edited_fold(reference_data / "heads" / "sequoia_hub", tmp_path, {key: value})
    with pytest.raises(ModelError) as refused:
        read_fold_config(fold)
    assert f"config.json: {key} is {json.dumps(value)}, not a whole number >= 1" in str(refused.value)


def test_integral_floats_in_the_config_are_whole_numbers(reference_data, tmp_path):
    fold = _edited_fold(reference_data / "heads" / "sequoia_hub", tmp_path, {"nheads": 3.0, "num_outputs": 5.0})
    settings, outputs, width = read_fold_config(fold)
    assert (settings.heads, settings.depth, outputs, width) == (3, 2, 5, 32)
    assert type(settings.heads) is int and type(outputs) is int


def _hub_genes(tmp_path) -> Path:
    genes = tmp_path / "genes.txt"
    genes.write_text("\n".join(HUB_GENES) + "\n")
    return genes


def test_an_imported_run_without_an_evaluation_is_not_reported_nor_replaced(reference_data, sequoia_run, tmp_path,
                                                                             capsys):
    hub, genes = reference_data / "heads" / "sequoia_hub", _hub_genes(tmp_path)
    out = tmp_path / "imported"
    assert _import(hub, out, "--genes", str(genes)) == 0
    held = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert main(["report", str(out), "--n-boot", "5"]) == 2
    err = _error(capsys)
    assert "imported: imported without --expression, so it has no evaluation to report" in err
    assert f"import-run` of its fold ({hub.resolve()}) again with --features DIR --expression TABLE --labels" in err
    assert main(["report", str(sequoia_run), "--compare", str(out), "--n-boot", "5", "--out",
                 str(tmp_path / "rep" / "r.html")]) == 2
    assert f"--compare {out}: imported without --expression" in _error(capsys)
    # import-run has no --overwrite: an existing run is named as what it is, and not offered to be replaced
    for existing, holds in ((out, "an imported run (import-run)"), (sequoia_run, "a hist2RNA training run")):
        assert _import(hub, existing, "--genes", str(genes)) == 2
        err = _error(capsys)
        assert f"{existing} exists and holds {holds}; give another --out, or remove it." in err
        assert "--overwrite" not in err
    assert sorted(p.name for p in out.iterdir()) == held and not (tmp_path / "rep").exists()


def test_a_cohort_without_the_folds_genes_or_enough_patients_is_refused_before_any_clustering(reference_data, cohort,
                                                                                             tmp_path, capsys):
    hub = reference_data / "heads" / "sequoia_hub"
    features = shutil.copytree(cohort.features, tmp_path / "features",
                               ignore=shutil.ignore_patterns(clusters.CACHE_FOLDER))
    evaluate = ["--features", str(features), "--expression", str(cohort.expression)]
    other = tmp_path / "other_genes.txt"
    other.write_text("".join(f"NOTAGENE{k}\n" for k in range(1, 6)))
    assert _import(hub, tmp_path / "a", "--genes", str(other), *evaluate, "--labels", str(cohort.labels)) == 2
    err = _error(capsys)
    assert f"{cohort.expression}: none of the 5 genes" in err and "NOTAGENE1" in err
    two = tmp_path / "two_labels.csv"
    pd.read_csv(cohort.labels).head(2).to_csv(two, index=False)
    assert _import(hub, tmp_path / "b", "--genes", str(_hub_genes(tmp_path)), *evaluate, "--labels", str(two)) == 2
    assert "2 patient(s) with features, expression and a label; evaluating the fold needs at least 3" in _error(capsys)
    assert not any((tmp_path / name).exists() for name in ("a", "b"))
    assert not (features / clusters.CACHE_FOLDER).exists()  # no slide was clustered
