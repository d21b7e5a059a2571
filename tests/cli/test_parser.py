"""The parser (cli/parser.py, cli/options.py): instant --help, every default the library's own and said,
every option landing where it belongs, earlier names still accepted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert main(["extract", "--slides", "s", "--out", str(tmp_path / "f")]) == 130
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
    assert list(inputs.extra_figures.values()) == [maps / "s1_ESR1.png"] and seen["out"] == tmp_path / "r.html"


def test_earlier_option_names_are_still_accepted(monkeypatch, tmp_path):
    """--quiet (baseline) and --model (predict) were renamed --no-progress and a positional RUN."""
    from hist2rna_tf.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["baseline", "run", "--out", str(tmp_path), "--quiet"]).no_progress
    args = parser.parse_args(["predict", "--model", "run", "--features", "f", "--out", str(tmp_path / "p.csv")])
    assert args.model_option == "run" and args.model is None
    assert main(["predict", "--features", "f", "--out", str(tmp_path / "p.csv")]) == 2  # no model at all


def test_every_option_of_a_config_field_defaults_to_the_field():
    """Each option that fills a field of the library's configs (options.from_args: dest == field name, or
    renamed) has that field's default, derived here from the dataclass itself (None where the library's
    default depends on the backbone or the head, or a list where the field holds a tuple), and, where the field
    carries the option's help (config.option), that help."""
    import argparse
    import dataclasses

    from hist2rna_tf.cli import build_parser
    from hist2rna_tf.config import (BaselineConfig, DemoConfig, ExtractConfig, ReportInputs, RunInputs, StainConfig,
                                    TileConfig, TrainConfig)
    from hist2rna_tf.model.heads import with_head_training

    configs = {"extract": [ExtractConfig, TileConfig, StainConfig], "normalize": [StainConfig],
               "train": [RunInputs, TrainConfig],
               "crossval": [RunInputs, TrainConfig], "baseline": [BaselineConfig], "report": [ReportInputs],
               "demo": [DemoConfig]}
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked, with_help = [], []
    for command, classes in configs.items():
        actions = {a.dest: a for a in commands.choices[command]._actions if a.help != argparse.SUPPRESS}
        for cls in classes:
            for field in dataclasses.fields(cls):
                action = actions.get({"mpp_override": "mpp"}.get(field.name, field.name))
                if action is None or not action.option_strings or field.name == "stain":  # --stain: its method
                    continue
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                    assert action.required, (command, action.option_strings[0])  # no default: the user gives it
                    continue
                default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
                default = tuple(default) if isinstance(default, list) else default
                given = tuple(action.default) if isinstance(action.default, list) else action.default
                if isinstance(given, str) and action.type is not None:  # argparse types a str default too
                    given = action.type(given)
                if given is None and default is not None and field.name == "max_epochs":  # the head's: the paper's here
                    assert with_head_training(TrainConfig()).max_epochs == default and str(default) in action.help
                    continue
                assert given == default or (given is None and field.name in ("tile_size_px", "target_mpp",
                                                                             "read_threads")), (
                    command, action.option_strings[0], given, default)
                if "help" in field.metadata:  # the field carries the option's help too (config.option)
                    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
                    assert action.help == field.metadata["help"].format(default=shown, **action.help_values), (
                        action.option_strings[0])
                    with_help.append(action.option_strings[0])
                checked.append(f"{command} {action.option_strings[0]}")
    assert commands.choices["extract"]._option_string_actions["--stain"].default == StainConfig().method
    import inspect

    from hist2rna_tf.model.crossval import crossval
    assert (commands.choices["crossval"]._option_string_actions["--folds"].default
            == inspect.signature(crossval).parameters["folds"].default)
    assert len(checked) >= 30 and len(set(with_help)) >= 25, (checked, with_help)


def test_every_option_has_one_home_a_config_field_or_a_shared_definition():
    """An option that fills a config field (with the field's help: config.option) is made from that field by
    `add_option` (its default, help, type and range the field's: `action.home` names it), never retyped;
    `--out`, `--features`, `--slides`, `--no-progress`, `--overwrite`, `--annotations` and `--mpp` are each
    defined once (options.py) for every command, unless they are a config's field (the demo's --out,
    extract's --overwrite)."""
    import argparse
    import dataclasses
    import typing

    from hist2rna_tf.cli import build_parser
    from hist2rna_tf.cli.options import field_kwargs, out_file, out_folder, tile_px
    from hist2rna_tf.config import (BaselineConfig, DemoConfig, ExtractConfig, ReportInputs, RunInputs, StainConfig,
                                    TileConfig, TrainConfig)

    configs = {"extract": [ExtractConfig, TileConfig, StainConfig], "normalize": [StainConfig],
               "train": [RunInputs, TrainConfig],
               "crossval": [RunInputs, TrainConfig], "baseline": [BaselineConfig], "report": [ReportInputs],
               "demo": [DemoConfig]}
    shared = ("--out", "--features", "--slides", "--no-progress", "--overwrite", "--annotations", "--mpp")
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    retyped, unshared, homed = [], [], 0
    for command, parser in commands.choices.items():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            flag, home = action.option_strings[0], getattr(action, "home", None)
            fields = {f"{cls.__name__}.{f.name}": (cls, f) for cls in configs.get(command, [])
                      for f in dataclasses.fields(cls) if "help" in f.metadata}
            owner = next((key for key in fields if key.split(".")[1] == action.dest), None)
            if owner is not None:
                if home != owner:
                    retyped.append(f"{command} {flag}")
                    continue
                cls, field = fields[owner]  # what it takes: the field's annotation's (its type, range, choices)
                for key, value in field_kwargs(typing.get_type_hints(cls, include_extras=True)[field.name]).items():
                    found = getattr(action, key, None)
                    # a checked number is made afresh; a path to write is checked writable; a tile size takes trident
                    same = (found.__name__ == value.__name__ or found in (out_folder, out_file, tile_px)
                            if key == "type" else
                            found == value or (key == "nargs" and found == "*") or key == "action")
                    assert same, (command, flag, key, found, value)
                homed += 1
            elif flag in shared and home != f"options.{flag}":
                unshared.append(f"{command} {flag}")
    assert retyped == [] and unshared == [] and homed >= 45, (retyped, unshared, homed)


def test_head_option_given_twice_keeps_both():
    """`--head-option clusters=4 --head-option depth=2` trained with depth 6 before (the second replaced the
    first, unsaid): the option accumulates, and a setting given twice is refused by the head's settings."""
    from hist2rna_tf.cli import build_parser

    args = build_parser().parse_args(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out", "r",
                                      "--head-option", "clusters=4", "--head-option", "depth=2", "heads=2"])
    assert args.head_options == ["clusters=4", "depth=2", "heads=2"]
    assert build_parser().parse_args(["train", "--features", "f", "--expression", "e", "--labels", "l", "--out",
                                      "r"]).head_options == []
