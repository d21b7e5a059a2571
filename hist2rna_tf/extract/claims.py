"""Which run extracts which slide: one lock file per slide in the output folder.

Several runs may extract into one folder at once (the same command started twice, a job array
without --shard). Before a run plans a slide it creates `.<slide_id>.lock` (exclusively: the
file system decides who wins) holding its host and process id, and removes it once the slide's
record is written or its failure recorded. A slide whose lock is held is left to its holder. A
lock left by a process that no longer runs on this host (a `kill -9`, a crash) is taken over; one
held on another host is respected (delete it by hand if that node is gone), as TRIDENT does.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from hist2rna_tf.atomic import process_alive

# A lock file with no owner written into it yet is someone's, unless it is older than this.
_UNWRITTEN_GRACE_S = 30.0


class SlideClaims:
    """The slides this process holds in one output folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.held: set[str] = set()

    def path(self, slide_id: str) -> Path:
        return self.folder / f".{slide_id}.lock"

    def acquire(self, slide_id: str) -> str | None:
        """Claim a slide: None when this process now holds it, else who does ("host pid")."""
        path = self.path(slide_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(path)
                if not self._stale(slide_id, holder, path):
                    return holder or "a run that is starting"
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as lock:
                lock.write(f"{self.host} {self.pid}\n")
            self.held.add(slide_id)
            return None
        return "another run"

    def release(self, slide_id: str) -> None:
        if slide_id in self.held:
            self.path(slide_id).unlink(missing_ok=True)
            self.held.discard(slide_id)

    def release_all(self) -> None:
        for slide_id in list(self.held):
            self.release(slide_id)

    def _stale(self, slide_id: str, holder: str, path: Path) -> bool:
        """Whether a lock's holder is gone: a dead process on this host, or this very process from an
        earlier call that did not finish (a notebook's interrupted cell)."""
        parts = holder.split()
        if len(parts) != 2 or not parts[1].isdigit():  # created, not yet written (or garbled)
            try:
                return time.time() - path.stat().st_mtime > _UNWRITTEN_GRACE_S
            except FileNotFoundError:
                return True
        host, pid = parts[0], int(parts[1])
        if host != self.host:
            return False
        if pid == self.pid:
            return slide_id not in self.held
        return not process_alive(pid)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
