"""A spot run (spot_run/, `hist2rna train-spots`): a head that learns spots' counts from their
features, split by patient, its genes chosen on the training samples, HEST's ridge beside it; a shuffle
of the features learns nothing. The run folder then stands alone: `predict` gives every spot's (or
tile's) value as the run scored it, `spatial --truth` checks the map against the measured spots,
`export` serves it, `report` shows it per held-out sample."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.model import runs
from hist2rna_tf.spot_run.metrics import PER_SAMPLE

from spatial_samples import write_spot_study


def _train(study, out, *extra) -> list[str]:
    return ["train-spots", "--features", str(study["features"]), "--hest", str(study["hest"]), "--samples",
            *study["samples"], "--out", str(out), "--no-progress", "--seed", "1", *extra]


def _means(run) -> pd.Series:
    table = pd.read_csv(run / PER_SAMPLE)
    return table.groupby("model")["pearson"].mean()


@pytest.fixture(scope="module")
def spot_run(tmp_path_factory, tiny_backbone_file):
    """A study of 5 samples (SP3 and SP4 one patient) whose folder says how a tiny backbone made it, and
    a spot run on it: SP3 held out (so SP4 too), 6 HEST genes, each spot with its 150-um ring."""
    from hist2rna_tf.extract.extractor import Extractor
    from hist2rna_tf.extract.settings import Extraction
    from hist2rna_tf.spots.embed import spot_extraction

    root = tmp_path_factory.mktemp("spot_run")
    extractor = Extractor.build(spot_extraction(str(tiny_backbone_file), "none"))
    backbone = extractor.backbone
    extraction = Extraction(extractor.config, backbone.name, backbone.weights_tag, backbone.feature_dim)
    study = write_spot_study(root, dim=backbone.feature_dim, extraction=extraction)
    args = _train(study, root / "run", "--test-samples", "SP3", "--genes", "hvg:6", "--context-um", "150",
                  "--max-epochs", "60", "--standardize")
    assert main(args) == 0
    return study, root / "run", root


def test_a_spot_run_learns_the_spots_split_by_patient(spot_run, capsys):
    from hist2rna_tf.spots.genes import highly_variable_genes
    from hist2rna_tf.spots.hest import read_hest_sample

    study, run, _ = spot_run
    split = pd.read_csv(run / runs.SPLIT)
    held = split[split["subset"] == "test"]["label"].unique()
    assert sorted(held) == ["SP3", "SP4"]  # SP4 shares SP3's patient: held out with it, never on both sides
    assert split.groupby("label")["subset"].nunique().max() == 1
    record = runs.read_record(run)
    assert record.spots["context_um"] == 150 and record.feature_dim == 2 * 24 and record.spots["targets"] == "log1p counts"
    training = [read_hest_sample(study["hest"], s) for s in ("SP0", "SP1", "SP2")]
    assert runs.read_genes(run) == highly_variable_genes(training, 6)  # chosen without the held-out samples
    means = _means(run)
    assert means["head"] > 0.5 and means["ridge"] > 0.5 and means["untrained"] < 0.3, means
    assert set(pd.read_csv(run / PER_SAMPLE)["sample_id"]) == {"SP3", "SP4"}


def test_a_shuffle_of_the_spots_features_learns_nothing(tmp_path, capsys):
    study = write_spot_study(tmp_path, n_samples=4, shuffled=True, size=(1600, 1400))
    assert main(_train(study, tmp_path / "run", "--test-samples", "SP3", "--genes", "all", "--max-epochs", "10",
                       "--standardize")) == 0
    printed = capsys.readouterr().out
    assert "held-out mean Pearson per sample" in printed and "HEST's ridge" in printed, printed
    means = _means(tmp_path / "run")
    assert abs(means["head"]) < 0.25 and abs(means["ridge"]) < 0.25, means


def test_predict_and_export_give_each_spot_what_the_run_scored(spot_run, capsys):
    """The neighbourhood is made again from the record at prediction: the held-out spots' predictions are
    the run's own, from the run folder and from its head export alike."""
    study, run, root = spot_run
    out = root / "tiles.csv"
    assert main(["predict", str(run), "--features", str(study["features"]), "--out", str(out)]) == 0
    tiles = pd.read_csv(out)
    assert len(tiles) == sum(s["spots"] for s in runs.read_record(run).spots["samples"].values())
    tiles.index = tiles["slide_id"] + ":" + tiles["barcode"]
    held = runs.read_patients_table(run / runs.TEST_PREDICTIONS)
    np.testing.assert_allclose(tiles.loc[held.index, held.columns].to_numpy(), held.to_numpy(), rtol=1e-4, atol=1e-5)
    assert main(["export", str(run), "--out", str(root / "exports"), "--no-progress"]) == 0
    assert "neighbourhood's mean [N, 2F]" in capsys.readouterr().out
    exported = root / "exports" / "tiny_head" / "1"
    assert main(["predict", str(exported), "--features", str(study["features"]), "--out", str(root / "e.csv")]) == 0
    again = pd.read_csv(root / "e.csv")
    np.testing.assert_allclose(again[held.columns].to_numpy(), tiles[held.columns].to_numpy(), rtol=1e-4, atol=1e-5)


