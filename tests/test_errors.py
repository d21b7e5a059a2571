"""Errors a user can act on (errors.py): every kind reaches the terminal as one line and exit status 2,
never a traceback."""

from __future__ import annotations

import pytest

import hist2rna_tf.cli.commands as commands
from hist2rna_tf import errors
from hist2rna_tf.cli import main

KINDS = [kind for kind in vars(errors).values()
         if isinstance(kind, type) and issubclass(kind, errors.Hist2RNAError)]


def test_every_kind_a_user_meets_is_one_family():
    assert len(KINDS) >= 12 and not issubclass(errors.ClaimedElsewhere, errors.Hist2RNAError)  # not an error


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_each_kind_is_one_line_and_exit_status_2(kind, monkeypatch, capsys, tmp_path):
    def fail(args):
        raise kind(f"{tmp_path / 'input.csv'}: what is wrong; the fix.")

    monkeypatch.setitem(commands.COMMANDS, "subtype", fail)
    assert main(["subtype", "--expression", "e.csv", "--out", str(tmp_path / "out.csv")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'input.csv'}: what is wrong; the fix.\n"
