"""Every bad input a new user was seen to give (issues 11, 20 and 27), as they meet it on the command line:
a non-zero exit with one line naming the input and the fix (or, where the input is good enough, the good
part done and the bad part named), no traceback, nothing half-written. First the table (ROWS, one row a
case), then the arguments refused at parse time, then the cases that need more than one line to set up
(a batch of slides, a damaged folder). (The `kill -9` cases are in test_interruption.py: they need a
process to kill; the ways a command could lose a user's files in test_data_loss.py.)"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hist2rna_tf.cli import main
from hist2rna_tf.config import PAM50_LABEL_COLUMN
from hist2rna_tf.extract.cohort import MANIFEST
from hist2rna_tf.extract.records import read_record, write_record
from hist2rna_tf.expression import load_panel
from hist2rna_tf.model import runs
from hist2rna_tf.model.inputs.kmeans import CACHE_FOLDER
from hist2rna_tf.report.spatial_folder import SpatialFolder

from commandline import run

ENCODER_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "encoders"
HUB = Path(__file__).resolve().parents[1] / "data" / "heads" / "sequoia_hub"  # a SEQUOIA fold: 32 features, 5 genes


@dataclass
class Inputs:
    """What a row may use: a scratch folder, a run trained on 12 demo slides with the tiny backbone
    (its cohort, features and tables), and a clinical table of its patients."""

    tmp: Path
    root: Path  # tiny_run: cohort/, features/tiny, run/

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    def clinical(self, name: str = "clinical.csv", **columns) -> Path:
        """A clinical table of the run's held-out patients (our column names), `columns` changed (a value,
        or a function of the column)."""
        patients = list(runs.held_out(self.run)[0].index)
        table = pd.DataFrame({"patient_id": patients, "os_months": 12.0, "os_event": 1, "grade": 2,
                              "size_mm": 25.0, "age": 60, "node_positive": "neg", "er": "pos", "pr": "pos",
                              "her2": "neg", "ki67_percent": 10.0, "ihc_subtype": "LumA"})
        for column, value in columns.items():
            table[column] = value(table[column]) if callable(value) else value
        table.to_csv(self.tmp / name, index=False)
        return self.tmp / name

    def predictions(self) -> Path:
        runs.held_out(self.run)[0].to_csv(self.tmp / "external.csv")
        return self.tmp / "external.csv"

    def report(self, *extra) -> list[str]:
        return ["report", str(self.run), "--n-boot", "5", "--out", str(self.tmp / "rep" / "report.html"), *extra]


def _external(i: Inputs, clinical: Path, *columns: str) -> list[str]:
    return i.report("--external-predictions", str(i.predictions()), "--clinical", str(clinical), *columns)


def _without(table: Path, column: str) -> Path:
    pd.read_csv(table).drop(columns=column).to_csv(table, index=False)
    return table


def _mapping(i: Inputs, content: str) -> list[str]:
    (i.tmp / "columns.json").write_text(content)
    return _external(i, i.clinical(), "--clinical-columns", str(i.tmp / "columns.json"))


def _damaged_run(i: Inputs, damage) -> list[str]:
    run = shutil.copytree(i.run, i.tmp / "run")
    damage(run / runs.CONFIG)
    return ["predict", str(run), "--features", str(i.root / "features" / "tiny"), "--out", str(i.tmp / "p.csv")]


def _train(i: Inputs, *extra, labels: Path | None = None) -> list[str]:
    return ["train", "--features", str(i.root / "features" / "tiny"), "--expression", str(i.cohort / "expression.csv"),
            "--labels", str(labels or i.cohort / "clinical.csv"), "--max-epochs", "1", *extra]


def _extract(i: Inputs, *slides, extra=()) -> list[str]:
    return ["extract", "--slides", *map(str, slides), "--out", str(i.tmp / "out"), "--backbone",
            str(i.tmp.parent / "tiny.keras"), "--weights", "none", "--no-progress", *extra]


def _pre_tiled(i: Inputs, shared: Path) -> Path:
    folder = i.tmp / "tiles" / "TCGA-A2-A04R"
    folder.mkdir(parents=True)
    for tile in sorted(shared.glob("TCGA-A2-A04R*.png")):
        shutil.copy(tile, folder)
    return folder


def _subtype_table(i: Inputs, nan: bool) -> list[str]:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.uniform(1, 500, (12, 50)), index=[f"S{k}" for k in range(12)], columns=load_panel("pam50"))
    if nan:
        table.iloc[3, 7] = np.nan
    table.rename_axis("sample").to_csv(i.tmp / "expression.csv")
    return ["subtype", "--expression", str(i.tmp / "expression.csv"), "--out", str(i.tmp / "calls.csv")]


def _sited(i: Inputs, **columns) -> Path:
    """The cohort's clinical table with a column of sites (`centre`: six sites of two patients), `columns`
    changed (a value, or a function of the column)."""
    table = pd.read_csv(i.cohort / "clinical.csv", dtype=str)
    table["centre"] = [f"A{k // 2 + 1}" for k in range(len(table))]
    for column, value in columns.items():
        table[column] = value(table[column]) if callable(value) else value
    table.to_csv(i.tmp / "clinical_sites.csv", index=False)
    return i.tmp / "clinical_sites.csv"


def _with_cell(table: Path, out: Path, row: int, column: int, value) -> Path:
    """A copy of a CSV table (first column the index) with one cell changed."""
    frame = pd.read_csv(table, index_col=0, dtype=str)
    frame.iloc[row, column] = value
    frame.to_csv(out)
    return out


def _without_tile_features(i: Inputs, held_out_only: bool = False) -> Path:
    """A copy of the run's feature records without their per-tile features (extracted without
    --save-tile-features): all of them, or the held-out patients' only."""
    folder = shutil.copytree(i.root / "features" / "tiny", i.tmp / "means_only")
    held_out = set(runs.held_out(i.run)[0].index)
    for path in folder.glob("*.tfrecord"):
        record = read_record(path)
        if not held_out_only or record.patient_id in held_out:
            write_record(replace(record, tile_features=None), path)
    return folder


def _feather(i: Inputs, in_dim: int) -> Path:
    """A FEATHER-like checkpoint (MIL-Lab's ABMIL tensor names, the hub's "model." prefix) for features of
    `in_dim` (0: the tensors of another model altogether)."""
    from safetensors.numpy import save_file

    path = i.tmp / "feather.safetensors"
    if not in_dim:
        save_file({"encoder.blocks.0.weight": np.zeros((4, 4), np.float32)}, str(path))
        return path
    shapes = {"patch_embed.0": (512, in_dim), "global_attn.attention_a.0": (384, 512),
              "global_attn.attention_b.0": (384, 512), "global_attn.attention_c": (1, 384)}
    tensors = {}
    for name, shape in shapes.items():
        tensors[f"model.{name}.weight"] = np.zeros(shape, np.float32)
        tensors[f"model.{name}.bias"] = np.zeros(shape[:1], np.float32)
    save_file(tensors, str(path))
    return path


