"""The commands the README and docs/ show, as a reader copies them: every one is a valid command line
(its options exist, its values are of their types: a renamed or removed option fails here), and the
README's workflow on your own slides runs as written, on the demo cohort (its paths and the ImageNet
backbone swapped for the demo's slides and a tiny random one)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.cli.parser import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands(text: str) -> list[list[str]]:
    """Every `hist2rna ...` command of a document's fenced blocks, its continuation lines joined, its
    comment dropped: the arguments after `hist2rna`."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            match = re.search(r"(?:^|\s)(?:\.venv/bin/)?hist2rna (.*)$", line.strip())
            if match:
                commands.append(shlex.split(match.group(1), comments=True))
    return commands


ALL = [(doc.relative_to(REPO).as_posix(), args) for doc in DOCUMENTS for args in documented_commands(doc.read_text())]


def test_the_documents_show_commands_of_every_kind():
    assert len(ALL) >= 20
    assert {args[0] for _, args in ALL} >= {"extract", "train", "predict", "export", "report", "crossval",
                                             "baseline", "spatial"}


@pytest.mark.parametrize("document, args", ALL, ids=[f"{d}: {' '.join(a)[:60]}" for d, a in ALL])
def test_every_documented_command_is_one_the_parser_takes(document, args, capsys):
    try:
        build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{document}: `hist2rna {' '.join(args)}`: {capsys.readouterr().err.strip().splitlines()[-1]}")


def test_the_readmes_workflow_runs_as_written(tiny_run, tiny_backbone_file, tmp_path, monkeypatch, capsys):
    """`## Your own slides`, command by command, in a fresh folder: extract, train, predict from slides,
    export, report."""
    block = (REPO / "README.md").read_text().split("## Your own slides")[1].split("```bash\n")[1].split("```")[0]
    cohort = tiny_run / "cohort"
    swaps = {"/data/tcga_brca": str(cohort / "slides"), "/data/qupath_geojson": str(cohort / "annotations"),
             "--backbone efficientnetv2s --weights imagenet": f"--backbone {tiny_backbone_file} --weights none",
             "features/efficientnetv2s": "features/tiny", "data_mrna_seq_v2_rsem.txt": str(cohort / "expression.csv"),
             "subtypes.csv": str(cohort / "clinical.csv"), "new_cohort": str(cohort / "slides" / "demo-01.tiff")}
    for old, new in swaps.items():
        assert old in block, old
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    commands = documented_commands(f"```bash\n{block}```")
    assert [args[0] for args in commands] == ["extract", "train", "predict", "export", "report"]
    for args in commands:
        assert main([*args, "--no-progress"]) == 0, args
    capsys.readouterr()
    assert len(list((tmp_path / "features" / "tiny").glob("*.tfrecord"))) == 12
    assert list(pd.read_csv(tmp_path / "predictions.csv", index_col=0).index) == ["demo-01"]
    assert (tmp_path / "saved_models" / "tiny" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "runs" / "effnet" / "report" / "report.html").is_file()

