"""TensorFlow's start-up, quietly.

Importing TensorFlow 2.21 prints C++ INFO lines before its logging is set up (the absl banner,
oneDNN, CUDA stubs), and its first device query prints `failed call to cuInit ... (303)` on a
machine without a GPU. TF_CPP_MIN_LOG_LEVEL no longer silences the first kind, so the commands
import TensorFlow and list its devices with the process's stderr (file descriptor 2, where C++
writes) sent to /dev/null; afterwards TensorFlow's own logs stay at warnings and above. `-v` keeps
everything.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext


@contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block (C/C++ writes too, not only Python's)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow(verbose: bool = False) -> int:
    """Import TensorFlow and initialise its devices, quietly unless `verbose`. Returns how many GPUs
    it sees."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with nullcontext() if verbose else native_stderr_silenced():
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    if not verbose:
        import logging

        logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not "Assets written to ..." on every export
    return gpus