def _three_genes(i: Inputs) -> Path:
    """The run's expression table cut to three genes."""
    table = pd.read_csv(i.cohort / "expression.csv", index_col=0)
    table.iloc[:, :3].to_csv(i.tmp / "three.csv")
    return i.tmp / "three.csv"


def _crossval_folder(i: Inputs, summary: bytes | None = None) -> Path:
    """A folder that is a crossval's by its settings file (its runs not needed for the rows that use it)."""
    folder = i.tmp / "cv"
    folder.mkdir()
    (folder / runs.CROSSVAL_SETTINGS).write_text("{}")
    if summary is not None:
        (folder / "summary.csv").write_bytes(summary)
    return folder


def _one_class_reference(i: Inputs) -> list[str]:
    labels = pd.read_csv(i.cohort / "clinical.csv")
    labels[PAM50_LABEL_COLUMN] = "LumA"
    labels.to_csv(i.tmp / "labels.csv", index=False)
    return _subtype_table(i, nan=False) + ["--method", "voting", "--reference-expression",
                                           str(i.cohort / "expression.csv"), "--reference-labels", str(i.tmp / "labels.csv")]


def _demo(i: Inputs, *extra) -> list[str]:
    return ["demo", "--out", str(i.tmp / "demo"), "--no-progress", *extra]


