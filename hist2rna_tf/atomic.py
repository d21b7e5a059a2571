"""Atomic outputs: a file or a folder is written aside, then renamed into place only when complete.

A reader never meets half an output, and what a killed process (`kill -9`, a power cut) left aside
is removed by the next writer into the same place: temp files and folders carry the writer's
process id, and those of processes no longer running on this host are stale.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

from hist2rna_tf.errors import OutputError

# What `atomic_path` and `building_folder` put beside their target: `.<name>.<pid>.tmp<suffix>`, and
# `.<name>.building-<host>-<pid>` / `.<name>.replaced-<host>-<pid>` (the host too: folders are often
# built on a file system that several machines share).
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp(\.[^.]*)?$")
_TEMP_FOLDER = re.compile(r"^\.(.+)\.(?:building|replaced)-(.+)-(\d+)$")


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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


@contextmanager
def building_folder(target: str | Path, replace: bool = True):
    """Yield an empty folder beside `target` (`.<name>.building-<host>-<pid>`) to build it in. On
    success it is renamed to `target`: an existing `target` is moved aside first and deleted after
    (`replace`), or FileExistsError when `replace` is False. On failure it is removed. What dead
    processes of this host left beside `target` is removed first, so a `kill -9` leaves nothing for
    good. Runs and exports are built this way."""
    target = Path(target)
    with _aside(target) as work:
        yield work
        if not replace:
            if target.exists():
                raise FileExistsError(target)
            work.rename(target)
            return
        old = target.with_name(f".{target.name}.replaced-{_owner()}")
        if target.exists():
            target.rename(old)
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building_files(folder: str | Path, name: str, last: str | None = None, keep=()):
    """Yield an empty folder beside `folder/name` to write files in; on success each is moved into
    `folder` (`last` moved last, e.g. the HTML page that links the others), on failure none is. For
    outputs that share a folder with other files (a report written into a folder of the user's): the
    files moved in are listed in `.<name>.files`, and a file of the same name replaced only when the
    previous build of `name` listed it (or, built before the list was kept, when `last` is there and is
    an HTML page, as every such build's was);
    another file in the way, or one of `keep` (the command's inputs), stops it before any is moved:
    OutputError."""
    folder = Path(folder)
    listing = folder / f".{name}.files"
    with _aside(folder / name) as work:
        yield work
        kept = {os.path.realpath(p) for p in keep}
        clash = [p.name for p in work.iterdir() if os.path.realpath(folder / p.name) in kept]
        if clash:
            raise OutputError(f"{folder / clash[0]}: an input of this command, which its output would replace; "
                                  "write the output to another folder.")
        built = _listed(listing) if listing.is_file() else None
        ours = built if built is not None else ({p.name for p in work.iterdir()} if last and _html(folder / last)
                                                else set())
        foreign = sorted(p.name for p in work.iterdir() if (folder / p.name).exists() and p.name not in ours)
        if foreign:
            raise OutputError(f"{folder}: holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                              f"this output did not write and would replace; write it to a folder of its own.")
        names = sorted(p.name for p in work.iterdir())
        (work / listing.name).write_text("".join(f"{n}\n" for n in names))
        for path in sorted(work.iterdir(), key=lambda p: (p.name == last, p.name == listing.name)):
            os.replace(path, folder / path.name)


def _html(path: Path) -> bool:
    """An HTML page (a report of before `.<name>.files` was kept), not a file of the user's of that name."""
    try:
        with open(path, "rb") as handle:
            return handle.read(15).lower() == b"<!doctype html>"
    except OSError:
        return False


def _listed(listing: Path) -> set[str]:
    return {line for line in listing.read_text().splitlines() if line}


@contextmanager
def _aside(target: Path):
    """`.<name>.building-<host>-<pid>` beside `target`, fresh, removed on failure (what dead processes
    left beside it first: a run, or an export at another version, killed while built)."""
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_folders(target.parent)
    work = target.with_name(f".{target.name}.building-{_owner()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for folder in created:  # the folders made for it (deepest first), when nothing else came into them
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(work, ignore_errors=True)  # empty once its files are in place (or renamed away)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files (`.<name>.<pid>.tmp<suffix>`) in `folder` that a process which is no longer
    running left behind (a `kill -9`, a power cut); those of live processes are kept. Returns them."""
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        match = _TEMP_FILE.match(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def remove_stale_temp_folders(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the folders (`.<name>.building-<host>-<pid>`, `.<name>.replaced-...`) in `folder` that
    processes of this host no longer running left behind (of the output `name` only, when given);
    another host's are left alone (it may still be building). Returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    host = socket.gethostname()
    for path in folder.iterdir():
        match = _TEMP_FOLDER.match(path.name)
        if (match and path.is_dir() and (name is None or match.group(1) == name) and match.group(2) == host
                and not process_alive(int(match.group(3)))):
            shutil.rmtree(path, ignore_errors=True)
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


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
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
