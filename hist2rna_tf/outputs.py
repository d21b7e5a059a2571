"""Where a command may write, checked before it reads or writes anything, so that no command ever
destroys what the user did not ask it to:

- an output is never one of the command's inputs, never a folder holding one, and never lies inside
  an input folder (a folder of slides, features, annotations or maps is read as a whole; a run
  folder is the exception: its report and predictions may go in it);
- the working folder, or a folder above it, is never an output that is built aside and renamed
  into place (a run, a baseline, the demo's folder);
- `--overwrite` replaces only what this tool made for that command (a run, a baseline) or an empty
  folder; a folder of anything else is refused, naming what is in it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from hist2rna_tf.errors import OutputError

PathLike = str | os.PathLike
# A command's inputs by the flag (or positional name) that gave them: one path, several, or None.
Inputs = Mapping[str, "PathLike | Iterable[PathLike] | None"]


def _paths(value) -> list[Path]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value if v not in (None, "")]


def input_paths(inputs: Inputs) -> list[Path]:
    """Every path of `inputs`, flattened."""
    return [path for value in inputs.values() for path in _paths(value)]


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def refuse_overlap(out: PathLike, inputs: Inputs, flag: str = "--out", may_hold: Iterable[str] = ()) -> None:
    """An OutputError when the output `out` is one of `inputs`, holds one, or lies inside an input
    folder (except the folders given by the flags in `may_hold`, e.g. a run folder, which may hold its
    report). Paths are compared after resolving links, so `./x`, `x/` and a link to x are x."""
    target = _real(Path(out))
    for role, value in inputs.items():
        for path in _paths(value):
            source = _real(path)
            if target == source:
                raise OutputError(f"{flag} {out} is the input {role} {path}: writing there would destroy it; give "
                                  f"another {flag}.")
            if source.is_relative_to(target):
                raise OutputError(f"{flag} {out} holds the input {role} {path}: an output never holds what the "
                                  f"command reads; give an {flag} outside it.")
            if role not in may_hold and source.is_dir() and target.is_relative_to(source):
                raise OutputError(f"{flag} {out} lies inside the input {role} {path}, whose contents are read as "
                                  f"input; give an {flag} outside it.")


def refuse_working_folder(out: PathLike, flag: str = "--out") -> None:
    """An OutputError when `out` is the working folder or a folder above it: a run (or the demo's
    folder) is built aside and renamed into place, which would pull the folder from under the user."""
    target, here = _real(Path(out)), _real(Path.cwd())
    if here.is_relative_to(target):
        where = "the working folder" if here == target else f"a folder above the working folder ({here})"
        raise OutputError(f"{flag} {out} is {where}; give a folder of its own, e.g. {flag} "
                          f"{Path(out) / 'run' if here == target else 'run'}.")


def refuse_replacing(out: PathLike, overwrite: bool, what: str, held: Callable[[Path], str | None],
                     flag: str = "--out", overwrite_option: bool = True) -> None:
    """Before any work: `out` may be new, an empty folder, or `what` (`held` says what this tool made in a
    folder, e.g. "a hist2RNA training run", or None), the last only with `overwrite`. Anything else is
    refused, naming what it holds: `--overwrite` never deletes files this tool did not make. A command
    without --overwrite (`overwrite_option` False) is asked for another folder, not told to give it."""
    out = Path(out)
    refuse_working_folder(out, flag)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{flag} {out} is a file; give a folder (new or empty).")
    entries = sorted(out.iterdir())
    if not entries:
        return
    made = held(out)
    if overwrite and made == what:
        return
    if not overwrite_option:
        if made:
            raise OutputError(f"{flag} {out} exists and holds {made}; give another {flag}, or remove it.")
        raise OutputError(f"{flag} {out} holds {describe(entries)}; give a new or empty {flag}.")
    if made == what:
        raise OutputError(f"{out} exists and holds {what}; give another {flag}, or --overwrite to replace it.")
    raise OutputError(f"{flag} {out} holds {describe(entries)}, which is not {what}; --overwrite replaces only {what} "
                      f"(or an empty folder). Give a new or empty {flag}.")


def refuse_replacing_file(out: PathLike, overwrite: bool, flag: str = "--out") -> None:
    """Before any work: a file output `out` may be new, or replaced only with `overwrite` (a file of the
    user's is never replaced unasked); a folder there is refused."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"{flag} {out} is a folder; give a file name.")
    if out.exists() and not overwrite:
        raise OutputError(f"{flag} {out} exists; give another {flag}, or --overwrite to replace it.")


def refuse_foreign_files(out: PathLike, ours: Callable[[Path], bool], what: str, flag: str = "--out") -> None:
    """Before any work: a folder that several runs of a command fill (`hist2rna spatial`'s) may hold only
    what `ours` says that command wrote there (a re-run replaces those); another file there is refused,
    named, so that no file of the user's is replaced."""
    out = Path(out)
    if not out.is_dir():
        return
    foreign = sorted(p for p in out.iterdir() if not p.name.startswith(".") and not ours(p))
    if foreign:
        raise OutputError(f"{flag} {out} holds {describe(foreign)}, which {what} did not write; give a new or empty "
                          f"{flag}, or one {what} wrote.")


def describe(entries: list[Path], shown: int = 3) -> str:
    """"2 files/folders (a.txt, sub/)": what a folder holds, in a few names."""
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:shown]]
    more = ", ..." if len(entries) > shown else ""
    return f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} ({', '.join(names)}{more})"


def refuse_non_html(out: PathLike, flag: str = "--out") -> None:
    """A report's page is HTML: an --out of another suffix (a table of the user's, given by mistake) is refused."""
    if Path(out).suffix.lower() not in (".html", ".htm"):
        raise OutputError(f"{flag} {out}: a report is an HTML page; give a file ending in .html (its figures and "
                          "tables are written beside it).")
