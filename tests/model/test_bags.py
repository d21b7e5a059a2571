"""Bags of tile features streamed from the records, and the heads that read them trained end to end
(`hist2rna train --head abmil`): learning where the signal is, failing on shuffled bags, refusing
records without tile features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from hist2rna_tf.cli import main
from hist2rna_tf.model import runs
from hist2rna_tf.extract.records import read_feature_folder
from hist2rna_tf.model.inputs.bag import bag_dataset, patient_groups
from hist2rna_tf.model.predict import Predictor, predict_patients

from commandline import run as run_command
from files import snapshot
from synthetic import SUBTYPES, record, write_expression, write_labels, write_records

GENES = ["ESR1", "PGR", "ERBB2", "MKI67", "FOXA1", "KRT5", "BCL2", "MYC"]


def _bag_cohort(root, n: int = 60, seed: int = 0, shuffle: bool = False):
    """`n` patients, 10-24 tiles each: a few tumour tiles (a marker feature high) carry the patient's
    latent, which drives the genes; the rest are stroma, the same for everyone. The slide mean dilutes
    the signal by the tumour fraction (3-12 tiles); attention can find it. `shuffle`: the bags dealt
    to the wrong patients (a control that must fail)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    mixing = rng.normal(size=(2, 12))
    patients = [f"TCGA-BG-{i:04d}" for i in range(n)]
    bags = []
    for i in range(n):
        n_tumour, n_stroma = rng.integers(3, 12), rng.integers(7, 13)
        tumour = np.tanh(latent[i] @ mixing + 0.2 * rng.normal(size=(n_tumour, 12)))
        stroma = 0.5 * rng.normal(size=(n_stroma, 12))
        tiles = np.concatenate([np.c_[tumour, np.ones(n_tumour)], np.c_[stroma, np.zeros(n_stroma)]])
        bags.append(tiles[rng.permutation(len(tiles))].astype(np.float32))
    order = rng.permutation(n) if shuffle else np.arange(n)
    records = []
    for i, patient in enumerate(patients):
        tiles = bags[order[i]]
        xy = np.stack([np.arange(len(tiles)) % 5, np.arange(len(tiles)) // 5], axis=1) * 896
        records.append(record(f"{patient}-01Z-00-DX1", tiles.mean(0), tiles=tiles, tile_xy_px=xy))
    features = write_records(root / "features", records)
    log2 = 8 + latent @ rng.normal(size=(2, len(GENES))) + 0.2 * rng.normal(size=(n, len(GENES)))
    write_expression(root / "expression.csv", pd.DataFrame(log2, patients, GENES))
    write_labels(root / "clinical.csv", patients, [SUBTYPES[i % 4] for i in range(n)])
    (root / "genes.txt").write_text("\n".join(GENES) + "\n")
    return features, bags, order


def _train(root, features, out, *extra) -> int:
    return main(["train", "--features", str(features), "--expression", str(root / "expression.csv"), "--labels",
                 str(root / "clinical.csv"), "--genes", str(root / "genes.txt"), "--out", str(out), "--no-progress",
                 "--seed", "1", *extra])


def test_bags_stream_a_patients_tiles_padded_with_a_mask(tmp_path):
    rng = np.random.default_rng(0)
    a1, a2, b = rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=(6, 4))
    folder = write_records(tmp_path, [record("TCGA-AA-0001-01Z-00-DX1", a1.mean(0), tiles=a1),
                                      record("TCGA-AA-0001-01Z-00-DX2", a2.mean(0), tiles=a2),
                                      record("TCGA-AA-0002-01Z-00-DX1", b.mean(0), tiles=b)])
    slides = read_feature_folder(folder).slides
    groups = patient_groups(slides, ["TCGA-AA-0002", "TCGA-AA-0001"])
    batch = next(iter(bag_dataset(groups, 4, batch_size=2)))
    tiles, mask = batch["tiles"].numpy(), batch["mask"].numpy()
    assert tiles.shape == (2, 6, 4)
    np.testing.assert_allclose(tiles[0], b, rtol=1e-6)
    np.testing.assert_allclose(tiles[1, :5], np.concatenate([a1, a2]), rtol=1e-6)  # both slides, in order
    assert mask.tolist() == [[1] * 6, [1] * 5 + [0]] and np.all(tiles[1, 5] == 0)


@pytest.mark.slow
def test_abmil_learns_where_the_signal_is_and_fails_on_shuffled_bags(tmp_path):
    features, bags, _ = _bag_cohort(tmp_path / "real")
    assert _train(tmp_path / "real", features, tmp_path / "abmil", "--head", "abmil", "--max-epochs", "60", "--standardize") == 0
    record = runs.read_record(tmp_path / "abmil")
    assert record.train.head == "abmil" and record.head_settings["embed_dim"] == 512
    predictions, truth = runs.held_out(tmp_path / "abmil")
    rhos = [spearmanr(predictions[g], truth.loc[predictions.index, g]).statistic for g in GENES]
    assert np.median(rhos) > 0.6, rhos
    # Attention goes to the tumour tiles (the marker feature), not the stroma.
    predictor = Predictor(tmp_path / "abmil")
    from hist2rna_tf.model.inputs.bag import attention_of

    slides = read_feature_folder(features).slides
    tumour, stroma = [], []
    for path in slides["path"][:10]:
        weights = attention_of(predictor.model, [path], 13)
        marker = bags[int(slides.index[slides["path"] == path][0][8:12])][:, -1]
        tumour.append(weights[marker == 1].mean())
        stroma.append(weights[marker == 0].mean())
    assert np.mean(tumour) > 3 * np.mean(stroma)
    # Predicting from the records gives the run's own held-out predictions.
    again = predict_patients(predictor, features).loc[predictions.index]
    np.testing.assert_allclose(again.to_numpy(), predictions.to_numpy(), rtol=1e-5, atol=1e-5)
    # The same bags dealt to the wrong patients: nothing to learn.
    shuffled, _, _ = _bag_cohort(tmp_path / "shuffled", shuffle=True)
    assert _train(tmp_path / "shuffled", shuffled, tmp_path / "control", "--head", "abmil", "--max-epochs", "60", "--standardize") == 0
    predictions, truth = runs.held_out(tmp_path / "control")
    control = [spearmanr(predictions[g], truth.loc[predictions.index, g]).statistic for g in GENES]
    assert np.median(control) < 0.3, control


def test_a_bag_head_on_records_without_tile_features_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    patients = [f"TCGA-NT-{i:04d}" for i in range(12)]
    features = write_records(tmp_path, [record(f"{p}-01Z-00-DX1", rng.normal(size=4)) for p in patients])
    write_expression(tmp_path / "expression.csv", pd.DataFrame(rng.normal(8, 1, (12, 2)), patients, ["ESR1", "PGR"]))
    write_labels(tmp_path / "clinical.csv", patients)
    (tmp_path / "genes.txt").write_text("ESR1\nPGR\n")
    before = snapshot(tmp_path)
    code, err = run_command(["train", "--features", str(features), "--expression", str(tmp_path / "expression.csv"),
                             "--labels", str(tmp_path / "clinical.csv"), "--genes", str(tmp_path / "genes.txt"),
                             "--head", "abmil", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--save-tile-features" in err and "12 of 12 slides" in err
    assert len([line for line in err.splitlines() if "--save-tile-features" in line]) == 1
    assert snapshot(tmp_path) == before  # nothing written


def test_head_init_is_refused_for_a_head_that_cannot_start_from_a_file(tmp_path, capsys):
    features, _, _ = _bag_cohort(tmp_path, n=12)
    code, err = run_command(["train", "--features", str(features), "--expression", str(tmp_path / "expression.csv"),
                             "--labels", str(tmp_path / "clinical.csv"), "--genes", str(tmp_path / "genes.txt"),
                             "--head-init", str(tmp_path / "genes.txt"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "the hist2rna head cannot start from a file; it is for abmil" in err
    assert not (tmp_path / "run").exists()
