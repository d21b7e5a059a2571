"""`hist2rna ARGS` run in the test's process as a user runs it, for the suites of bad input."""

from __future__ import annotations

from hist2rna_tf.cli import main


def run(args: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of `hist2rna ARGS` (argparse's refusals exit through SystemExit); never a
    traceback."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err
