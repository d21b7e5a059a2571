"""TensorFlow started quietly (tfenv.py): its C++ start-up lines never reach the user's terminal."""

from __future__ import annotations

import subprocess
import sys


def test_tensorflow_start_up_lines_are_kept_off_stderr(tmp_path):
    """TensorFlow's C++ start-up lines (absl banner, oneDNN, cuInit) do not reach the user; our own
    error message does."""
    (tmp_path / "garbage.png").write_bytes(b"not an image")  # there, so TensorFlow starts before it is read
    done = subprocess.run([sys.executable, "-m", "hist2rna_tf.cli", "normalize", str(tmp_path / "garbage.png"),
                           str(tmp_path / "out.png")], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'garbage.png'}: not a readable image"), lines
    for noise in ("absl", "oneDNN", "cuInit", "cuda", "I0000", "E0000"):
        assert noise not in done.stderr, noise
