"""The experiment scripts: each is a few lines over tcga_brca.run, importable from any folder."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from hist2rna_tf.model import runs

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize("backbone", ["efficientnetv2s", "regnety320", "densenet201", "inceptionv3", "resnet50"])
def test_each_backbone_script_runs_its_backbone_on_the_main_runs_patients(backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the experiments folder: the scripts find tcga_brca.py themselves
    script = runpy.run_path(str(EXPERIMENTS / f"{backbone}.py"))  # not as __main__: nothing runs
    experiment, data = script["EXPERIMENT"], script["TCGA"]()
    assert experiment.backbone == backbone and experiment.train == script["Experiment"](backbone).train
    if backbone != "efficientnetv2s":  # Figure 3 compares the backbones on the same held-out patients
        assert experiment.split == runs.split_path(data.runs / "efficientnetv2s")
    assert data.data == EXPERIMENTS.parent / "data" / "tcga_brca"


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
