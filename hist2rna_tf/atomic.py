"""Atomic outputs: write to a temp file beside the target, rename over it only when complete."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path in the target's folder (same suffix, so writers that look at it still work);
    on success rename it over `path`, on failure remove it. A re-run never finds half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files (`.<name>.<pid>.tmp<suffix>`) in `folder` that a process which is no longer
    running left behind (a `kill -9`, a power cut); those of live processes are kept. Returns them."""
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        try:
            pid = int(path.name.rsplit(".tmp", 1)[0].rsplit(".", 1)[1])
        except (IndexError, ValueError):
            continue
        if not process_alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload: dict) -> Path:
    """JSON (indented, keys sorted; what JSON cannot hold written as text), written atomically."""
    import json

    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def write_table(table, path: str | Path, index: bool = True) -> Path:
    """A pandas table as CSV, written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)
    return Path(path)