# id, the command (from Inputs; `shared`: the TCGA tiles), exit status, what the one error line (or the
# output, for a batch) names, what must not exist afterwards.
ROWS = [
    ("export name walking out of --out",
     lambda i, s: ["export", str(i.run), "--out", str(i.tmp / "o" / "p"), "--name", "../../escape"], 2,
     ["--name '../../escape'", "one folder name"], ["escape_head", "o/escape_head"]),
    ("report --compare of a folder that is not a run",
     lambda i, s: i.report("--compare", str(i.tmp / "nosuchrun")), 2, ["nosuchrun: no such folder", "train --out"],
     ["rep"]),
    ("report --run-clinical of other patients",
     lambda i, s: i.report("--run-clinical", str(i.clinical(patient_id=lambda ids: "other-" + ids))), 2,
     ["clinical.csv (--run-clinical", "--run-clinical-columns", "none of its patients"], ["rep"]),
    ("clinical: text in a numeric column", lambda i, s: _external(i, i.clinical(age="old")), 2,
     ["clinical.csv", "'age'", "non-numeric"], ["rep"]),
    ("clinical: a negative survival time", lambda i, s: _external(i, i.clinical(os_months=-1.0)), 2,
     ["clinical.csv", "negative"], ["rep"]),
    ("clinical: a missing column", lambda i, s: _external(i, _without(i.clinical(), "grade")), 2,
     ["clinical.csv", "no column 'grade'"], ["rep"]),
    ("clinical: a column the mapping names that is not there",
     lambda i, s: _mapping(i, json.dumps({"os_months": "OS_MONTHS"})), 2, ["clinical.csv", "'OS_MONTHS'"], ["rep"]),
    ("clinical: a mapping that is not JSON", lambda i, s: _mapping(i, "{os_months: OS"), 2,
     ["columns.json", "not a readable JSON"], ["rep"]),
    ("clinical: a mapping with an unknown key", lambda i, s: _mapping(i, json.dumps({"survival": "OS"})), 2,
     ["columns.json", "unknown keys ['survival']"], ["rep"]),
    ("clinical: os_event 7", lambda i, s: _external(i, i.clinical(os_event=7)), 2,
     ["clinical.csv", "'os_event' must be 1"], ["rep"]),
    ("clinical: no patient shared", lambda i, s: _external(i, i.clinical(patient_id=lambda ids: "nobody-" + ids)), 2,
     ["clinical.csv (--clinical", "none of its patients", "--clinical-columns"], ["rep"]),
    ("clinical: the predictions file missing",
     lambda i, s: i.report("--external-predictions", str(i.tmp / "gone.csv"), "--clinical", str(i.clinical())), 2,
     ["gone.csv"], ["rep"]),
    ("normalize to an unknown image type",
     lambda i, s: ["normalize", str(sorted(s.glob("*.png"))[0]), "--out", str(i.tmp / "out.xyz")], 2, ["out.xyz", ".png"],
     ["out.xyz"]),
    ("config.json missing", lambda i, s: _damaged_run(i, lambda c: c.unlink()), 2,
     ["not a training run folder (no config.json)"], ["p.csv"]),
    ("config.json truncated", lambda i, s: _damaged_run(i, lambda c: c.write_text(c.read_text()[:80])), 2,
     ["config.json: unreadable"], ["p.csv"]),
    ("config.json garbage", lambda i, s: _damaged_run(i, lambda c: c.write_bytes(b"PK\x03\x04")), 2,
     ["config.json: unreadable"], ["p.csv"]),
    ("train --out an existing run",
     lambda i, s: _train(i, "--out", str(shutil.copytree(i.run, i.tmp / "existing"))), 2,
     ["existing exists and holds a hist2RNA training run", "--overwrite"], []),
    ("encoder weights: a transformers folder without config.json",
     lambda i, s: (i.tmp / "phikon").mkdir() or _extract(i, _pre_tiled(i, s), extra=(
         "--backbone", "phikon-v2", "--weights", str(i.tmp / "phikon"))), 2,
     ["phikon: no config.json", "transformers model", "huggingface.co/owkin/phikon-v2"], ["out"]),
    ("encoder weights: another model's file",
     lambda i, s: _extract(i, _pre_tiled(i, s), extra=("--backbone", "uni", "--weights", str(ENCODER_FIXTURES / "virchow2.safetensors"))), 2,
     ["virchow2.safetensors: tensor", "the file is another model's"], ["out"]),
    ("encoder weights: a PyTorch file without torch",
     lambda i, s: (i.tmp / "pytorch_model.bin").write_bytes(b"PK\x03\x04") and _extract(i, _pre_tiled(i, s), extra=(
         "--backbone", "uni", "--weights", str(i.tmp / "pytorch_model.bin"))), 2,
     ["pytorch_model.bin: a PyTorch file, which needs torch", "model.safetensors"], ["out"]),
    ("crossval with more folds than the smallest subtype has patients",
     lambda i, s: ["crossval", *_train(i)[1:], "--folds", "40", "--out", str(i.tmp / "cv")], 2,
     ["--folds 40: needs 2 to", "so that every fold holds each subtype"], ["cv"]),
    ("crossval with one fold",
     lambda i, s: ["crossval", *_train(i)[1:], "--folds", "1", "--out", str(i.tmp / "cv")], 2,
     ["--folds 1: needs 2 to"], ["cv"]),
    ("extract from an empty folder",
     lambda i, s: (i.tmp / "empty").mkdir() or _extract(i, i.tmp / "empty"), 2,
     ["no slides found in", "empty"], ["out"]),
    ("labels whose subtypes are all unknown",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--subtypes", "lumA"),
     2, ["clinical.csv", "among lumA", "'LumA'"], ["r"]),
    ("a split of other patients",
     lambda i, s: (pd.DataFrame({"patient_id": ["X1", "X2"], "subset": ["train", "test"]}).to_csv(
         i.tmp / "split.csv", index=False), _train(i, "--out", str(i.tmp / "r"), "--split", str(i.tmp / "split.csv")))[1],
     2, ["split.csv", "none of its 2 patients"], ["r"]),
    ("spatial of a file that is not a slide",
     lambda i, s: (i.tmp / "notaslide.svs").write_text("text") and [
         "spatial", str(i.run), "--features", str(i.root / "features" / "tiny"), "--slides",
         str(i.tmp / "notaslide.svs"), "--no-subtypes", "--out", str(i.tmp / "maps")], 1,
     ["notaslide.svs", "not a readable slide or image"], ["maps"]),
    ("subtype voting with labels of other patients",
     lambda i, s: _subtype_table(i, nan=False) + [
         "--method", "voting", "--reference-expression", str(i.cohort / "expression.csv"), "--reference-labels",
         str((pd.DataFrame({"PATIENT": ["P1", "P2"], PAM50_LABEL_COLUMN: ["lumA", "Claudin-low"]}).to_csv(
             i.tmp / "labels.csv", index=False), i.tmp / "labels.csv")[1])], 2,
     ["labels.csv", "'lumA'", "'Claudin-low'"], ["calls.csv"]),
    # issue 27: tracebacks before
    ("extract --tile-px 100000", lambda i, s: _extract(i, _pre_tiled(i, s), extra=("--tile-px", "100000")), 2,
     ["--tile-px", "at most 4096"], ["out"]),
    ("train with an inf cell in the expression",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--expression",
                         str(_with_cell(i.cohort / "expression.csv", i.tmp / "inf.csv", 2, 4, "inf"))), 2,
     ["inf.csv", "not a finite number", "(inf)", "gene"], ["r"]),
    ("train with a NaN in the expression",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--expression",
                         str(_with_cell(i.cohort / "expression.csv", i.tmp / "nan.csv", 0, 1, "nan"))), 2,
     ["nan.csv", "missing values (NaN) in", "e.g. sample '"], ["r"]),
    # issue 29: heads that read every tile, the whole transcriptome
    ("train --head abmil on records without tile features",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "abmil", "--features", str(_without_tile_features(i))),
     2, ["means_only", "no per-tile features", "--head abmil", "--save-tile-features"], ["r"]),
    ("train --head abmil --head-init a FEATHER file of another encoder's feature size",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "abmil", "--head-init", str(_feather(i, 1024))), 2,
     ["feather.safetensors", "takes 1024 features (UNI's)", "the run's features have 24"], ["r"]),
    ("train --head abmil --head-init a file of another model",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "abmil", "--head-init", str(_feather(i, 0))), 2,
     ["feather.safetensors", "not an ABMIL checkpoint of MIL-Lab's layout"], ["r"]),
    ("train --head sequoia with more clusters than a slide has tiles",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "sequoia", "--head-option", "clusters=500"), 2,
     ["fewer tiles than the 500 clusters", "--head-option clusters="], ["r"]),
    ("train --head sequoia --head-option a setting the head lacks",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "sequoia", "--head-option", "embed_dim=256"), 2,
     ["--head-option 'embed_dim=256'", "sequoia head's settings", "depth=6, heads=16"], ["r"]),
    ("import-run --from sequoia of a folder that is not a SEQUOIA fold",
     lambda i, s: ["import-run", "--from", "sequoia", str(i.cohort), "--out", str(i.tmp / "r")], 2,
     ["no config.json", "huggingface-cli download gevaertlab/sequoia-brca-0"], ["r"]),
    ("train --genes all with a table of 3 genes",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--genes", "all", "--expression", str(_three_genes(i))), 2,
     ["three.csv", "--genes all takes every gene of the table, and it has 3", "--genes panel"], ["r"]),
    ("train --seed -1", lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--seed", "-1"), 2,
     ["--seed", "0 to 4294967295"], ["r"]),
    ("train --seed 2**64", lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--seed", str(2 ** 64)), 2,
     ["--seed", "0 to 4294967295"], ["r"]),
    ("train --validation-fraction 0.99",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--validation-fraction", "0.99"), 2,
     ["--validation-fraction 0.99", "none left to train on"], ["r"]),
    ("baseline --features without tile features",
     lambda i, s: ["baseline", str(i.run), "--features", str(_without_tile_features(i)), "--out", str(i.tmp / "b")], 2,
     ["means_only", "--save-tile-features"], ["b"]),
    ("baseline --features whose held-out slides lack tile features",
     lambda i, s: ["baseline", str(i.run), "--features", str(_without_tile_features(i, held_out_only=True)), "--out",
                   str(i.tmp / "b")], 2, ["means_only", "--save-tile-features"], ["b"]),
    ("report of a crossval whose summary.csv is damaged",
     lambda i, s: ["report", str(_crossval_folder(i, b"\xff\xfe\x00garbage\x89PNG")), "--out", str(i.tmp / "rep" / "r.html")],
     2, ["summary.csv", "not a readable CSV", "Run the same `hist2rna crossval` command again"], ["rep"]),
    ("subtype voting with a reference of one class", lambda i, s: _one_class_reference(i), 2,
     ["labels.csv", "one subtype", "'LumA'"], ["calls.csv"]),
    # issue 35: sizes a machine cannot hold, --genes files, --head-init files; crossval checks every fold first
    ("train --head-option embed_dim past the machine's memory",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head", "abmil", "--head-option", "embed_dim=99999999999"),
     2, ["--head abmil with embed_dim=99999999999", "parameters on 24 features and 138 genes", "TiB to train",
         "more than this machine's", "give smaller --head-option values"], ["r"]),
    ("train --head-option kernel_size past the machine's memory",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--head-option", "kernel_size=1000000000"), 2,
     ["--head hist2rna with filters=256,512,512, kernel_size=1000000000", "more than this machine's"], ["r"]),
    ("train --genes a binary file",
     lambda i, s: (i.tmp / "g.bin").write_bytes(bytes(range(256))) and _train(i, "--out", str(i.tmp / "r"), "--genes",
                                                                             str(i.tmp / "g.bin")), 2,
     ["--genes", "g.bin: not a text file", "one a line"], ["r"]),
    ("train --genes a file that is not there",
     lambda i, s: _train(i, "--out", str(i.tmp / "r"), "--genes", str(i.tmp / "nosuch.txt")), 2,
     ["--genes", "nosuch.txt", "no such file"], ["r"]),
    ("train --genes none of which the table has, --drop-missing-genes",
     lambda i, s: (i.tmp / "g.txt").write_text("FOO\nBAR\nBAZ\n") and _train(
         i, "--out", str(i.tmp / "r"), "--genes", str(i.tmp / "g.txt"), "--drop-missing-genes"), 2,
     ["expression.csv", "none of the 3 genes asked for (e.g. FOO, BAR, BAZ) is in the table"], ["r"]),
    ("train --head-init a text file",
     lambda i, s: (i.tmp / "init.txt").write_text("hello\n") and _train(
         i, "--out", str(i.tmp / "r"), "--head", "abmil", "--head-init", str(i.tmp / "init.txt")), 2,
     ["init.txt: not a weights file (neither safetensors nor PyTorch", "model.safetensors"], ["r"]),
    ("folds --site-column a column the table lacks",
     lambda i, s: ["folds", "--labels", str(_sited(i)), "--site-preserved", "--site-column", "hospital", "--folds",
                   "2", "--out", str(i.tmp / "f.csv")], 2,
     ["clinical_sites.csv: no column 'hospital' (columns: PATIENT,", "centre"], ["f.csv", "f.json"]),
    ("folds --site-column an empty column",
     lambda i, s: ["folds", "--labels", str(_sited(i, centre="")), "--site-preserved", "--site-column", "centre",
                   "--folds", "2", "--out", str(i.tmp / "f.csv")], 2,
     ["12 of 12 patients have no site in the site column", "--site-column"], ["f.csv", "f.json"]),
    ("folds --site-column the patients' own column: every site one patient",
     lambda i, s: ["folds", "--labels", str(_sited(i)), "--site-preserved", "--site-column", "PATIENT", "--folds",
                   "2", "--out", str(i.tmp / "f.csv")], 2,
     ["each of the 12 patients has a site of its own", "not of patients"], ["f.csv", "f.json"]),
    ("folds --site-preserved with a site over 1/k of the patients",
     lambda i, s: ["folds", "--labels", str(_sited(i, centre=lambda c: ["A1"] * 7 + list(c[7:]))),
                   "--site-preserved", "--site-column", "centre", "--folds", "2", "--out", str(i.tmp / "f.csv")], 2,
     ["site A1 holds 7 of the 12 patients (58%), more than a fold's 1/2; give fewer folds"], ["f.csv", "f.json"]),
    ("report --out a table of the user's (not .html)",
     lambda i, s: (i.tmp / "mine.csv").write_text("a,b\n1,2\n") and ["report", str(i.run), "--out",
                                                                      str(i.tmp / "mine.csv")], 2,
     ["--out", "mine.csv: a report is an HTML page; give a file ending in .html"], []),
    ("robustness with one class (a label column that is one value)",
     lambda i, s: ["robustness", str(i.root / "features" / "tiny"), "--labels", str(_sited(i)), "--label-column",
                   "note", "--site-column", "centre", "--k", "1", "--out", str(i.tmp / "ri")], 2,
     ["features/tiny: robustness index: needs 2 biological classes or more; found 1 (SYNTHETIC)"], ["ri"]),
    ("robustness of a small cohort at PathoROB's k",
     lambda i, s: ["robustness", str(i.root / "features" / "tiny"), "--labels", str(_sited(i, centre=lambda c: [
         "A1", "A2"] * 6)), "--site-column", "centre", "--out", str(i.tmp / "ri")], 2,
     ["robustness index: k=61 needs that many neighbours", "The largest k every subset allows here is"], ["ri"]),
    ("robustness without a site for the patients (not TCGA, no --site-column)",
     lambda i, s: ["robustness", str(i.root / "features" / "tiny"), "--labels", str(i.cohort / "clinical.csv"),
                   "--out", str(i.tmp / "ri")], 2,
     ["has no site (neither --site-column nor a TCGA barcode", "give --site-column"], ["ri"]),
    ("crossval --folds-file without the column named",
     lambda i, s: ["crossval", *_train(i)[1:], "--folds-file", str(_sited(i)), "--folds-column", "CV3_brca",
                   "--out", str(i.tmp / "cv")], 2,
     ["clinical_sites.csv: no column 'CV3_brca'", "give --folds-column"], ["cv"]),
    ("crossval --folds-file whose folds are not numbers",
     lambda i, s: ["crossval", *_train(i)[1:], "--folds-file", str(_sited(i)), "--folds-column", "centre",
                   "--out", str(i.tmp / "cv")], 2,
     ["clinical_sites.csv: column 'centre' holds 'A1'; folds are whole numbers"], ["cv"]),
    ("crossval whose folds hold out too few patients",
     lambda i, s: ["crossval", *_train(i)[1:], "--subtypes", "LumA", "LumB", "--folds", "5", "--out",
                   str(i.tmp / "cv")], 2,
     ["the split leaves 8 training and 2 held-out patients", "fold 1 of --folds 5", "give fewer --folds"], ["cv"]),
    *[(f"crossval refused for {what}: nothing written",
       lambda i, s, extra=extra: ["crossval", *_train(i)[1:], "--subtypes", "LumA", "LumB", "--folds", "2", "--out",
                                  str(i.tmp / "cv"), *extra(i)], 2, named, ["cv"])
      for what, extra, named in [
          ("records without tile features", lambda i: ["--head", "abmil", "--features", str(_without_tile_features(i))],
           ["means_only", "no per-tile features", "--save-tile-features"]),
          ("a --head-option the head lacks", lambda i: ["--head-option", "bogus=1"],
           ["--head-option 'bogus=1'", "hist2rna head's settings"]),
          ("a --head-init of another encoder's width", lambda i: ["--head", "abmil", "--head-init", str(_feather(i, 1024))],
           ["feather.safetensors", "takes 1024 features (UNI's)", "the run's features have 24"])]],
    # exit 0 on bad input before, or a half-written folder
    ("export --name ''", lambda i, s: ["export", str(i.run), "--out", str(i.tmp / "o"), "--name", ""], 2,
     ["--name ''", "one folder name"], ["o"]),
    ("export --name with a newline", lambda i, s: ["export", str(i.run), "--out", str(i.tmp / "o"), "--name", "a\nb"],
     2, ["--name 'a\\nb'", "printable"], ["o"]),
    ("subtype with an inf value",
     lambda i, s: (_subtype_table(i, nan=False), _with_cell(i.tmp / "expression.csv", i.tmp / "expression.csv", 3, 7,
                                                           "inf"))[0], 2,
     ["expression.csv", "not a finite number", "'S3'"], ["calls.csv"]),
    ("subtype of one sample",
     lambda i, s: (_subtype_table(i, nan=False), pd.read_csv(i.tmp / "expression.csv").head(1).to_csv(
         i.tmp / "expression.csv", index=False))[0], 2,
     ["expression.csv", "one sample", "median-centres"], ["calls.csv"]),
    ("extract --annotations a folder that is not there",
     lambda i, s: _extract(i, i.cohort / "slides" / "demo-01.tiff", extra=("--annotations", str(i.tmp / "nowhere"))),
     2, ["--annotations", "nowhere: no such file or folder"], ["out"]),
    ("extract --annotations a file",
     lambda i, s: _extract(i, i.cohort / "slides" / "demo-01.tiff",
                           extra=("--annotations", str(i.cohort / "annotations" / "demo-01.geojson"))),
     2, ["--annotations", "demo-01.geojson: a file"], ["out"]),
    ("extract --slidez (a typo)", lambda i, s: ["extract", "--slidez", str(i.cohort / "slides"), "--out",
                                                str(i.tmp / "out")], 2,
     ["--slidez", "did you mean --slides"], ["out"]),
    ("encoder weights: a transformers folder without model.safetensors",
     lambda i, s: (i.tmp / "phikon").mkdir() or shutil.copy(ENCODER_FIXTURES / "phikon-v2" / "config.json",
                                                            i.tmp / "phikon") and _extract(i, _pre_tiled(i, s), extra=(
         "--backbone", "phikon-v2", "--weights", str(i.tmp / "phikon"))), 2,
     ["phikon", "model.safetensors"], ["out"]),
    ("export of a crossval folder", lambda i, s: ["export", str(_crossval_folder(i)), "--out", str(i.tmp / "o")], 2,
     ["a crossval folder", "fold-<k>/", "fold-1"], ["o"]),
    ("report: a text cell in the external predictions",
     lambda i, s: i.report("--external-predictions", str(_with_cell(i.predictions(), i.tmp / "ext.csv", 1, 2, "high")),
                           "--clinical", str(i.clinical())), 2,
     ["ext.csv", "'high'", "row", "column"], ["rep"]),
    # issue 35: import-run, imported runs, baseline (HUB: the fixture fold, 32 features, 5 outputs)
    *[(f"import-run of a fold whose config.json has {key} {json.dumps(value)}",
       lambda i, s, key=key, value=value: (i.tmp / "hub").mkdir() or shutil.copy(
           HUB / "model.safetensors", i.tmp / "hub") and (i.tmp / "hub" / "config.json").write_text(json.dumps(
               {**json.loads((HUB / "config.json").read_text()), key: value})) and [
           "import-run", "--from", "sequoia", str(i.tmp / "hub"), "--out", str(i.tmp / "r")], 2,
       ["hub/config.json", f"{key} is {json.dumps(value)}", "not a whole number >= 1", "download the fold again"],
       ["r"]) for key, value in (("depth", "two"), ("nheads", 2.7), ("num_outputs", -5))],
    ("import-run of a fold whose config.json says a size past the machine's memory",
     lambda i, s: (i.tmp / "hub").mkdir() or shutil.copy(HUB / "model.safetensors", i.tmp / "hub") and (
         i.tmp / "hub" / "config.json").write_text(json.dumps({**json.loads((HUB / "config.json").read_text()),
                                                                "depth": 10 ** 9})) and (i.tmp / "g.txt").write_text(
         "\n".join(load_panel("pam50")[:5])) and ["import-run", "--from", "sequoia", str(i.tmp / "hub"), "--genes",
                                                  str(i.tmp / "g.txt"), "--out", str(i.tmp / "r")], 2,
     ["--head sequoia with depth=1000000000", "more than this machine's"], ["r"]),
    ("import-run --genes a binary file",
     lambda i, s: (i.tmp / "g.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe") and [
         "import-run", "--from", "sequoia", str(HUB), "--genes", str(i.tmp / "g.bin"), "--out", str(i.tmp / "r")],
     2, ["--genes", "g.bin: not a text file", "gene symbols, one a line"], ["r"]),
    ("import-run --genes a file that is not there",
     lambda i, s: ["import-run", "--from", "sequoia", str(HUB), "--genes", str(i.tmp / "nosuch.txt"), "--out",
                   str(i.tmp / "r")], 2, ["--genes", "nosuch.txt: no such file"], ["r"]),
    ("import-run --genes naming a gene twice",
     lambda i, s: (i.tmp / "genes.txt").write_text("BAG1\nBCL2\nBAG1\nCCNB1\nGRB7\n") and [
         "import-run", "--from", "sequoia", str(HUB), "--genes", str(i.tmp / "genes.txt"), "--out", str(i.tmp / "r")],
     2, ["--genes", "genes.txt: names BAG1 more than once", "list each symbol once"], ["r"]),
    *[(f"import-run --features of another width{' to evaluate on' if evaluate else ''}",
       lambda i, s, evaluate=evaluate: (i.tmp / "genes.txt").write_text("\n".join(load_panel("pam50")[:5])) and [
           "import-run", "--from", "sequoia", str(HUB), "--genes", str(i.tmp / "genes.txt"), "--features",
           str(shutil.copytree(i.root / "features" / "tiny", i.tmp / "feats",
                               ignore=shutil.ignore_patterns(CACHE_FOLDER))),
           *(["--expression", str(i.cohort / "expression.csv"), "--labels", str(i.cohort / "clinical.csv")]
             if evaluate else []), "--out", str(i.tmp / "r"), "--no-progress"], 2,
       ["--features", "feats: its records have 24 features a tile, but the fold reads 32", "input_dim",
        "--backbone uni"], ["r", f"feats/{CACHE_FOLDER}"]) for evaluate in (False, True)],
    ("import-run --out an existing training run",
     lambda i, s: ["import-run", "--from", "sequoia", str(HUB), "--out",
                   str(shutil.copytree(i.run, i.tmp / "existing"))], 2,
     ["existing exists and holds a hist2RNA training run", "give another --out, or remove it"], []),
    ("report of a run imported without an evaluation",
     lambda i, s: (i.tmp / "genes.txt").write_text("\n".join(load_panel("pam50")[:5])) and main([
         "import-run", "--from", "sequoia", str(HUB), "--genes", str(i.tmp / "genes.txt"), "--out",
         str(i.tmp / "imp")]) == 0 and ["report", str(i.tmp / "imp"), "--n-boot", "5"], 2,
     ["imp: imported without --expression", "no evaluation to report", "hist2rna import-run", str(HUB),
      "--features DIR --expression TABLE --labels TABLE"], ["imp/report"]),
    ("baseline --features holding none of the run's slides",
     lambda i, s: (i.tmp / "others").mkdir() or [write_record(
         replace(read_record(path), slide_id=f"other-{path.stem}", patient_id=f"other-{path.stem}"),
         i.tmp / "others" / f"other-{path.stem}.tfrecord") for path in (i.root / "features" / "tiny").glob(
             "*.tfrecord")] and ["baseline", str(i.run), "--features", str(i.tmp / "others"), "--out",
                                 str(i.tmp / "b"), "--no-progress"], 2,
     ["--features", "others: holds none of the slides of the run's 12 patients", "(e.g. other-demo-",
      "the folder", "was trained on"], ["b"]),
    ("baseline --features without the held-out patients' slides",
     lambda i, s: [path.unlink() for path in shutil.copytree(i.root / "features" / "tiny", i.tmp / "some").glob(
         "*.tfrecord") if read_record(path).patient_id in set(runs.held_out(i.run)[0].index)] and [
         "baseline", str(i.run), "--features", str(i.tmp / "some"), "--out", str(i.tmp / "b"), "--no-progress"], 2,
     ["--features", "some: holds no slide of", "of the run's 12 patients", "held-out", "was trained on"], ["b"]),
    ("demo --backbone bogus", lambda i, s: _demo(i, "--backbone", "bogus"), 2, ["unknown backbone 'bogus'"], ["demo"]),
    ("demo --weights a file that is not there", lambda i, s: _demo(i, "--weights", str(i.tmp / "w.h5")), 2,
     ["w.h5 not found"], ["demo"]),
    ("demo --n-slides 2", lambda i, s: _demo(i, "--n-slides", "2"), 2, ["--n-slides 2", "at least 12"], ["demo"]),
    # Spatial transcriptomics samples (issue 37): read and checked before anything is written.
    ("a HEST sample without obsm['spatial']",
     lambda i, s: _spots_hest(i, lambda root: _st(root, lambda a: a.obsm.pop("spatial") is None)), 2,
     ["no obsm['spatial']"], ["spots"]),
    ("a HEST sample whose spots lie outside its image",
     lambda i, s: _spots_hest(i, lambda root: _st(root, lambda a: a.obsm.__setitem__("spatial", a.obsm["spatial"] * 4))),
     2, ["spot centres lie outside the image", "full-resolution image"], ["spots"]),
    ("a HEST sample with a gene symbol twice",
     lambda i, s: _spots_hest(i, lambda root: _st(root, lambda a: setattr(a, "var_names", ["ESR1", "ESR1", *_GENES[2:]]))),
     2, ["name more than one column", "--duplicate-genes sum"], ["spots"]),
    ("a HEST sample of zero counts",
     lambda i, s: _spots_hest(i, lambda root: _st(root, lambda a: setattr(a, "X", a.X * 0))), 2,
     ["every count is zero"], ["spots"]),
    ("a HEST sample without a pixel size",
     lambda i, s: _spots_hest(i, lambda root: (root / "metadata" / "SYN1.json").write_text("{}")), 2,
     ["no pixel size", "--mpp"], ["spots"]),
    ("a Space Ranger folder whose counted spots have no position",
     lambda i, s: _spots_spaceranger(i, lambda f: _positions_without(f, 3)), 2,
     ["3 counted spot(s) have no position in tissue_positions.csv"], ["spots"]),
    ("a Space Ranger folder with another image than its scale factors'",
     lambda i, s: _spots_spaceranger(i, lambda f: _hires_factor(f, 0.3)), 2,
     ["the scale factors make the full resolution"], ["spots"]),
    ("a Space Ranger folder of no counts file",
     lambda i, s: _spots_spaceranger(i, lambda f: (f / "filtered_feature_bc_matrix.h5").unlink()), 2,
     ["no filtered_feature_bc_matrix.h5"], ["spots"]),
    ("a Visium HD folder without the bins asked for", lambda i, s: _visium_hd(i, "--bin-um", "8"), 2,
     ["no binned_outputs/square_008um", "its bins are square_016um", "--bin-um"], ["spots"]),
    # Spot runs (issue 37): the study checked before anything is written.
    ("train-spots with a sample whose spots were not extracted",
     lambda i, s: _spot_study(i, lambda st: (st["features"] / "SP2.tfrecord").unlink()), 2,
     ["no spot record for sample(s) SP2", "extract-spots"], ["run"]),
    ("train-spots on two patients, one held out",
     lambda i, s: _spot_study(i, lambda st: None, n=2), 2,
     ["2 patient(s)", "leave 1 to train on", "3 patients or more"], ["run"]),
    ("train-spots --genes naming a gene a sample did not measure",
     lambda i, s: _spot_study(i, lambda st: (i.tmp / "genes.txt").write_text("ESR1\nNOPE1\n"), "--genes",
                              str(i.tmp / "genes.txt")), 2,
     ["--genes", "not measured in sample SP0", "NOPE1"], ["run"]),
    ("spatial --truth of a sample without a spot record",
     lambda i, s: [*_spot_study(i, lambda st: (st["features"] / "SP1.tfrecord").unlink())[:0], "spatial", str(i.run),
                   "--features", str(i.tmp / "study" / "features" / "tiny"), "--truth", "SP1", "--hest",
                   str(i.tmp / "study" / "hest"), "--out", str(i.tmp / "truth")], 2,
     ["no spot record SP1.tfrecord", "extract-spots", "--like"], ["truth"]),
]


