"""Atomic outputs (atomic.py): files and folders appear whole or not at all, and what a killed writer left
aside is removed by the next one, on this host only."""

from __future__ import annotations

import os
import socket

import pytest

from hist2rna_tf.atomic import (atomic_path, building_files, building_folder, remove_stale_temp_files,
                                remove_stale_temp_folders, write_json, write_text)
from hist2rna_tf.errors import OutputError

DEAD_PID = 999999999  # no such process


def test_a_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".csv" and tmp.parent == target.parent
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_json(target.with_suffix(".json"), {"b": 1, "a": [1, 2]})
    assert target.with_suffix(".json").read_text().startswith('{\n  "a"')  # keys sorted


def test_a_folder_is_built_aside_then_replaces_the_old_one(tmp_path):
    target = tmp_path / "run"
    with building_folder(target) as work:
        assert work.parent == tmp_path and work.name.startswith(".run.building-") and work.is_dir()
        write_text(work / "a.txt", "one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with building_folder(target) as work:
            write_text(work / "a.txt", "two")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(FileExistsError):
        with building_folder(target, replace=False) as work:
            write_text(work / "a.txt", "three")
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_what_a_dead_process_left_is_removed_and_another_hosts_is_not(tmp_path):
    host = socket.gethostname()
    stale = tmp_path / f".run.building-{host}-{DEAD_PID}"
    replaced = tmp_path / f".other.replaced-{host}-{DEAD_PID}"
    live = tmp_path / f".run.building-{host}-{os.getpid()}"
    elsewhere = tmp_path / f".run.building-another-node-{DEAD_PID}"
    for folder in (stale, replaced, live, elsewhere):
        folder.mkdir()
    assert sorted(remove_stale_temp_folders(tmp_path)) == sorted([stale, replaced])
    assert live.is_dir() and elsewhere.is_dir()  # this process's, and one a node of a shared disk may be writing
    (tmp_path / f".record.{DEAD_PID}.tmp.tfrecord").write_bytes(b"")
    (tmp_path / f".record.{os.getpid()}.tmp.tfrecord").write_bytes(b"")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [f".record.{DEAD_PID}.tmp.tfrecord"]


def test_the_next_build_removes_a_killed_builds_folder(tmp_path):
    stale = tmp_path / f".run.building-{socket.gethostname()}-{DEAD_PID}"
    stale.mkdir()
    (stale / "history.csv").write_text("epoch\n")
    with building_folder(tmp_path / "run") as work:
        write_text(work / "a.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_files_built_aside_join_a_folder_of_other_files_the_page_last(tmp_path):
    """Into a folder of the user's: a file of theirs in the way stops it before anything moves; its own
    files join (the page last) and are listed, so that its next build replaces them, and only them."""
    folder = tmp_path / "mine"
    folder.mkdir()
    write_text(folder / "notes.txt", "the user's")
    write_text(folder / "figure.png", "the user's too")
    with pytest.raises(OutputError, match="holds figure.png, which this output did not write"):
        with building_files(folder, "report", last="report.html") as work:
            for name in ("report.html", "figure.png"):
                (work / name).write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["figure.png", "notes.txt"]
    assert (folder / "figure.png").read_text() == "the user's too"
    (folder / "figure.png").unlink()
    moved = []
    real_replace = os.replace

    def record(src, dst):
        moved.append(os.path.basename(dst))
        real_replace(src, dst)

    for build in ("new", "newer"):  # the second build replaces the first's files
        moved.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "replace", record)
            with building_files(folder, "report", last="report.html") as work:
                for name in ("report.html", "figure.png", "table.csv"):
                    (work / name).write_text(build)
        assert moved[-1] == "report.html" and sorted(moved) == [".report.files", "figure.png", "report.html", "table.csv"]
    assert sorted(p.name for p in folder.iterdir()) == [".report.files", "figure.png", "notes.txt", "report.html",
                                                       "table.csv"]
    assert (folder / "notes.txt").read_text() == "the user's" and (folder / "figure.png").read_text() == "newer"
    with pytest.raises(RuntimeError):
        with building_files(folder, "report", last="report.html") as work:
            (work / "figure.png").write_text("newest")
            raise RuntimeError("killed")
    assert (folder / "figure.png").read_text() == "newer"
    assert [p.name for p in folder.iterdir() if p.name[0] == "."] == [".report.files"]
