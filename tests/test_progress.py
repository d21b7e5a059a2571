"""Progress bars as a log reads them: off a terminal (a file, CI, Slurm), a line of its own per step,
never carriage returns piled on one line; off entirely with --no-progress."""

from __future__ import annotations

import io

from hist2rna_tf.progress import Stages, bar


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_off_a_terminal_each_step_is_a_line(monkeypatch):
    log = _Log()
    monkeypatch.setattr("sys.stderr", log)
    for _ in bar(range(3), desc="slides", unit="slide", mininterval=0):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("slides: 3/3 slide") and len(lines) == len(set(lines)) >= 2


def test_stages_say_which_is_running_and_end_complete(monkeypatch):
    log = _Log()
    monkeypatch.setattr("sys.stderr", log)
    with Stages("export", ["building the backbone", "writing both"]) as stages:
        stages.next()
        stages.next()
    lines = log.getvalue().splitlines()
    assert "building the backbone" in lines[0] and any("writing both" in line for line in lines)
    assert lines[-1].startswith("export: 2/2 stages") and lines[-1].endswith(", done")


def test_no_progress_draws_nothing(monkeypatch):
    log = _Log()
    monkeypatch.setattr("sys.stderr", log)
    for _ in bar(range(3), desc="slides", unit="slide", enabled=False):
        pass
    with Stages("export", ["writing"], enabled=False) as stages:
        stages.next()
    assert log.getvalue() == ""


def test_bars_open_together_leave_no_cursor_moves_in_a_log(monkeypatch):
    """A bar inside another (the demo's stages around an extraction's slides and tiles) moves a terminal's
    cursor between them; a log gets the lines without those escape codes."""
    log = _Log()
    monkeypatch.setattr("sys.stderr", log)
    with Stages("demo", ["predictions", "the report"]) as stages:
        for _ in bar(range(3), desc="slides", unit="slide", mininterval=0):
            for _ in bar(range(2), desc="tiles", unit="tile", mininterval=0):
                pass
        stages.next()
        stages.next()
    assert "\x1b" not in log.getvalue() and "slides: 3/3 slide" in log.getvalue()