# --- spatial samples for the rows above ---
_GENES = ["ESR1", "PGR", "ERBB2", "MKI67", "KRT5", "FOXA1", "GATA3", "ACTB"]  # spatial_samples.GENES


def _spot_args(i: "Inputs", *given: str) -> list[str]:
    return ["extract-spots", *given, "--backbone", "efficientnetv2s", "--weights", "none", "--out", str(i.tmp / "spots")]


def _spots_hest(i: "Inputs", breaks) -> list[str]:
    from spatial_samples import write_hest_sample

    root = i.tmp / "hest"
    write_hest_sample(root, size=(1000, 800))  # small: each row writes its own
    breaks(root)
    return _spot_args(i, "--hest", str(root), "--samples", "SYN1")


def _spots_spaceranger(i: "Inputs", breaks) -> list[str]:
    from spatial_samples import write_hest_sample, write_spaceranger

    sample = write_hest_sample(i.tmp / "hest", size=(1000, 800))
    image = i.tmp / "hest" / "wsis" / "SYN1.tif"
    folder = write_spaceranger(i.tmp / "outs", image, sample)
    breaks(folder)
    return _spot_args(i, "--spaceranger", str(folder), "--image", str(image))


def _visium_hd(i: "Inputs", *extra: str) -> list[str]:
    from PIL import Image

    from spatial_samples import image, write_visium_hd

    picture = image((400, 320))
    Image.fromarray(picture).save(i.tmp / "he.png")
    write_visium_hd(i.tmp / "P01" / "outs", i.tmp / "he.png", picture, bins_um=(16,))
    return _spot_args(i, "--spaceranger", str(i.tmp / "P01" / "outs"), "--image", str(i.tmp / "he.png"), *extra)


