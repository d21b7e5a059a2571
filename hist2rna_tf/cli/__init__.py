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

from hist2rna_tf.cli.commands import COMMANDS, TENSORFLOW_COMMANDS
from hist2rna_tf.cli.parser import build_parser
from hist2rna_tf.errors import Hist2RNAError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in TENSORFLOW_COMMANDS:
            from hist2rna_tf.tfenv import start_tensorflow

            args.gpus = start_tensorflow(verbose=args.verbose)
        return COMMANDS[args.command](args)
    except Hist2RNAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
