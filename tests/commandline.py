"""`hist2rna ARGS` run in the test's process as a user runs it, for the suites of bad input; an export's
user's code run in a process of TensorFlow alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def run_tensorflow_only(code: str) -> str:
    """`code` run in a fresh Python process that imports TensorFlow and never hist2rna_tf (what a user
    serving an export has); its stdout."""
    script = ("import sys\nimport tensorflow as tf\n" + textwrap.dedent(code) +
              "\nassert not [m for m in sys.modules if m.startswith('hist2rna_tf')], 'the export needed hist2rna_tf'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={
        "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
