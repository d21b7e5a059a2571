"""The experiment scripts: `tcga_brca.py --backbone NAME | --all | --list` (the paper's TCGA experiment on
any backbone, its facts read from the catalog), the crossval and patch-baseline scripts over it; each
importable from any folder, nothing run at import."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hist2rna_tf.config import PAM50_LABEL_COLUMN, TrainConfig
from hist2rna_tf.extract.backbones.catalog import ENCODERS
from hist2rna_tf.extract.backbones.checkpoints import layout_of
from hist2rna_tf.model import runs

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _script(name: str) -> dict:
    """The namespace of the experiment `name`, the module `python -m experiments.NAME` runs (importing it
    runs nothing)."""
    return vars(importlib.import_module(f"experiments.{name}"))


def _tcga_brca(tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # not the repository: the package is found on the path (setup.cfg), not the cwd
    return _script("tcga_brca")  # not as __main__: nothing runs


@pytest.mark.parametrize("backbone", ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50"])
def test_each_backbone_runs_on_the_reference_runs_patients(backbone, tmp_path, monkeypatch):
    """`python -m experiments.tcga_brca --backbone NAME`: the paper's settings, and every backbone but the
    reference held out on the reference run's patients (Figure 3 compares them on the same patients)."""
    script = _tcga_brca(tmp_path, monkeypatch)
    data = script["TCGA"]()
    experiment = script["experiment_for"](backbone, data)
    assert experiment.backbone == backbone and experiment.train == script["Experiment"](backbone).train
    if backbone != "efficientnetv2s":
        assert experiment.split == runs.split_path(data.runs / "efficientnetv2s")
    else:
        assert experiment.split is None
    assert data.data == EXPERIMENTS.parent / "data" / "tcga_brca"
    ran = []
    monkeypatch.setitem(script["main"].__globals__, "run", lambda experiment, data: ran.append(experiment) or "run")
    assert script["main"](["--backbone", backbone], _downloaded(script, tmp_path)) == ["run"] and ran == [experiment]


def _downloaded(script, tmp_path, **kwargs):
    """The experiment's data, as if downloaded under tmp_path (empty files: nothing reads them here)."""
    data = script["TCGA"](data=tmp_path / "tcga_brca", **kwargs)
    data.slides.mkdir(parents=True)
    data.expression.write_text("Hugo_Symbol\n")
    data.labels.write_text("patient\n")
    return data


def test_all_runs_the_reference_first_then_every_backbone_with_weights(tmp_path, monkeypatch, capsys):
    script = _tcga_brca(tmp_path, monkeypatch)
    data = _downloaded(script, tmp_path, encoder_weights=tmp_path / "weights")
    (tmp_path / "weights" / "uni").mkdir(parents=True)
    (tmp_path / "weights" / "uni" / "pytorch_model.bin").write_bytes(b"")
    ran = []
    monkeypatch.setitem(script["main"].__globals__, "run", lambda experiment, data: ran.append(experiment.backbone))
    script["main"](["--all"], data)
    assert ran == ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50", "uni"]
    assert "virchow2: no weights at" in capsys.readouterr().out


def test_missing_data_is_named_before_any_backbone_is_built(tmp_path, monkeypatch, capsys):
    """Without the TCGA data the experiment stops at once, naming each missing input and where the README
    says to get it (before, ImageNet weights were downloaded first, then extraction found no slides)."""
    script = _tcga_brca(tmp_path, monkeypatch)
    data = script["TCGA"](data=tmp_path / "tcga_brca")
    (tmp_path / "tcga_brca").mkdir()
    data.labels.write_text("patient\n")
    monkeypatch.setitem(script["main"].__globals__, "run", lambda *a: pytest.fail("ran without its data"))
    with pytest.raises(SystemExit) as stop:
        script["main"](["--backbone", "resnet50"], data)
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1 and "experiments/README.md" in said
    assert "the slides" in said and "the RNA-seq table" in said and "the subtype labels" not in said
    with pytest.raises(SystemExit):  # --data: the data elsewhere, named as such
        script["main"](["--backbone", "resnet50", "--data", str(tmp_path / "elsewhere")], data)
    assert str(tmp_path / "elsewhere" / "slides") in capsys.readouterr().err


