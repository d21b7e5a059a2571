"""The experiment scripts: `tcga_brca.py --backbone NAME | --all | --list` (the paper's TCGA experiment on
any backbone, its facts read from the catalog), the crossval and patch-baseline scripts over it; each
importable from any folder, nothing run at import."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from hist2rna_tf.extract.backbones.catalog import ENCODERS
from hist2rna_tf.extract.backbones.checkpoints import layout_of
from hist2rna_tf.model import runs

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _tcga_brca(tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # not the experiments folder: the scripts find tcga_brca.py themselves
    return runpy.run_path(str(EXPERIMENTS / "tcga_brca.py"))  # not as __main__: nothing runs


@pytest.mark.parametrize("backbone", ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50"])
def test_each_backbone_runs_on_the_reference_runs_patients(backbone, tmp_path, monkeypatch):
    """`python experiments/tcga_brca.py --backbone NAME`: the paper's settings, and every backbone but the
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
    assert script["main"](["--backbone", backbone], data) == ["run"] and ran == [experiment]


def test_all_runs_the_reference_first_then_every_backbone_with_weights(tmp_path, monkeypatch, capsys):
    script = _tcga_brca(tmp_path, monkeypatch)
    data = script["TCGA"](encoder_weights=tmp_path / "weights")
    (tmp_path / "weights" / "uni").mkdir(parents=True)
    (tmp_path / "weights" / "uni" / "pytorch_model.bin").write_bytes(b"")
    ran = []
    monkeypatch.setitem(script["main"].__globals__, "run", lambda experiment, data: ran.append(experiment.backbone))
    script["main"](["--all"], data)
    assert ran == ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50", "uni"]
    assert "virchow2: no weights at" in capsys.readouterr().out


def test_the_backbones_are_described_from_the_catalog(tmp_path, monkeypatch, capsys):
    script = _tcga_brca(tmp_path, monkeypatch)
    assert script["main"](["--list"]) == []
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 13 and listed[0].startswith("efficientnetv2s: EfficientNetV2S (ImageNet), 1280 features")
    assert any(line.startswith("conch-v1.5: CONCH v1.5") and "448 px at 0.5 um/px" in line for line in listed)


def test_patch_baseline_script_trains_on_tile_features_of_the_same_patients(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = runpy.run_path(str(EXPERIMENTS / "patch_baseline.py"))["CONFIG"]
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
    script = runpy.run_path(str(EXPERIMENTS / "crossval_encoders.py"))
    data = script["TCGA"](encoder_weights=tmp_path / "weights")
    (tmp_path / "weights" / "uni").mkdir(parents=True)
    (tmp_path / "weights" / "uni" / "pytorch_model.bin").write_bytes(b"")
    chosen = script["with_weights"](data)
    assert chosen == ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50", "uni"]
    assert (script["FOLDS"], script["REFERENCE"]) == (5, "efficientnetv2s")