def _spot_study(i: "Inputs", breaks, *extra: str, n: int = 3) -> list[str]:
    """A small spot study (spatial_samples.write_spot_study), broken by `breaks`, and train-spots on it."""
    from spatial_samples import write_spot_study

    study = write_spot_study(i.tmp / "study", n_samples=n, size=(1000, 800))
    breaks(study)
    return ["train-spots", "--features", str(study["features"]), "--hest", str(study["hest"]), "--samples",
            *study["samples"], "--out", str(i.tmp / "run"), *extra]


def _st(root: Path, change) -> None:
    import anndata

    path = root / "st" / "SYN1.h5ad"
    adata = anndata.read_h5ad(path)
    change(adata)
    adata.write_h5ad(path)


def _positions_without(folder: Path, n: int) -> None:
    path = folder / "spatial" / "tissue_positions.csv"
    pd.read_csv(path).iloc[n:].to_csv(path, index=False)


def _hires_factor(folder: Path, factor: float) -> None:
    path = folder / "spatial" / "scalefactors_json.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tissue_hires_scalef": factor}))


@pytest.fixture
def inputs(tiny_run, tiny_backbone_file, tmp_path) -> Inputs:
    shutil.copy(tiny_backbone_file, tmp_path / "tiny.keras")
    work = tmp_path / "work"
    work.mkdir()
    return Inputs(work, tiny_run)