def test_the_backbones_are_described_from_the_catalog(tmp_path, monkeypatch, capsys):
    script = _tcga_brca(tmp_path, monkeypatch)
    assert script["main"](["--list"]) == []
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 13 and listed[0].startswith("efficientnetv2s: EfficientNetV2S (ImageNet), 1280 features")
    assert any(line.startswith("conch-v1.5: CONCH v1.5") and "448 px at 0.5 um/px" in line for line in listed)


def test_patch_baseline_script_trains_on_tile_features_of_the_same_patients(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _script("patch_baseline")["CONFIG"]
    assert config["experiment"].save_tile_features and config["experiment"].backbone == "regnety320"
    assert config["experiment"].split == runs.split_path(config["data"].runs / "efficientnetv2s")
    assert config["baseline"].mode == "frozen" and config["baseline"].device_watts == 300.0


def test_no_experiment_reads_environment_variables():
    for script in EXPERIMENTS.glob("*.py"):
        text = script.read_text()
        assert "os.environ" not in text and "getenv" not in text, script.name


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_each_encoder_extracts_at_its_own_scale_with_the_users_weights(encoder, tmp_path, monkeypatch):
    """`--backbone <encoder>`: its tiles at the encoder's own scale (CONCH v1.5 448 px, the others 224,
    all at 0.5 um/px), its weights file from weights/<encoder>/ (Phikon-v2: that folder), the reference
    run's held-out patients."""
    import hist2rna_tf.extract.cohort as cohort

    script = _tcga_brca(tmp_path, monkeypatch)
    data = script["TCGA"]()
    experiment = script["experiment_for"](encoder, data)
    assert experiment.backbone == encoder
    assert experiment.split == runs.split_path(data.runs / "efficientnetv2s")
    seen = {}

    def extract_cohort(slides, out, config, annotations, progress):
        seen["config"] = config
        raise SystemExit("stop before the work")

    monkeypatch.setattr(cohort, "extract_cohort", extract_cohort)
    with pytest.raises(SystemExit):
        script["run"](experiment, data)
    spec = ENCODERS[encoder]
    config = seen["config"]
    assert (config.backbone, config.tiles.tile_size_px, config.tiles.target_mpp) == (encoder, spec.tile_size_px, 0.5)
    folder = data.encoder_weights / encoder
    assert Path(config.weights) == (folder if layout_of(spec.vit).is_folder else folder / spec.weights_file)


def test_the_crossval_script_compares_every_backbone_it_has_weights_for(tmp_path, monkeypatch):
    """experiments/crossval_encoders.py: the paper's five always (ImageNet weights), an encoder only
    when its weights are under weights/<encoder>/."""
    monkeypatch.chdir(tmp_path)
    script = _script("crossval_encoders")
    data = script["TCGA"](encoder_weights=tmp_path / "weights")
    (tmp_path / "weights" / "uni").mkdir(parents=True)
    (tmp_path / "weights" / "uni" / "pytorch_model.bin").write_bytes(b"")
    chosen = script["with_weights"](data)
    assert chosen == ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50", "uni"]
    assert (script["FOLDS"], script["REFERENCE"]) == (5, "efficientnetv2s")


def test_the_heads_script_crossvalidates_each_head_on_the_same_folds_and_features(tmp_path, monkeypatch):
    """experiments/heads.py: one extraction with every tile kept, then a crossval a head (the same folds,
    seed and inputs; each head with its source's training settings, ABMIL from FEATHER's weights where
    they are here and fit the backbone), compared with the paper's head."""
    import hist2rna_tf.model.crossval as crossval_module
    import hist2rna_tf.report.crossval as report_module

    monkeypatch.chdir(tmp_path)
    script = _script("heads")
    data = script["TCGA"](runs=tmp_path / "runs", encoder_weights=tmp_path / "weights")
    assert script["head_config"]("hist2rna", "uni", data) == TrainConfig(head="hist2rna")  # the paper's
    sequoia = script["head_config"]("sequoia", "uni", data)
    assert (sequoia.batch_size, sequoia.max_epochs, sequoia.patience) == (16, 200, 20)
    assert script["head_config"]("abmil", "uni", data).head_init is None  # no FEATHER file: trained from scratch
    feather = tmp_path / "weights" / "feather-uni" / "model.safetensors"
    feather.parent.mkdir(parents=True)
    feather.write_bytes(b"")
    assert script["head_config"]("abmil", "uni", data).head_init == str(feather)
    assert script["head_config"]("abmil", "efficientnetv2s", data).head_init is None  # FEATHER has no weights for it
    extracted, calls = [], []
    monkeypatch.setitem(script["main"].__globals__, "extract",
                        lambda experiment, data: extracted.append(experiment) or tmp_path / "features" / "uni")
    monkeypatch.setitem(script["main"].__globals__, "compared", lambda folders: [{"head": h} for h in folders])
    monkeypatch.setattr(crossval_module, "crossval", lambda inputs, out, config, folds, seed, progress:
                        calls.append((inputs, out, config, folds, seed)))
    monkeypatch.setattr(report_module, "build_crossval_report", lambda first, others, out: (out, others))
    root = script["main"]([], data)
    assert [e.save_tile_features for e in extracted] == [True] and extracted[0].backbone == "uni"
    assert [c[2].head for c in calls] == ["hist2rna", "abmil", "sequoia"]
    assert len({(str(c[0]), c[3], c[4]) for c in calls}) == 1 and calls[0][0].split is None  # same folds, inputs
    assert [c[1] for c in calls] == [root / h for h in ("hist2rna", "abmil", "sequoia")]
    assert pd.read_csv(root / "comparison.csv")["head"].tolist() == ["hist2rna", "abmil", "sequoia"]


SEQUOIA_SPLITS = Path(__file__).resolve().parents[1] / "data" / "heads" / "sequoia_splits" / "TCGA-BRCA.npy"


def test_sequoias_published_patient_splits_are_read_from_their_zip_or_npy(tmp_path, monkeypatch):
    """Their TCGA-BRCA splits (pickled under pandas 1) read under this pandas: 5 folds of 1,059 patients,
    each test fold apart from its training and validation patients, the test folds a partition."""
    import zipfile

    monkeypatch.chdir(tmp_path)
    script = _script("sequoia_folds")
    splits = script["read_splits"](SEQUOIA_SPLITS)
    assert sorted(splits) == [0, 1, 2, 3, 4]
    assert [len(f["test"]) for f in splits.values()] == [212, 212, 212, 212, 211]
    assert {len(f["val"]) for f in splits.values()} == {85}
    for fold in splits.values():
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
        assert all(p.startswith("TCGA-") and len(p) == 12 for p in fold["test"])
    tests = [p for f in splits.values() for p in f["test"]]
    assert len(tests) == len(set(tests)) == 1059
    archive = tmp_path / "patient_splits.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(SEQUOIA_SPLITS, "patient_splits/TCGA-BRCA.npy")
    assert script["read_splits"](archive) == splits
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zipped:
        zipped.writestr("patient_splits/TCGA-LUAD.npy", b"")
    with pytest.raises(SystemExit, match="other.zip: no patient_splits/TCGA-BRCA.npy"):
        script["read_splits"](tmp_path / "other.zip")


def test_each_sequoia_fold_trains_on_their_patients_and_evaluates_theirs_on_its_test_patients(tmp_path, monkeypatch):
    """experiments/sequoia_folds.py: SEQUOIA's features (UNI, 256 px at 0.5 um/px, no stain normalisation,
    every tile kept); a fold's split file (their train + val -> train, test -> test), its published model
    imported and evaluated on the test patients' labels alone, skipped (said) without its weights."""
    import hist2rna_tf.model.import_run as hub
    import hist2rna_tf.model.train as train

    monkeypatch.chdir(tmp_path)
    script = _script("sequoia_folds")
    data = script["TCGA"](data=tmp_path / "data", encoder_weights=tmp_path / "weights")
    config = script["sequoia_features"](data)
    assert (config.backbone, config.tiles.tile_size_px, config.tiles.target_mpp) == ("uni", 256, 0.5)
    assert config.stain.method == "none" and config.save_tile_features and config.tiles.max_tiles >= 100_000
    assert Path(config.weights) == tmp_path / "weights" / "uni" / "pytorch_model.bin"
    data.labels.parent.mkdir(parents=True)
    data.labels.write_text(f"patient,{PAM50_LABEL_COLUMN}\nTCGA-AA-0001,LumA\nTCGA-AA-0002,Basal\n"
                           "TCGA-AA-0003,Her2\nTCGA-AA-0004,LumB\n")
    fold = {"train": ["TCGA-AA-0001"], "val": ["TCGA-AA-0002"], "test": ["TCGA-AA-0003", "TCGA-AA-0004"]}
    calls = {}
    monkeypatch.setattr(hub, "import_sequoia", lambda folder, out, evaluate, overwrite, progress:
                        calls.setdefault("imported", (folder, evaluate)) and out)
    monkeypatch.setattr(train, "train_run", lambda inputs, out, config, verbose, overwrite:
                        calls.setdefault("trained", (inputs, config)) and runs.TrainedRun(out, None, {}))
    folders = script["run_fold"](2, fold, tmp_path / "features", data, data.expression, tmp_path / "fold-2")
    assert list(folders) == ["trained"] and "imported" not in calls  # no weights: theirs skipped
    split = pd.read_csv(tmp_path / "fold-2" / "split.csv").set_index("patient_id")["subset"]
    assert split.to_dict() == {"TCGA-AA-0001": "train", "TCGA-AA-0002": "train", "TCGA-AA-0003": "test",
                               "TCGA-AA-0004": "test"}
    inputs, trained = calls["trained"]
    assert inputs.split == str(tmp_path / "fold-2" / "split.csv") and inputs.drop_missing_genes
    assert Path(inputs.genes).read_text().split()[:3] == ["A1BG", "A1BG-AS1", "A2M"]  # SEQUOIA's genes, in order
    assert (trained.head, trained.batch_size, trained.max_epochs, trained.validation_fraction) == ("sequoia", 16, 200,
                                                                                                   0.1)
    script["fold_weights"](data, 2).mkdir(parents=True)
    calls.clear()
    folders = script["run_fold"](2, fold, tmp_path / "features", data, data.expression, tmp_path / "fold-2")
    assert list(folders) == ["published", "trained"]
    folder, evaluate = calls["imported"]
    assert folder == tmp_path / "weights" / "sequoia-brca-2"
    tested = pd.read_csv(evaluate.labels)
    assert tested["patient"].tolist() == ["TCGA-AA-0003", "TCGA-AA-0004"]  # the fold's test patients alone


def test_the_experiments_are_modules_of_a_package_run_with_python_m():
    """No script puts its folder on sys.path: each is `python -m experiments.NAME` from the repository's
    folder, and its usage says so."""
    for script in EXPERIMENTS.glob("*.py"):
        text = script.read_text()
        assert "sys.path" not in text and "python experiments/" not in text, script.name
    done = subprocess.run([sys.executable, "-m", "experiments.tcga_brca", "--list"], capture_output=True, text=True,
                          cwd=EXPERIMENTS.parent)
    assert done.returncode == 0 and done.stdout.startswith("efficientnetv2s: EfficientNetV2S"), done.stderr[-2000:]
    for name in ("tcga_brca", "crossval_encoders", "heads", "sequoia_folds", "patch_baseline", "bench_spots"):  # --help: nothing runs
        done = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--help"], capture_output=True, text=True,
                              cwd=EXPERIMENTS.parent, timeout=120)
        assert done.returncode == 0 and f"python -m experiments.{name}" in done.stdout, (name, done.stderr[-1000:])


