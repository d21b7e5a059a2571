"""Per-slide locks (extract/claims.py): one run holds a slide at a time; a dead process's lock on this
host is taken over, another host's respected."""

from __future__ import annotations

import os
import socket

from hist2rna_tf.extract.claims import SlideClaims

DEAD_PID = 999999999


def test_a_slide_is_held_by_one_run_until_released(tmp_path):
    mine = SlideClaims(tmp_path)
    assert mine.acquire("slide-1") is None and mine.held == {"slide-1"}
    assert (tmp_path / ".slide-1.lock").read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    assert mine.acquire("slide-1") == f"{socket.gethostname()} {os.getpid()}"  # held, even by itself: one claim
    mine.release("slide-1")
    assert not (tmp_path / ".slide-1.lock").exists() and mine.held == set()


def test_a_dead_process_lock_is_taken_over_and_another_hosts_is_respected(tmp_path):
    (tmp_path / ".dead.lock").write_text(f"{socket.gethostname()} {DEAD_PID}\n")
    (tmp_path / ".remote.lock").write_text(f"another-node {DEAD_PID}\n")
    claims = SlideClaims(tmp_path)
    assert claims.acquire("dead") is None
    assert claims.acquire("remote") == f"another-node {DEAD_PID}"
    claims.release_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".remote.lock"]


def test_an_unwritten_lock_is_someones_for_a_while(tmp_path):
    import time

    lock = tmp_path / ".new.lock"
    lock.write_text("")  # created, its owner not yet written
    assert SlideClaims(tmp_path).acquire("new") == "a run that is starting"
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert SlideClaims(tmp_path).acquire("new") is None


def test_this_process_takes_back_a_slide_an_interrupted_call_left(tmp_path):
    """A notebook cell interrupted mid-slide leaves its lock; the next call in the same process takes it."""
    SlideClaims(tmp_path).acquire("slide-1")  # that call's claims object is gone
    assert SlideClaims(tmp_path).acquire("slide-1") is None