@pytest.mark.parametrize("name, command, code, named, absent", ROWS, ids=[row[0] for row in ROWS])
def test_a_bad_input_is_one_clear_line_and_leaves_nothing(name, command, code, named, absent, inputs, tcga_tiles,
                                                           capsys):
    status, err = run(command(inputs, tcga_tiles), capsys)
    errors = [line for line in err.splitlines() if re.match(r"(hist2rna( \w+)?: )?error:", line)]
    assert status == code and len(errors) == 1, err
    for text in named:
        assert text in errors[0], (text, errors[0])
    for path in absent:
        assert not (inputs.tmp / path).exists(), path


def test_a_bad_slide_beside_good_ones_fails_alone_and_predict_says_so(inputs, capsys):
    """`predict --slides bad good`: the good slide predicted, the bad one named, exit 1 (as extract)."""
    (inputs.tmp / "bad.svs").write_text("not a slide")
    args = ["predict", str(inputs.run), "--slides", str(inputs.tmp / "bad.svs"),
            str(inputs.cohort / "slides" / "demo-02.tiff"), "--annotations", str(inputs.cohort / "annotations"),
            "--out", str(inputs.tmp / "p.csv"), "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED bad" in out and "the slides that failed above are not in it" in out
    assert list(pd.read_csv(inputs.tmp / "p.csv", index_col=0).index) == ["demo-02"]


def test_an_unreadable_tile_and_a_plain_image_with_mpp_beside_a_pre_tiled_folder(inputs, reference_data, tcga_tiles, capsys, caplog):
    """A corrupt PNG in a pre-tiled folder is left out, named, and the folder done; `--mpp` for a plain
    image beside it does not fail the folder."""
    folder = _pre_tiled(inputs, tcga_tiles)
    (folder / "TCGA-A2-A04R_x0_y0.png").write_bytes(b"\x89PNG not really")
    image = inputs.tmp / "core.png"
    shutil.copy(reference_data / "stain" / "macenko_input.png", image)
    with caplog.at_level("WARNING"):
        assert main(_extract(inputs, folder, image, extra=("--mpp", "0.5"))) == 0
    assert "2 done" in capsys.readouterr().out
    assert "TCGA-A2-A04R_x0_y0.png" in caplog.text and "--mpp 0.5 applies to slide and image files" in caplog.text


def test_text_coordinates_in_an_annotation_fail_their_slide(inputs, capsys):
    annotations = shutil.copytree(inputs.cohort / "annotations", inputs.tmp / "annotations")
    (annotations / "demo-01.geojson").write_text(json.dumps(
        {"type": "Polygon", "coordinates": [[["0", "0"], ["900", "0"], ["900", "900"], ["0", "0"]]]}))
    args = _extract(inputs, inputs.cohort / "slides" / "demo-01.tiff", inputs.cohort / "slides" / "demo-02.tiff",
                    extra=("--annotations", str(annotations)))
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED demo-01" in out and "not text" in out and "1 done" in out


def test_subtype_calls_raw_values_with_a_missing_one_as_the_logged_ones(inputs, capsys):
    """One rule for missing values, raw or logged: the sample is called on the genes it has."""
    assert main(_subtype_table(inputs, nan=True)) == 0
    calls = pd.read_csv(inputs.tmp / "calls.csv", index_col=0)
    assert calls.loc["S3", "n_genes"] == 49 and (calls.drop(index="S3")["n_genes"] == 50).all()


@pytest.mark.parametrize("case", ["tile larger than the slide", "several patients in one pre-tiled folder",
                                  "truncated TIFF", "annotation missing"])
def test_a_batch_whose_every_slide_fails_names_each_and_leaves_nothing(case, inputs, tcga_tiles, capsys):
    """Every slide failed: exit 1, each named with its own reason (the flag to change, when a flag is the
    cause), and no output folder, settings, manifest or lock left behind."""
    slide = inputs.cohort / "slides" / "demo-01.tiff"
    if case == "tile larger than the slide":
        args, reason = _extract(inputs, slide, extra=("--target-mpp", "1000")), "give a finer --target-mpp"
    elif case == "several patients in one pre-tiled folder":
        folder = inputs.tmp / "mixed"
        folder.mkdir()
        for tile in sorted((tcga_tiles).glob("*.png"))[::6]:
            shutil.copy(tile, folder)
        args, reason = _extract(inputs, folder), "tiles of 4 TCGA patients"
    elif case == "truncated TIFF":
        data = slide.read_bytes()
        (inputs.tmp / "cut.tiff").write_bytes(data[: len(data) // 2])
        args, reason = _extract(inputs, inputs.tmp / "cut.tiff"), "the file is truncated"
    else:
        (inputs.tmp / "annotations").mkdir()
        args, reason = _extract(inputs, slide, extra=("--annotations", str(inputs.tmp / "annotations"))), "no annotation"
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and reason in out, out
    assert not (inputs.tmp / "out").exists()


def test_predict_from_slides_that_all_fail_leaves_nothing(inputs, capsys):
    (inputs.tmp / "bad.svs").write_text("not a slide")
    (inputs.tmp / "annotations").mkdir()  # demo-02's is not in it
    args = ["predict", str(inputs.run), "--slides", str(inputs.tmp / "bad.svs"), str(inputs.cohort / "slides" / "demo-02.tiff"),
            "--annotations", str(inputs.tmp / "annotations"), "--out", str(inputs.tmp / "p.csv"), "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED bad" in out and "FAILED demo-02" in out and "no annotation" in out
    assert sorted(p.name for p in inputs.tmp.iterdir()) == ["annotations", "bad.svs"]


def test_a_truncated_tile_of_any_format_is_left_out_named(inputs, tcga_tiles, capsys, caplog):
    """A tile cut short (a failed copy) opens but cannot be read: in a pre-tiled folder it is left out
    and named, whatever its format, and the folder's other tiles extracted."""
    folder = inputs.tmp / "tiles" / "TCGA-A2-A04R"
    folder.mkdir(parents=True)
    for k, tile in enumerate(sorted((tcga_tiles).glob("TCGA-A2-A04R*.png"))):
        Image.open(tile).convert("RGB").save(folder / f"{tile.stem}.{'jpg' if k % 2 else 'png'}", quality=95)
    for cut in (sorted(folder.glob("*.jpg"))[0], sorted(folder.glob("*.png"))[0]):
        data = cut.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        assert main(_extract(inputs, folder)) == 0
    assert "1 done" in capsys.readouterr().out and "2 unreadable tile image(s) left out" in caplog.text


def test_tiles_of_another_size_name_their_size_and_the_flag(inputs, tcga_tiles, capsys):
    folder = inputs.tmp / "tiles" / "TCGA-A2-A04R"
    folder.mkdir(parents=True)
    for tile in sorted((tcga_tiles).glob("TCGA-A2-A04R*.png")):
        Image.open(tile).resize((256, 256)).save(folder / tile.name)
    status, err = run(_extract(inputs, inputs.tmp / "tiles"), capsys)
    assert status == 2 and "holds 256-px tiles, not 224-px ones: give --tile-px 256" in err, err
    assert main(_extract(inputs, folder)) == 1
    assert "If it is one tile of a pre-tiled folder, give --tile-px 256" in capsys.readouterr().out
    status, err = run(_extract(inputs, inputs.tmp / "tiles", extra=("--tile-px", "256")), capsys)
    assert status == 2 and "tiny.keras: the model takes 224x224-px tiles, not 256-px ones" in err, err


def test_spatial_maps_the_good_slides_names_the_bad_and_exits_1(inputs, capsys):
    """One rule for a batch, as `extract`: a slide that cannot be mapped is named, the others are mapped,
    exit 1."""
    (inputs.tmp / "notaslide.svs").write_text("text")
    status, err = run(["spatial", str(inputs.run), "--features", str(inputs.root / "features" / "tiny"), "--slides",
                       str(inputs.tmp / "notaslide.svs"), str(inputs.cohort / "slides" / "demo-01.tiff"),
                       "--no-subtypes", "--genes", "ESR1", "--out", str(inputs.tmp / "maps"), "--no-progress"], capsys)
    assert status == 1 and "notaslide.svs" in err and "1 of 2 slides not mapped" in err, err
    assert SpatialFolder(inputs.tmp / "maps").objects("demo-01").is_file()


# --- issue 11's cases, each set up in a few lines ----------------------------------------------------


def _refused(args: list[str], capsys, *named: str) -> str:
    code, err = run(args, capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", "  ", "INFO", "WARNING"))]
    assert code == 2 and len(lines) == 1, err
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("flag, value, named", [
    ("--max-tiles", "0", "at least 1"), ("--tile-px", "-3", "at least 1"), ("--batch-size", "many", "whole number"),
    ("--mpp", "0", "above 0"), ("--mpp", "-0.5", "above 0"), ("--target-mpp", "nan", "expected a finite number"),
    ("--min-region-fraction", "0", "must be in (0, 1], got 0"), ("--min-region-fraction", "1.5", "(0, 1]"),
    ("--shard", "4/4", "0 <= i < n"), ("--read-threads", "0", "at least 1"), ("--max-retries", "-1", "at least 0"),
    ("--cpus-per-worker", "0", "at least 1")])
def test_nonsensical_extraction_arguments_are_refused_at_parse_time(tmp_path, capsys, flag, value, named):
    _refused(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "out"), "--weights", "none",
              flag, value], capsys, flag, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "1", "1.2"])
def test_a_validation_fraction_that_leaves_nothing_is_refused(tmp_path, capsys, value):
    _refused(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", str(tmp_path / "run"),
              "--validation-fraction", value], capsys, "--validation-fraction", f"must be in (0, 1), got {value}")


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

    (tmp_path / "labels.csv").write_text(f"patient,{PAM50_LABEL_COLUMN}\nP1,LumA\nP2,Basal\nP1,LumA\nP3,Her2\nP3,LumB\n")
    with pytest.raises(ExpressionError, match=r"conflicting .* P3"):
        read_labels(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text(f"patient,{PAM50_LABEL_COLUMN}\nP1,LumA\nP2,Basal\nP1,LumA\n")
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