def test_site_folds_compares_a_published_split_with_ours(tmp_path):
    """`python -m experiments.site_folds --splits brca_splits.csv`: on the patients a published site-preserved
    split (slides a row, a named column of folds) shares with the labels, both objectives; ours no worse."""
    compare_folds = _script("site_folds")["compare_folds"]
    patients = [f"TCGA-{s}-{i:04d}" for i, s in enumerate(["A1", "A2", "B1", "B2", "C1", "C2"] * 4)]
    labels = pd.DataFrame({"patient": patients, PAM50_LABEL_COLUMN: ["LumA", "Basal", "LumA", "LumB"] * 6})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    site_fold = {"A1": 1, "A2": 1, "B1": 2, "B2": 2, "C1": 3, "C2": 3}  # whole sites, unbalanced by design
    pd.DataFrame({"slide": [f"{p}-01Z-00-DX1" for p in patients], "submitter_id": patients,
                  "CV3_subtype_preserved_site": [site_fold[p[5:7]] for p in patients]}).to_csv(
        tmp_path / "splits.csv", index=False)
    result = compare_folds(tmp_path / "splits.csv", "CV3_subtype_preserved_site", tmp_path / "labels.csv",
                           PAM50_LABEL_COLUMN, 10.0)
    assert result["patients"] == 24 and result["k"] == 3 and result["status"] == "optimal"
    assert result["ours"] <= result["theirs"] and result["counts"]["ours"].to_numpy().sum() == 24
