"""`hist2rna <command>`: argparse at the edge (`parser`, `options`), one call into the library per
command (`commands`).

Every default shown in `--help` is the library's own (the dataclasses of config.py). TensorFlow is
imported only by the commands that need it, so `hist2rna --help` is instant. Exit status: 0
success; 1 when any slide failed (the others are still processed); 2 for bad usage or an error
that stops the whole run.
"""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager

from tqdm.contrib.logging import logging_redirect_tqdm

from hist2rna_tf.cli.commands import COMMANDS, TENSORFLOW_COMMANDS
from hist2rna_tf.cli.parser import build_parser
from hist2rna_tf.errors import Hist2RNAError

__all__ = ["build_parser", "main"]

warnings_log = logging.getLogger("hist2rna_tf.warnings")


@contextmanager
def _warnings_as_log_lines():
    """Python warnings a library raises (lifelines, scipy, Pillow) as one log line each, without the
    library's file, line and source (the modules name their input where they know it)."""
    def show(message, category, filename, lineno, file=None, line=None):
        warnings_log.warning("%s: %s", category.__name__, str(message).strip().splitlines()[0])

    shown = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


# The inputs a command reads, by option dest and as the user names them: checked to exist before
# TensorFlow starts (seconds), so that a mistyped path is said at once.
INPUTS = {"run": "RUN", "model": "RUN", "input": "INPUT", "folder": "FOLDER", "task": "TASK", "features": "--features",
          "slides": "--slides", "annotations": "--annotations", "expression": "--expression", "labels": "--labels",
          "split": "--split", "head_init": "--head-init", "hest": "--hest", "spaceranger": "--spaceranger",
          "image": "--image", "like": "--like"}


def missing_inputs(args) -> str | None:
    """"--features x: no such file or folder" for the first input path of `args` that is not there."""
    from pathlib import Path

    for dest, name in INPUTS.items():
        value = getattr(args, dest, None)
        for path in value if isinstance(value, list) else [value]:
            if path and not Path(path).exists():
                return f"{name} {path}: no such file or folder; check the path."
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in TENSORFLOW_COMMANDS:
            missing = missing_inputs(args)
            if missing:
                raise Hist2RNAError(missing)
            from hist2rna_tf.tfenv import start_tensorflow

            args.gpus = start_tensorflow(verbose=args.verbose)
        with logging_redirect_tqdm(), _warnings_as_log_lines():  # a log line never lands inside a progress bar
            return COMMANDS[args.command](args)
    except Hist2RNAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
