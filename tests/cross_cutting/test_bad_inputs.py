"""Bad input as a new user gives it: every case exits non-zero with one clear line that names the file or
the argument (no traceback), writes nothing half-made, and the good slides of the same batch are done."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hist2rna_tf.cli import main
from hist2rna_tf.extract.cohort import MANIFEST
from hist2rna_tf.model import runs

from commandline import run


def _refused(args: list[str], capsys, *named: str) -> str:
    code, err = run(args, capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", "  ", "INFO", "WARNING"))]
    assert code == 2 and len(lines) == 1, err
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("flag, value, named", [
    ("--max-tiles", "0", "at least 1"), ("--tile-px", "-3", "at least 1"), ("--batch-size", "many", "whole number"),
    ("--mpp", "0", "above 0"), ("--mpp", "-0.5", "above 0"), ("--target-mpp", "nan", "above 0"),
    ("--min-region-fraction", "0", "above 0"), ("--min-region-fraction", "1.5", "(0, 1]"),
    ("--shard", "4/4", "0 <= i < n"), ("--read-threads", "0", "at least 1"), ("--max-retries", "-1", "0 or more"),
    ("--cpus-per-worker", "0", "at least 1")])
def test_nonsensical_extraction_arguments_are_refused_at_parse_time(tmp_path, capsys, flag, value, named):
    _refused(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "out"), "--weights", "none",
              flag, value], capsys, flag, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "1", "1.2"])
def test_a_validation_fraction_that_leaves_nothing_is_refused(tmp_path, capsys, value):
    _refused(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", str(tmp_path / "run"),
              "--validation-fraction", value], capsys, "--validation-fraction", "a fraction in (0, 1),")


def test_outputs_that_cannot_be_written_are_refused_naming_them(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    for out, named in ((a_file, "is a file"), (a_file / "sub", "is a file, so nothing can be written")):
        _refused(["extract", "--slides", str(tmp_path), "--out", str(out), "--weights", "none"], capsys, str(a_file),
                 named)
    folder = tmp_path / "folder"
    folder.mkdir()
    _refused(["subtype", "--expression", "e.csv", "--out", str(folder)], capsys, str(folder), "is a folder")
    # A read-only folder (root writes anyway, so the check's own probe reports it as the kernel would).
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(folder) else real_access(path, mode))
    _refused(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", str(folder / "run")], capsys,
             str(folder), "not writable")


@pytest.mark.parametrize("content, named", [
    ("", "the file is empty"), ("gene\n", "no rows"), ("a,b\n\xff\xfe,\xfa\n", "not a readable")])
def test_empty_or_unreadable_tables_are_one_clear_error(tmp_path, capsys, content, named):
    table = tmp_path / "table.csv"
    table.write_bytes(content.encode("latin-1"))
    _refused(["subtype", "--expression", str(table), "--out", str(tmp_path / "calls.csv")], capsys, str(table), named)
    assert not (tmp_path / "calls.csv").exists()


def test_repeated_genes_and_samples_are_refused(tmp_path, capsys):
    from hist2rna_tf.expression import load_panel

    rng = np.random.default_rng(0)
    pam50 = pd.DataFrame(rng.uniform(1, 100, (4, 50)), index=["s1", "s2", "s3", "s1"], columns=load_panel("pam50"))
    pam50.rename_axis("sample").to_csv(tmp_path / "repeated_sample.csv")
    _refused(["subtype", "--expression", str(tmp_path / "repeated_sample.csv"), "--out", str(tmp_path / "c.csv")],
             capsys, "more than once", "s1")
    with open(tmp_path / "repeated_gene.csv", "w") as handle:
        handle.write("sample,ESR1,PGR,ESR1\ns1,1,2,3\n")
    _refused(["subtype", "--expression", str(tmp_path / "repeated_gene.csv"), "--out", str(tmp_path / "c.csv")],
             capsys, "repeated_gene.csv", "appear twice (ESR1)")
    assert not (tmp_path / "c.csv").exists()


def test_conflicting_labels_are_refused_and_repeated_agreeing_ones_accepted(tmp_path):
    from hist2rna_tf.expression import ExpressionError, read_labels

    (tmp_path / "labels.csv").write_text("patient,BRCA_Subtype_PAM50\nP1,LumA\nP2,Basal\nP1,LumA\nP3,Her2\nP3,LumB\n")
    with pytest.raises(ExpressionError, match=r"conflicting .* P3"):
        read_labels(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("patient,BRCA_Subtype_PAM50\nP1,LumA\nP2,Basal\nP1,LumA\n")
    assert read_labels(tmp_path / "labels.csv").to_dict() == {"P1": "LumA", "P2": "Basal"}


def test_a_model_that_cannot_be_loaded_is_named(synthetic_run, tmp_path, capsys):
    run = shutil.copytree(synthetic_run[0], tmp_path / "run")
    (run / runs.MODEL).write_bytes(b"PK\x03\x04 not really a keras file")
    _refused(["predict", str(run), "--features", str(synthetic_run[1].features), "--out", str(tmp_path / "p.csv")],
             capsys, runs.MODEL, "cannot be loaded")
    assert not (tmp_path / "p.csv").exists()


def test_an_incomplete_run_is_not_taken_for_one(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG).write_text(json.dumps({"inputs": {"features": "f"}}))
    _refused(["report", str(run)], capsys, str(run), "incomplete training run", runs.TEST_PREDICTIONS)
    assert sorted(p.name for p in run.iterdir()) == [runs.CONFIG]


def test_a_stain_reference_without_stain_is_named(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(blank)
    _refused(["normalize", str(blank), "--out", str(tmp_path / "out.png"), "--stain-reference", str(blank)], capsys,
             str(blank), "too few stained pixels")
    assert not (tmp_path / "out.png").exists()


def test_negative_survival_times_are_refused_when_the_table_is_read(tmp_path):
    from hist2rna_tf.analysis.clinical import ClinicalColumns, ClinicalError, read_clinical

    (tmp_path / "clinical.csv").write_text("patient_id,os_months,os_event\nP1,12,1\nP2,-3,0\n")
    with pytest.raises(ClinicalError, match=r"'os_months' is negative for 1 patients \(P2\)"):
        read_clinical(tmp_path / "clinical.csv", ClinicalColumns(**{k: None for k in (
            "grade", "size_mm", "age", "node_positive", "er", "pr", "her2", "ki67_percent", "ihc_subtype")}))


# --- one extraction batch with every kind of bad slide ------------------------------------------------


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory, demo_cohort, tcga_tiles, tiny_backbone_file):
    """Good demo slides beside bad inputs, extracted in one run."""
    root = tmp_path_factory.mktemp("bad_batch")
    slides, annotations = root / "slides", root / "annotations"
    slides.mkdir()
    annotations.mkdir()
    good = ["demo-01", "demo-02"]
    bad_geojson = {"demo-03": [1, 2, 3], "demo-04": "hello",
                   "demo-05": {"type": "Feature", "properties": "tumour",
                               "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]}}}
    for name in good + list(bad_geojson):
        shutil.copy(demo_cohort / "slides" / f"{name}.tiff", slides)
        if name in bad_geojson:
            (annotations / f"{name}.geojson").write_text(json.dumps(bad_geojson[name]))
        else:
            shutil.copy(demo_cohort / "annotations" / f"{name}.geojson", annotations)
    mixed = slides / "mixed_patients"  # a pre-tiled folder holding two TCGA patients' tiles
    mixed.mkdir()
    for tile in sorted((tcga_tiles).glob("*.png"))[::6]:
        shutil.copy(tile, mixed)
    (annotations / "mixed_patients.geojson").write_text("{}")  # not read: tile folders are taken whole
    code = main(["extract", "--slides", str(slides), "--annotations", str(annotations), "--out", str(root / "out"),
                 "--backbone", str(tiny_backbone_file), "--weights", "none", "--batch-size", "16", "--no-progress"])
    manifest = pd.read_csv(root / "out" / "tiny" / MANIFEST, index_col="slide_id", keep_default_na=False)
    return code, manifest, root


def test_bad_annotations_fail_their_own_slide_only(bad_batch):
    code, manifest, root = bad_batch
    assert code == 1  # some slides failed
    assert (manifest.loc[["demo-01", "demo-02"], "status"] == "done").all()
    for name in ("demo-03", "demo-04", "demo-05"):
        row = manifest.loc[name]
        assert row["status"] == "failed" and f"{name}.geojson" in row["reason"] and "malformed GeoJSON" in row["reason"]
    records = sorted(p.name for p in (root / "out" / "tiny").glob("*.tfrecord"))
    assert records == ["demo-01.tfrecord", "demo-02.tfrecord"]


def test_a_tile_folder_of_several_patients_is_refused(bad_batch):
    _, manifest, _ = bad_batch
    reason = manifest.loc["mixed_patients", "reason"]
    assert manifest.loc["mixed_patients", "status"] == "failed" and "TCGA-A2-A04R" in reason and "TCGA-A2-A04Y" in reason


def test_a_scan_far_coarser_than_the_target_is_refused(tmp_path, capsys, reference_data, tiny_backbone_file):
    core = tmp_path / "core.png"
    shutil.copy(reference_data / "stain" / "macenko_input.png", core)
    args = ["extract", "--slides", str(core), "--out", str(tmp_path / "out"), "--backbone", str(tiny_backbone_file),
            "--weights", "none", "--no-progress"]
    assert main([*args, "--mpp", "2.0"]) == 1
    out = capsys.readouterr().out
    assert "2 um/px" in out and "more than 4x coarser" in out and "--mpp" in out
    assert not list((tmp_path / "out" / "tiny").glob("*.tfrecord"))
    assert main([*args, "--mpp", "0.5"]) == 0  # a 20x scan is upsampled, as before


def test_temp_files_of_an_interrupted_run_are_never_read_and_are_cleaned(bad_batch, tmp_path, tiny_backbone_file):
    """A zero-byte temp file a killed process left is not a record: readers skip it, the next run
    into the folder removes it, and the manifest keeps the slides of earlier runs."""
    _, _, root = bad_batch
    folder = tmp_path / "out" / "tiny"
    shutil.copytree(root / "out" / "tiny", folder)
    stale = folder / ".demo-09.999999999.tmp.tfrecord"  # no such process
    stale.write_bytes(b"")
    from hist2rna_tf.extract.records import feature_table

    features, _, _ = feature_table(folder)
    assert list(features.index) == ["demo-01", "demo-02"]
    assert main(["extract", "--slides", str(root / "slides" / "demo-01.tiff"), "--annotations",
                 str(root / "annotations"), "--out", str(tmp_path / "out"), "--backbone", str(tiny_backbone_file),
                 "--weights", "none", "--no-progress"]) == 0
    assert not stale.exists()
    manifest = pd.read_csv(folder / MANIFEST, index_col="slide_id")
    assert manifest.loc["demo-01", "status"] == "skipped" and manifest.loc["demo-02", "status"] == "done"
    assert manifest.loc["demo-03", "status"] == "failed"  # an earlier run's row, kept


def test_tiles_predicted_far_outside_the_training_range_are_warned(caplog):
    from hist2rna_tf.report.spatial import _warn_outside_training

    measured = pd.DataFrame({"ERBB2": [8.0, 10.0, 12.0]})  # range 8-12, width 4
    with caplog.at_level("WARNING"):
        _warn_outside_training("slide-1", "ERBB2", pd.Series([9.0, 15.0, 11.0]), (measured, None))
        assert not caplog.text  # within a width of the range: no word
        _warn_outside_training("slide-1", "ERBB2", pd.Series([9.0, 27.0, 11.0]), (measured, None))
    assert "slide-1: 1 of 3 tiles predict ERBB2 outside" in caplog.text and "27.0" in caplog.text