def test_spatial_truth_scores_the_map_against_the_spots(spot_run, capsys):
    study, run, root = spot_run
    out = root / "truth"
    assert main(["spatial", str(run), "--features", str(study["features"]), "--truth", "SP3", "--hest",
                 str(study["hest"]), "--out", str(out), "--spins", "19", "--no-progress"]) == 0
    assert "SP3: the map against 127 measured spots" in capsys.readouterr().out
    scores = pd.read_csv(out / "SP3_truth.csv", index_col=0)
    spots = pd.read_csv(out / "SP3_spots.csv")
    assert sorted(scores.index) == sorted(runs.read_genes(run)) and len(spots) == 127
    gene = scores.index[0]
    r = np.corrcoef(spots[f"{gene}_measured"], spots[f"{gene}_predicted"])[0, 1]
    assert scores.loc[gene, "pearson"] == pytest.approx(r) and 0 < scores.loc[gene, "p_spin"] <= 1
    detections = json.loads((out / "SP3_spots.geojson").read_text())["features"]
    assert len(detections) == 127 and detections[0]["properties"]["objectType"] == "detection"
    assert set(detections[0]["properties"]["measurements"]) == {f"{g} {s}" for g in scores.index
                                                                for s in ("measured", "predicted")}
    assert len(list(out.glob("SP3_*_truth.png"))) == 4  # the four best-scored genes


def test_the_report_shows_each_held_out_sample(spot_run):
    _, run, root = spot_run
    assert main(["report", str(run), "--out", str(root / "report" / "report.html"), "--no-progress"]) == 0
    page = (root / "report" / "report.html").read_text()
    assert "Spot-level prediction (held-out samples)" in page and "HEST's ridge probe" in page
    assert "PAM50 subtype from predicted genes" not in page  # spots carry no PAM50 label
    summary = pd.read_csv(root / "report" / "spot_samples.csv")
    assert set(summary["sample_id"]) == {"SP3", "SP4"} and len(summary) == 6


def test_folds_hold_out_every_patient_once_and_resume(spot_run, capsys):
    """`--folds 2`: the 4 patients (SP3 and SP4 one) dealt into 2 folds, each held out by a run of its own;
    summary.csv has each fold's figures and their mean and std; a re-run keeps the folds done."""
    study, _, root = spot_run
    out = root / "folds"
    args = _train(study, out, "--folds", "2", "--genes", "all", "--max-epochs", "5", "--standardize")
    assert main(args) == 0
    assert "2 folds of patients: held-out mean Pearson, mean over folds" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv", dtype={"fold": str}).set_index("fold")
    assert list(summary.index) == ["1", "2", "mean", "std"]
    held = " ".join(summary.loc[["1", "2"], "held_out"]).split()
    assert sorted(held) == study["samples"] and ("SP3" in summary.loc["1", "held_out"]) == (
        "SP4" in summary.loc["1", "held_out"])  # a patient's samples held out together
    assert summary.loc["mean", "head"] == pytest.approx(summary.loc[["1", "2"], "head"].mean())
    stamp = (out / "fold-1" / "config.json").stat().st_mtime_ns
    assert main(args) == 0 and (out / "fold-1" / "config.json").stat().st_mtime_ns == stamp
    assert main(_train(study, root / "x", "--folds", "5")) == 2  # 4 patients: 5 folds refused, nothing written
    assert "--folds 5: 4 patient(s)" in capsys.readouterr().err and not (root / "x").exists()
