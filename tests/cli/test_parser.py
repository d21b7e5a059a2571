"""The parser (cli/parser.py, cli/options.py): instant --help, every default the library's own and said,
every option landing where it belongs, earlier names still accepted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.report.spatial_folder import TILES


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom hist2rna_tf.cli import main\ntry:\n    main(['extract', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
            "import hist2rna_tf\nassert 'tensorflow' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--backbone" in done.stdout and "--shard" in done.stdout


def test_every_option_with_a_default_says_it_in_its_help():
    import argparse

    from hist2rna_tf.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"{name} {action.option_strings[0]}" for name, parser in commands.choices.items()
              for action in parser._actions
              if action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
              and "default" not in (action.help or "")]
    assert silent == []


def test_defaults_are_the_librarys_dataclasses(monkeypatch, tmp_path):
    """A command given only what it requires runs with the dataclasses' defaults, exactly."""
    from pathlib import Path

    import hist2rna_tf.demo.chain
    import hist2rna_tf.extract.cohort
    import hist2rna_tf.model.baseline
    import hist2rna_tf.model.train
    from hist2rna_tf.config import BaselineConfig, DemoConfig, ExtractConfig, RunInputs, TrainConfig

    seen = {}

    def capture(name):
        def record(*args, **kwargs):
            seen[name] = (args, kwargs)
            raise KeyboardInterrupt  # stop there; main answers 130
        return record

    monkeypatch.setattr(hist2rna_tf.extract.cohort, "extract_cohort", capture("extract"))
    monkeypatch.setattr(hist2rna_tf.model.train, "train_run", capture("train"))
    monkeypatch.setattr(hist2rna_tf.model.baseline, "train_patch_baseline", capture("baseline"))
    monkeypatch.setattr(hist2rna_tf.demo.chain, "run_demo", capture("demo"))
    monkeypatch.chdir(tmp_path)
    for given in ("s", "f", "e", "l", "run"):  # inputs are checked to exist before TensorFlow starts
        (tmp_path / given).mkdir()
    assert main(["extract", "--slides", "s", "--out", str(tmp_path / "out")]) == 130
    assert seen["extract"][0][2] == ExtractConfig()
    assert main(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", str(tmp_path / "r")]) == 130
    assert seen["train"][0][1:] == (tmp_path / "r", TrainConfig()) and seen["train"][0][0] == RunInputs("f", "e", "l")
    assert main(["baseline", "run", "--out", str(tmp_path / "b")]) == 130
    assert seen["baseline"][0][2] == BaselineConfig()
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 130
    assert seen["demo"][0][0] == DemoConfig(out=Path("demo_output"))


def test_report_options_reach_the_report(monkeypatch, tmp_path):
    """Each `hist2rna report` option lands in its ReportInputs field (the sections themselves:
    tests/report/test_report.py)."""
    import hist2rna_tf.report.report

    seen = {}
    monkeypatch.setattr(hist2rna_tf.report.report, "build_report", lambda inputs, out, progress: seen.update(inputs=inputs, out=out)
                        or tmp_path / "r.html")
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "s1_ESR1.png").write_bytes(b"png")
    (maps / f"s1{TILES}").write_text("x,y,ESR1\n0,0,1.0\n")  # a spatial folder's maps are of the slides it has tables of
    assert main(["report", "run", "--compare", "a", "b", "--external-predictions", "p.csv", "--clinical", "c.csv",
                 "--clinical-columns", "c.json", "--run-clinical", "rc.csv", "--run-clinical-columns", "rc.json",
                 "--baseline", "base", "--costs", "costs.csv", "--spatial-maps", str(maps), "--n-boot", "7",
                 "--out", str(tmp_path / "r.html")]) == 0
    inputs = seen["inputs"]
    assert (inputs.run, inputs.compare, inputs.baseline, inputs.costs) == (Path("run"), [Path("a"), Path("b")],
                                                                           Path("base"), Path("costs.csv"))
    assert (inputs.external_predictions, inputs.clinical, inputs.clinical_columns) == (
        Path("p.csv"), Path("c.csv"), Path("c.json"))
    assert (inputs.run_clinical, inputs.run_clinical_columns, inputs.n_boot) == (Path("rc.csv"), Path("rc.json"), 7)
    assert inputs.spatial_maps == maps and seen["out"] == tmp_path / "r.html"


def test_earlier_option_names_are_still_accepted(monkeypatch, tmp_path):
    """--quiet (baseline) and --model (predict) were renamed --no-progress and a positional RUN."""
    from hist2rna_tf.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["baseline", "run", "--out", str(tmp_path), "--quiet"]).no_progress
    args = parser.parse_args(["predict", "--model", "run", "--features", "f", "--out", str(tmp_path / "p.csv")])
    assert args.model_option == "run" and args.model is None
    assert main(["predict", "--features", "f", "--out", str(tmp_path / "p.csv")]) == 2  # no model at all


def _commands():
    import argparse

    from hist2rna_tf.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices


