"""The command bodies (cli/commands.py): exit codes and what they print, as a user runs them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hist2rna_tf.cli import main


def test_extract_reports_failures_and_exits_non_zero(demo_cohort, tiny_backbone_file, tmp_path, capsys):
    (tmp_path / "broken.svs").write_text("not a slide")
    args = ["extract", "--slides", str(demo_cohort / "slides" / "demo-01.tiff"), str(tmp_path / "broken.svs"),
            "--out", str(tmp_path / "out"), "--backbone", str(tiny_backbone_file), "--weights", "none",
            "--batch-size", "8", "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 done" in out and "1 failed" in out and "broken.svs" in out
    assert main(args) == 1  # the broken slide still fails; demo-01 is skipped
    assert "1 skipped" in capsys.readouterr().out
    ok_args = args[:2] + [str(demo_cohort / "slides" / "demo-01.tiff")] + args[4:]
    assert main(ok_args) == 0


def test_fatal_errors_print_one_line(tmp_path, capsys):
    assert main(["extract", "--slides", str(tmp_path / "missing"), "--out", str(tmp_path), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1


def test_normalize_writes_the_paper_normalisation(reference_data, tmp_path, capsys):
    """The default is the authors' normaliser; --stain macenko-henorm is HEnorm's, with its components
    (--method, its name before 0.4.0, still works)."""
    source = reference_data / "stain" / "macenko_input.png"
    for method, reference in ((None, "macenko_expected_authors.png"), ("macenko-henorm", "macenko_expected.png")):
        output = tmp_path / "out" / f"{method}.png"
        assert main(["normalize", str(source), "--out", str(output), "--components"] +
                    (["--stain" if method == "macenko-henorm" else "--method", method] if method else [])) == 0
        written = np.asarray(Image.open(output)).astype(int)
        expected = np.asarray(Image.open(reference_data / "stain" / reference).convert("RGB")).astype(int)
        assert (np.abs(written - expected) <= 1).all(axis=-1).mean() >= 0.99, method
        assert output.with_name(f"{method}_H.png").is_file() and output.with_name(f"{method}_E.png").is_file()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(blank)
    assert main(["normalize", str(blank), "--out", str(tmp_path / "b.png")]) == 0
    assert "written unchanged" in capsys.readouterr().out
    assert main(["normalize", str(tmp_path / "nope.png"), "--out", str(tmp_path / "c.png")]) == 2


def test_a_library_warning_is_one_line_without_its_source(monkeypatch, capsys, tmp_path):
    """What a library warns (Pillow's corrupt EXIF, scipy's ill-conditioned matrix) reaches the terminal
    as one log line, not as its file, line and source."""
    import warnings

    import hist2rna_tf.cli.commands as commands

    def warn(args):
        warnings.warn("Corrupt EXIF data.  Expecting to read 2 bytes but only got 0.\n", UserWarning)
        return 0

    monkeypatch.setitem(commands.COMMANDS, "subtype", warn)
    with warnings.catch_warnings():  # whatever the caller's filter (PYTHONWARNINGS=ignore, -W error)
        warnings.simplefilter("default")
        assert main(["subtype", "--expression", "e.csv", "--out", str(tmp_path / "c.csv")]) == 0
    err = capsys.readouterr().err
    assert "UserWarning: Corrupt EXIF data." in err and ".py:" not in err and len(err.strip().splitlines()) == 1


def test_counts_read_as_words():
    from hist2rna_tf.cli.commands import counted

    assert (counted(1, "slide"), counted(0, "slide"), counted(3, "held-out patient")) == (
        "1 slide", "0 slides", "3 held-out patients")
