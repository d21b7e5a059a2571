"""Interrupted and concurrent work: a `kill -9` loses nothing and leaves nothing that lies; a resumed or
concurrent extraction gives every slide's record to the bit, each slide extracted once; a killed training
run or export leaves nothing once the command runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.extract.cohort import MANIFEST, MANIFEST_LOCK
from hist2rna_tf.model import runs

from files import sha256


def _hashes(folder: Path) -> dict[str, str]:
    return {p.stem: sha256(p) for p in sorted(folder.glob("*.tfrecord")) if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_cohort, tiny_backbone_file):
    """The extraction command for the five demo slides, and the records of an uninterrupted run."""
    root = tmp_path_factory.mktemp("interruption")

    def command(out: Path) -> list[str]:
        return ["extract", "--slides", str(demo_cohort / "slides"), "--annotations", str(demo_cohort / "annotations"),
                "--out", str(out), "--backbone", str(tiny_backbone_file), "--weights", "none", "--batch-size", "8",
                "--no-progress"]

    assert main(command(root / "whole")) == 0
    whole = _hashes(root / "whole" / "tiny")
    assert len(whole) == 5
    return command, whole


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "hist2rna_tf.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_records(setup, tmp_path):
    command, whole = setup
    folder = tmp_path / "killed" / "tiny"
    run = _spawn(command(tmp_path / "killed"))
    deadline = time.time() + 120
    while time.time() < deadline and not _hashes(folder) and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    at_kill = _hashes(folder)
    assert 1 <= len(at_kill) < 5, "the run was not interrupted mid-cohort"
    # What the killed run left says only what is true: finished slides done, the others pending.
    manifest = pd.read_csv(folder / MANIFEST, index_col="slide_id", keep_default_na=False)
    assert set(manifest["status"]) <= {"done", "pending"}
    assert set(manifest.index[manifest["status"] == "done"]) <= set(at_kill)
    assert main(command(tmp_path / "killed")) == 0
    assert _hashes(folder) == whole  # every record, to the bit
    manifest = pd.read_csv(folder / MANIFEST, index_col="slide_id")
    assert set(manifest["status"]) <= {"done", "skipped"} and len(manifest) == 5
    assert sorted(p.name for p in folder.glob(".*")) == [MANIFEST_LOCK]  # no slide's lock, no temp file


@pytest.mark.slow
def test_two_runs_at_once_share_the_slides(setup, tmp_path):
    """Two identical commands started together into one folder: each slide is extracted by one of them,
    the records are the uninterrupted run's, and the manifest is the union of what both did."""
    command, whole = setup
    runs = [_spawn(command(tmp_path / "shared")) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    done = [int(out.split(" slides: ")[1].split(" done")[0]) for out, _ in outputs]
    assert sum(done) == 5, [out for out, _ in outputs]  # no slide extracted twice
    folder = tmp_path / "shared" / "tiny"
    assert _hashes(folder) == whole
    manifest = pd.read_csv(folder / MANIFEST, index_col="slide_id")
    assert len(manifest) == 5 and set(manifest["status"]) <= {"done", "skipped"}
    assert sorted(p.name for p in folder.glob(".*")) == [MANIFEST_LOCK]  # no slide's lock, no temp file


def test_a_slide_another_run_holds_is_left_to_it_and_a_dead_runs_lock_is_taken_over(setup, tmp_path, capsys):
    """Deterministically: a lock held on another host keeps its slide pending here (exit 0, said);
    a lock of a process that no longer runs on this host is taken over."""
    import socket

    command, whole = setup
    folder = tmp_path / "out" / "tiny"
    folder.mkdir(parents=True)
    (folder / ".demo-03.lock").write_text("another-node 4242\n")
    (folder / ".demo-04.lock").write_text(f"{socket.gethostname()} 999999999\n")  # no such process
    assert main(command(tmp_path / "out")) == 0
    assert "1 left to another run" in capsys.readouterr().out
    manifest = pd.read_csv(folder / MANIFEST, index_col="slide_id", keep_default_na=False)
    assert manifest.loc["demo-03", "status"] == "pending" and manifest.loc["demo-04", "status"] == "done"
    assert set(_hashes(folder)) == set(whole) - {"demo-03"}
    (folder / ".demo-03.lock").unlink()  # that node is gone: its lock removed by hand
    assert main(command(tmp_path / "out")) == 0
    assert _hashes(folder) == whole


def _kill_when(args: list[str], pattern: str, root: Path) -> None:
    """Start `hist2rna ARGS`, kill -9 it once a path matching `pattern` exists under `root`."""
    process = _spawn(args)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not list(root.glob(pattern)):
        time.sleep(0.02)
    assert process.poll() is None, "the command ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_during_train_leaves_nothing_once_trained_again(tiny_run, tmp_path):
    """A killed training run's half-built folder never becomes a run, and the next training into the
    same place removes it."""
    cohort = tiny_run / "cohort"
    args = ["train", "--features", str(tiny_run / "features" / "tiny"), "--expression", str(cohort / "expression.csv"),
            "--labels", str(cohort / "clinical.csv"), "--out", str(tmp_path / "run")]
    _kill_when([*args, "--max-epochs", "150"], f".run.building-*/{runs.HISTORY}", tmp_path)
    assert [p.name.startswith(".run.building-") for p in tmp_path.iterdir()] == [True]  # no run, one leftover
    assert main([*args, "--max-epochs", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    runs.read_record(tmp_path / "run")


@pytest.mark.slow
def test_kill_9_during_export_then_again_gives_a_pair_at_one_version(tiny_run, tmp_path):
    """A killed export leaves no version behind (both models are built aside and renamed at the end);
    the next export removes what it left and writes both at version 1."""
    saved = tmp_path / "saved"
    _kill_when(["export", str(tiny_run / "run"), "--out", str(saved)], "*/.1.building-*/*", saved)
    assert not list(saved.glob("*/1"))
    assert main(["export", str(tiny_run / "run"), "--out", str(saved)]) == 0
    assert sorted(str(p.relative_to(saved)) for p in saved.glob("*/*")) == ["tiny/1", "tiny_head/1"]