def _arguments(parser):
    """A command's visible options and positionals (not --help, not the hidden aliases of old names)."""
    import argparse

    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def test_every_option_has_one_home_a_config_field_or_a_shared_definition():
    """Every option and positional of every command is made in one place, recorded as `action.home`: a
    config field (by `add_option`, "Config.field") or, for `--out`, `--features`, `--slides`,
    `--no-progress`, `--overwrite`, `--annotations`, `--mpp` and RUN, its one definition in options.py
    (unless it is a config's field: the demo's --out, extract's --overwrite)."""
    shared = ("--out", "--features", "--slides", "--no-progress", "--overwrite", "--annotations", "--mpp")
    homeless, unshared, fields = [], [], 0
    for command, parser in _commands().items():
        for action in _arguments(parser):
            name = (action.option_strings or [action.dest])[0]
            home = getattr(action, "home", None)
            if home is None:
                homeless.append(f"{command} {name}")
            elif home.startswith("options."):
                unshared += [] if name in shared or home == "options.RUN" else [f"{command} {name}"]
            else:
                fields += 1
    assert homeless == [] and unshared == [] and fields >= 90, (homeless, unshared, fields)


def test_every_option_of_a_config_field_is_made_from_the_field():
    """An option whose home is a config field takes, from the field: its default (a tuple as the list argparse
    collects; None only where the call says the library's default is another's: the backbone's tile size,
    the head's epochs), its help (config.option; `{default}` shown), whether it is required (no default),
    and what its annotation takes (a flag, a checked number in its range, a choice, several values), unless
    the call said otherwise (`action.overrides`)."""
    import dataclasses
    import inspect
    import typing

    import hist2rna_tf.cli.settings as settings
    import hist2rna_tf.config as config
    import hist2rna_tf.spot_run.cohort as spot_run
    from hist2rna_tf.cli.options import field_kwargs
    from hist2rna_tf.model.crossval import crossval
    from hist2rna_tf.model.heads import with_head_training

    checked = 0
    for command, parser in _commands().items():
        for action in _arguments(parser):
            home = getattr(action, "home", "")
            if home.startswith("options.") or not home:
                continue
            kind_name, name = home.split(".")
            kind = getattr(config, kind_name, None) or getattr(settings, kind_name, None) or getattr(spot_run, kind_name)
            field = {f.name: f for f in dataclasses.fields(kind)}[name]
            where = (command, (action.option_strings or [action.dest])[0])
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                assert action.required and action.default is None, where  # no default: the user gives it
                shown = None
            else:
                default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
                given = tuple(action.default) if isinstance(action.default, list) else action.default
                if "default" in action.overrides:
                    assert given is None and name in ("tile_size_px", "target_mpp", "max_epochs", "folds"), where
                    if name == "max_epochs":  # the head's: the paper's here
                        assert with_head_training(config.TrainConfig()).max_epochs == default
                else:
                    assert given == (tuple(default) if isinstance(default, list) else default), (where, given)
                shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
            if "help" in action.overrides:  # a command's own words (train-spots' --max-epochs): the default said
                assert isinstance(shown, bool) or ("default" in action.help and str(shown) in action.help), where
            else:
                assert action.help == field.metadata["help"].format(default=shown, **action.help_values), where
            annotation = typing.get_type_hints(kind, include_extras=True)[name]
            for key, value in field_kwargs(annotation).items():
                if key in action.overrides:
                    continue
                found = getattr(action, key, None)
                if key == "type":  # a checked number is made afresh for each option
                    assert found.__name__ == value.__name__, (where, found)
                elif key == "action":
                    assert action.nargs == 0 and action.const is True, where  # store_true
                else:
                    assert found == value, (where, key, found, value)
            checked += 1
    assert checked >= 90
    folds = _commands()["crossval"]._option_string_actions["--folds"]
    assert folds.default is None  # the field's (CrossvalConfig), which the library's default is; refused with --folds-file
    assert settings.CrossvalConfig().folds == inspect.signature(crossval).parameters["folds"].default
    assert _commands()["extract"]._option_string_actions["--stain"].default == config.StainConfig().method


def test_option_types_refuse_what_the_field_refuses():
    """A number out of its field's range is refused when parsed, worded from its annotation; a choice
    outside its names too: the new homes (extract's --max-retries, spatial's --thumbnail-mpp, export's
    --version, subtype's --method) as the old."""
    from hist2rna_tf.cli import build_parser

    for argv, said in ((["extract", "--slides", "s", "--out", "o", "--max-retries", "-1"], "must be at least 0"),
                       (["spatial", "r", "--features", "f", "--slides", "s", "--out", "o", "--thumbnail-mpp", "0"],
                        "must be above 0"),
                       (["export", "r", "--out", "o", "--version", "0"], "must be at least 1"),
                       (["subtype", "--expression", "e", "--out", "o.csv", "--method", "knn"], "invalid choice")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
    args = build_parser().parse_args(["extract", "--slides", "s", "--out", "o", "--shard", "1/4", "--ray"])
    assert tuple(args.shard) == (1, 4) and args.ray == "local" and args.max_retries == 3


def test_head_option_given_twice_keeps_both():
    """`--head-option clusters=4 --head-option depth=2` trained with depth 6 before (the second replaced the
    first, unsaid): the option accumulates, and a setting given twice is refused by the head's settings."""
    from hist2rna_tf.cli import build_parser

    args = build_parser().parse_args(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", "r",
                                      "--head-option", "clusters=4", "--head-option", "depth=2", "heads=2"])
    assert args.head_options == ["clusters=4", "depth=2", "heads=2"]
    assert build_parser().parse_args(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out",
                                      "r"]).head_options == []
