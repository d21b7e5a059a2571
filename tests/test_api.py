"""The five calls of the package's top, as the README shows them to a notebook user: importing the
package loads no TensorFlow; each call does what its command does; a bad argument, to a call or a config,
is one error naming it before any work (the API's table of bad inputs)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pandas as pd
import pytest

import hist2rna_tf as h2r
from hist2rna_tf.arguments import OneOf
from hist2rna_tf.config import ExtractConfig, TrainConfig
from hist2rna_tf.errors import ArgumentError
from hist2rna_tf.model import runs

from files import snapshot


def test_import_is_cheap_and_the_calls_load_on_first_use():
    code = ("import sys, hist2rna_tf as h2r\nassert 'tensorflow' not in sys.modules and 'hist2rna_tf.api' not in "
            "sys.modules\nassert callable(h2r.train) and 'tensorflow' not in sys.modules\n"
            "import hist2rna_tf.extract.cohort, hist2rna_tf.report.report\nassert callable(h2r.extract_features) "
            "and callable(h2r.write_report)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(h2r.__all__) == ["__version__", "export", "extract_features", "predict", "train", "write_report"]


def test_the_five_calls_run_the_chain(tiny_run, tiny_backbone_file, tmp_path):
    cohort = tiny_run / "cohort"
    results = h2r.extract_features([cohort / "slides" / "demo-01.tiff", cohort / "slides" / "demo-02.tiff"],
                                   tmp_path / "features", backbone=str(tiny_backbone_file), weights="none",
                                   annotations=cohort / "annotations", progress=False)
    assert [r.status for r in results] == ["done", "done"]
    summary = h2r.train(tiny_run / "features" / "tiny", cohort / "expression.csv", cohort / "clinical.csv",
                        out=tmp_path / "run", config=TrainConfig(max_epochs=3), progress=False)
    assert summary.metrics["across_genes"]["total"] == 138 and runs.read_record(tmp_path / "run").epochs >= 1
    table = h2r.predict(tmp_path / "run", features=tmp_path / "features" / "tiny")
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["demo-01", "demo-02"] and table.shape[1] == 138
    head, full = h2r.export(tmp_path / "run", tmp_path / "saved_models")
    assert (head / "saved_model.pb").is_file() and (full / "saved_model.pb").is_file()
    page = h2r.write_report(tmp_path / "run", n_boot=5)
    assert page == tmp_path / "run" / "report" / "report.html" and page.is_file()


# --- the API's bad inputs (issue 35): a row a case, as the command line's table (cross_cutting/
# test_bad_input_table.py) has them: one ArgumentError (or other Hist2RNAError) naming the argument, its
# value and what it takes, before any work; nothing written, the user's files unchanged ------------------


def _inputs(root: Path) -> tuple[str, str, str]:
    return str(root / "features" / "tiny"), str(root / "cohort" / "expression.csv"), str(root / "cohort" / "clinical.csv")


# id, the call (of the tiny run's root and a scratch folder), what the message names
API_ROWS = [
    ("train(overwrite='no') onto a run", lambda r, t: h2r.train(*_inputs(r), out=t / "run", overwrite="no"),
     ["train(overwrite='no'): takes True or False"]),
    ("train(config=a dict)", lambda r, t: h2r.train(*_inputs(r), out=t / "new", config={"max_epochs": 2}),
     ["train(config={'max_epochs': 2}): takes a TrainConfig", "config=TrainConfig(max_epochs=2)"]),
    ("train(genes=a list)", lambda r, t: h2r.train(*_inputs(r), out=t / "new", genes=["ESR1"]),
     ["train(genes=['ESR1'])", "panel, all, an assay", "file of gene symbols"]),
    ("train(subtypes=one string)", lambda r, t: h2r.train(*_inputs(r), out=t / "new", subtypes="LumA"),
     ["train(subtypes='LumA'): takes a tuple of text", "subtypes=('LumA',)"]),
    ("train(an unknown keyword)", lambda r, t: h2r.train(*_inputs(r), out=t / "new", label_colum="PAM50"),
     ["train(label_colum=...): no such argument", "label_column"]),
    ("train(out=an int)", lambda r, t: h2r.train(*_inputs(r), out=7), ["train(out=7): takes a path"]),
    ("TrainConfig(max_epochs=0)", lambda r, t: TrainConfig(max_epochs=0),
     ["TrainConfig(max_epochs=0): takes a whole number at least 1"]),
    ("TrainConfig(max_epochs='2')", lambda r, t: TrainConfig(max_epochs="2"), ["TrainConfig(max_epochs='2')"]),
    ("TrainConfig(head_options=one string)", lambda r, t: TrainConfig(head_options="dropout=0.1"),
     ["TrainConfig(head_options='dropout=0.1'): takes a tuple of text", "head_options=('dropout=0.1',)"]),
    ("TrainConfig(validation_fraction=1)", lambda r, t: TrainConfig(validation_fraction=1.0),
     ["TrainConfig(validation_fraction=1.0): takes a finite number in (0, 1)"]),
    ("ExtractConfig(shard_index past the shards)", lambda r, t: ExtractConfig(shard_index=2, shard_count=2),
     ["shard_index takes 0 to shard_count - 1"]),
    ("write_report(n_boot='abc')", lambda r, t: h2r.write_report(r / "run", out=t / "r.html", n_boot="abc"),
     ["write_report(n_boot='abc'): takes a whole number at least 1"]),
    ("write_report(run=an int)", lambda r, t: h2r.write_report(5), ["write_report(run=5): takes a path"]),
    ("write_report(compare=one path)", lambda r, t: h2r.write_report(r / "run", out=t / "r.html", compare=str(r / "run")),
     ["write_report(compare=", "takes a list of paths", "compare=['"]),
    ("extract_features(None)", lambda r, t: h2r.extract_features(None, t / "f"),
     ["extract_features(slides=None): takes a path or a list of paths"]),
    ("extract_features(backbone=an int)", lambda r, t: h2r.extract_features(r / "cohort" / "slides", t / "f", backbone=3),
     ["extract_features(backbone=3): takes text"]),
    ("predict(run=an int)", lambda r, t: h2r.predict(5, features=_inputs(r)[0]), ["predict(run=5): takes a path"]),
    ("predict without features or slides", lambda r, t: h2r.predict(r / "run"), ["give features=", "or slides="]),
    ("export(version=0)", lambda r, t: h2r.export(r / "run", t / "saved_models", version=0),
     ["export(version=0): takes a whole number at least 1"]),
]


@pytest.mark.parametrize("name, call, named", API_ROWS, ids=[row[0] for row in API_ROWS])
def test_a_bad_argument_is_one_error_naming_it_before_any_work(name, call, named, tiny_run, tmp_path):
    shutil.copytree(tiny_run / "run", tmp_path / "run")
    before = snapshot(tiny_run, tmp_path)
    with pytest.raises(ArgumentError) as refused:
        call(tiny_run, tmp_path)
    message = str(refused.value)
    assert "\n" not in message and all(text in message for text in named), (named, message)
    assert snapshot(tiny_run, tmp_path) == before  # nothing written, nothing replaced


def _configs() -> list[type]:
    import hist2rna_tf.cli.settings as command_settings
    import hist2rna_tf.config as config

    return [kind for module in (config, command_settings) for kind in vars(module).values()
            if isinstance(kind, type) and dataclasses.is_dataclass(kind) and issubclass(kind, config.Checked)
            and kind.__module__ == module.__name__]


def _fine(annotation):
    """A value a required field of `annotation` takes: a text, the first of its choices, or a tuple of one text."""
    limits = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, OneOf)]
    if typing.get_origin(annotation) is tuple:
        return ("x",)
    return limits[0].choices[0] if limits else "x"


def test_every_public_call_and_config_refuses_a_wrong_type_naming_the_argument():
    """Each of the five calls, each parameter given something of no type it takes (and a bool's given
    "no", the value that once replaced a run), the others fine; each config dataclass, each field alike."""
    wrong = object()
    for name in (n for n in h2r.__all__ if n != "__version__"):
        call = getattr(h2r, name)
        parameters = inspect.signature(call).parameters
        fine = {p: "x" for p, spec in parameters.items() if spec.default is spec.empty and spec.kind != spec.VAR_KEYWORD}
        if name == "predict":
            fine["features"] = "x"
        hints = typing.get_type_hints(call)
        for parameter, spec in parameters.items():
            if spec.kind == spec.VAR_KEYWORD:
                continue
            for value in (wrong, "no") if hints[parameter] is bool else (wrong,):
                with pytest.raises(ArgumentError, match=re.escape(f"{name}({parameter}={value!r})")):
                    call(**{**fine, parameter: value})
    assert {kind.__name__ for kind in _configs()} >= {"TileConfig", "StainConfig", "ExtractConfig", "TrainConfig",
                                                       "RunInputs", "BaselineConfig", "ReportInputs", "DemoConfig", "ScaleConfig",
                                                       "SubtypeInputs", "SpatialConfig", "ImportInputs"}
    for kind in _configs():
        hints = typing.get_type_hints(kind, include_extras=True)
        required = {f.name: _fine(hints[f.name]) for f in dataclasses.fields(kind)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        for field in dataclasses.fields(kind):
            with pytest.raises(ArgumentError, match=re.escape(f"{kind.__name__}({field.name}={wrong!r})")):
                kind(**{**required, field.name: wrong})
