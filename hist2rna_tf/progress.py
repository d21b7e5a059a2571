"""Progress bars, one kind for every long step (slides, tiles, folds, epochs, an export's stages): tqdm on
stderr. On a terminal a bar redraws in place; anywhere else (a log file, CI, Slurm's output) each redraw
is a line of its own, at most one every `LINE_INTERVAL_S` seconds and one at the end, so a log holds a
readable line per step instead of thousands of carriage returns. `enabled=False` (`--no-progress`)
draws nothing."""

from __future__ import annotations

import re
import sys

from tqdm.auto import tqdm

LINE_INTERVAL_S = 5.0  # a non-terminal's lines: at most one this often (and the last)
_CURSOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # a terminal's cursor moves (nested bars), nothing in a log
_PLAIN = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"


class _Lines:
    """A non-terminal stream for tqdm: each redraw as a line of its own; one that says nothing new (the
    same count and postfix, only the times in brackets changed: the redraw at closing) is dropped."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        text = _CURSOR.sub("", text.replace("\r", "")).strip()
        news = re.sub(r"\[[^\]]*\]", "", text)
        if text and news != self.last:
            self.stream.write(text + "\n")
            self.last = news

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable=None, *, desc: str, unit: str, total: int | None = None, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar (over `iterable`, or updated by hand) drawn as this module says."""
    stream = sys.stderr
    if enabled and not stream.isatty():
        options = {"file": _Lines(stream), "mininterval": LINE_INTERVAL_S, "bar_format": _PLAIN, **options}
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=not enabled, **options)


class Stages:
    """A bar of a long call's named stages (an export's, a report's), showing the one running: call
    `next()` as each ends. A context manager: it closes the bar."""

    def __init__(self, desc: str, names: list[str], enabled: bool = True):
        self.names = list(names)
        self.bar = bar(desc=desc, unit="stages", total=len(self.names), enabled=enabled, postfix=self.names[0],
                       mininterval=0)  # a few stages: each one a line

    def next(self) -> None:
        following = self.bar.n + 1
        self.bar.set_postfix_str(self.names[following] if following < len(self.names) else "done", refresh=False)
        self.bar.update(1)

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *_) -> None:
        self.bar.close()


def epoch_bar(max_epochs: int):
    """A Keras callback drawing a bar of epochs with the losses so far: early stopping usually ends it
    before `max_epochs` (Keras imported here, by a training that asks for one)."""
    import keras

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = bar(total=max_epochs, desc="epochs", unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("loss", "val_loss") if k in logs}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()
