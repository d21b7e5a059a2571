"""The command line's building blocks: argument types that refuse nonsense at parse time (with the
reason), the option groups several commands share, and the library's defaults they show."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from pathlib import Path

from hist2rna_tf.arguments import OneOf, Within, unwrapped
from hist2rna_tf.cli.settings import CrossvalConfig, ExportConfig, ScaleConfig, SpatialConfig
from hist2rna_tf.config import (MAX_TILE_PX, BaselineConfig, DemoConfig, ExtractConfig, ReportInputs, RunInputs,
                                StainConfig, TileConfig, TrainConfig)

# The library's defaults, shown in --help and used when an option is not given.
TILES, EXTRACT, TRAIN, INPUTS = TileConfig(), ExtractConfig(), TrainConfig(), RunInputs("", "", "")
BASELINE, REPORT, DEMO = BaselineConfig(), ReportInputs(run=Path(".")), DemoConfig()
SCALE, CROSSVAL, EXPORT, SPATIAL = ScaleConfig(), CrossvalConfig(), ExportConfig(), SpatialConfig()


_INVALID_CHOICE = re.compile(r"argument COMMAND: invalid choice: '([^']*)'")


class Parser(argparse.ArgumentParser):
    """argparse, but an unknown option is named (with the nearest known one) before a required
    option it may be a typo of is missed: `--slidez x` says "did you mean --slides", not "--slides is
    required". Options are taken whole, never by a prefix (`--head` is not `--head-option`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """One line, naming the fix (argparse prints its whole usage block first): an unknown command
        with the nearest known one."""
        choice = _INVALID_CHOICE.match(message)
        if choice and self._subparsers:
            close = difflib.get_close_matches(choice.group(1), list(self._commands()), n=1)
            message = f"unknown command {choice.group(1)!r}" + (f": did you mean {close[0]}?" if close else "")
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def _commands(self) -> list[str]:
        return [name for action in self._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices]

    def parse_known_args(self, args=None, namespace=None):
        if args is not None and not self._subparsers:  # a command's own options
            self._refuse_unknown_options(list(args))
        return super().parse_known_args(args, namespace)

    def _refuse_unknown_options(self, args: list[str]) -> None:
        known = list(self._option_string_actions)
        for token in args:
            if token == "--":
                return
            if not token.startswith("--"):
                continue
            flag = token.split("=", 1)[0]
            if flag in known:
                continue
            longer = [k for k in known if k.startswith(f"{flag}-")]  # a prefix: the option it begins, else the nearest
            close = longer[:1] or difflib.get_close_matches(flag, [k for k in known if k.startswith("--")], n=1)
            self.error(f"unrecognised option {flag}" + (f": did you mean {close[0]}?" if close else ""))


def add_option(parser, flag: str, config, name: str, **kwargs) -> argparse.Action:
    """`flag`, filling field `name` of `config` (a dataclass or an instance), everything from the field
    (its home): its default (a tuple given as the list argparse collects), its help (config.option; `{default}`
    in it shown as the default), and what it takes from its annotation (`field_kwargs`: a flag for a bool,
    a checked number within its range, a choice among its names, several values for a tuple); `kwargs`
    adds what the field cannot say (metavar, nargs="*" where none is a value, choices and `help_values` from
    the registries above the configs, default=None where the library takes another's default). The option's dest is the
    field's name (from_args reads it); a positional is named as its field. The action records its home
    (`action.home`: "Config.field") and what the call said beyond the field (`action.overrides`)."""
    field, said = {f.name: f for f in dataclasses.fields(config)}[name], set(kwargs)
    default = getattr(config, name) if not isinstance(config, type) else field.default
    given = kwargs.pop("default", default)  # where the library's default is another's (the head's epochs)
    values = kwargs.pop("help_values", {})  # what the help names from above the configs (the catalog's backbones)
    told = kwargs.pop("help", None)  # a command's own words for the field (train-spots' --max-epochs: no heads)
    positional = not flag.startswith("-")  # its name is the field's (argparse's dest), required unless nargs="?"
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:  # a required option
        kwargs = kwargs if positional else {"required": True, **kwargs}
        default = given = None
    shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    kind = config if isinstance(config, type) else type(config)
    named = {} if positional else {"dest": name}
    if positional and flag != name:
        raise ValueError(f"positional {flag} fills {kind.__name__}.{name}: name it as the field")
    action = parser.add_argument(flag, **named, default=list(given) if isinstance(given, tuple) else given,
                                 help=told or field.metadata["help"].format(default=shown, **values),
                                 **{**field_kwargs(_hints(kind)[name]), **kwargs})
    action.home, action.help_values, action.overrides = f"{kind.__name__}.{name}", values, said
    return action


@functools.lru_cache(maxsize=None)
def _hints(kind: type) -> dict:
    """A config class's field annotations, evaluated once (the parser is built on every command)."""
    return typing.get_type_hints(kind, include_extras=True)


def field_kwargs(annotation) -> dict:
    """argparse's type, choices, action or nargs for a config field of `annotation` (arguments.py's types)."""
    base, limits = unwrapped(optional(annotation))
    if base is bool:
        return {"action": "store_true"}
    if typing.get_origin(base) in (tuple, list):
        element = (typing.get_args(base) or (str,))[0]
        return {"nargs": "+", **({"type": Path} if element is Path else {})}
    if base is Path:
        return {"type": Path}
    if isinstance(limits, OneOf):  # a choice among numbers is parsed as one (--bin-um 8)
        return {"choices": list(limits.choices), **({"type": ranged(base, None)} if base in (int, float) else {})}
    if base in (int, float):
        return {"type": ranged(base, limits)}
    return {}


def optional(annotation):
    """`X | None` -> X (an option left out is the field's None)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def ranged(kind: type, limits: Within | None):
    """An argparse type: a whole number (`kind` int) or a finite number (float) `limits` admits."""
    def parse(text: str):
        value = parsed(text, kind, "a whole number" if kind is int else "a number")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if limits is not None and not limits.admits(value):
            raise argparse.ArgumentTypeError(f"must be {limits}, got {text}")
        return value

    parse.__name__ = "whole number" if kind is int else "number"  # argparse's "invalid <name> value"
    return parse


def from_args(config, args, skip: tuple[str, ...] = (), **renamed):
    """`config` (a dataclass) with every field the command line gave: the options named as its fields
    (dest == field name), and `renamed` ({field: option dest}) where they differ; `skip`: fields an
    option of the same name means something else for. A list becomes the tuple the field holds. The one
    mapping from options to the library's configs."""
    values = {}
    for field in dataclasses.fields(config):
        dest = renamed.get(field.name, field.name)
        if field.name not in skip and hasattr(args, dest):
            value = getattr(args, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(config, **values)


def counted(n: int, noun: str) -> str:
    """"1 slide", "2 slides"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def shard_spec(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, got {text!r}")
    return index, count


def writable(path: Path, folder: bool) -> Path:
    """`path` if this process can create it (or write into it): refused at parse time, with the reason,
    when it is a file where a folder is wanted (or the reverse), lies under a file, or its nearest
    existing folder is read-only."""
    if path.exists() and path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{path} is a {'file' if folder else 'folder'}; give a "
                                         f"{'folder (new or existing)' if folder else 'file name'}")
    nearest = path if path.is_dir() else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {nearest} is a file, so nothing can be written under it")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {nearest} is not writable (a read-only folder or file system); "
                                         "give a place you can write to")
    return path


def parsed(text: str, cast, expected: str):
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def tile_px(text: str) -> int | str:
    """A tile size in pixels, 1 to MAX_TILE_PX, or 'trident' (the encoder's tile size in TRIDENT's README)."""
    if text == "trident":
        return text
    value = positive_int(text)
    if value > MAX_TILE_PX:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TILE_PX} (a tile is read whole into memory, a batch of "
                                         f"them at once), got {value}")
    return value


# The plain numbers the shared options take, as the config fields' (ranged): tile sizes, microns per pixel.
positive_int = ranged(int, Within(1))
positive_float = ranged(float, Within(0, low_open=True))


def out_folder(text: str) -> Path:
    return writable(Path(text), folder=True)


def out_file(text: str) -> Path:
    return writable(Path(text), folder=False)


def add_tile_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tiles (the paper: 224 px at 0.25 um/px, ~1000 per slide)")
    add_annotations(group, "folder of QuPath GeoJSON exports named <slide_id>.geojson (tumour regions; default: "
                           "none, the whole tissue is tiled)")
    add_option(group, "--tumour-classes", TILES, "tumour_classes", nargs="*", metavar="NAME")
    add_option(group, "--exclude-classes", TILES, "exclude_classes", nargs="*", metavar="NAME")
    add_mpp(group, "files that carry none (plain images, TMA cores); overrides the file's own")
    add_option(group, "--tile-px", TILES, "tile_size_px", type=tile_px, default=None, metavar="PX")  # the backbone's
    add_option(group, "--target-mpp", TILES, "target_mpp", default=None, metavar="UM_PER_PX")
    add_option(group, "--max-tiles", TILES, "max_tiles")
    add_option(group, "--min-region-fraction", TILES, "min_region_fraction")


def add_mpp(parser, which: str) -> argparse.Action:
    """`--mpp`: microns per pixel of `which` slide files (TileConfig.mpp_override)."""
    return _shared(parser, "--mpp", type=positive_float, help=f"microns per pixel for {which} (default: the file's own)")


def add_stain_options(parser: argparse.ArgumentParser) -> None:
    """`--stain` and `--stain-reference`: StainConfig's method and reference image."""
    add_option(parser, "--stain", StainConfig, "method")
    add_option(parser, "--stain-reference", StainConfig, "reference_image", type=Path, metavar="IMAGE")


# --- the options several commands share, each defined here once (its type, metavar and form); a command
# says what it is for it (`what`). Each action records its home (`action.home`). ---

def _shared(parser, flag: str, **kwargs) -> argparse.Action:
    action = parser.add_argument(flag, **kwargs)
    action.home = f"options.{flag}"
    return action


def add_out(parser, what: str, file: bool = False, required: bool = True, metavar: str | None = None) -> argparse.Action:
    """`--out`: the folder (DIR) or, `file`, the file (FILE, or `metavar`) a command writes, checked
    writable when parsed."""
    return _shared(parser, "--out", type=out_file if file else out_folder, required=required, help=what,
                   metavar=metavar or ("FILE" if file else "DIR"))


def add_features(parser, what: str, required: bool = True) -> argparse.Action:
    """`--features DIR`: a features folder (`hist2rna extract --out`'s backbone folder)."""
    return _shared(parser, "--features", type=Path, required=required, metavar="DIR", help=what)


def add_slides(parser, what: str, required: bool = True) -> argparse.Action:
    """`--slides PATH [PATH ...]`: slide files, folders of slides, or pre-tiled folders."""
    return _shared(parser, "--slides", nargs="+", type=Path, required=required, metavar="PATH", help=what)


def add_overwrite(parser, what: str) -> argparse.Action:
    """`--overwrite`: replace what a command wrote in --out before (`what`), never anything else."""
    return _shared(parser, "--overwrite", action="store_true", help=f"replace the {what} already in --out")


def add_no_progress(parser: argparse.ArgumentParser, what: str = "progress bars") -> argparse.Action:
    """`--no-progress`: no bars (a line per step off a terminal either way)."""
    return _shared(parser, "--no-progress", action="store_true", help=f"no {what}")


def add_run(parser: argparse.ArgumentParser,
            what: str = "a training run folder (hist2rna train or train-spots --out)") -> argparse.Action:
    """RUN: the run folder a command reads."""
    action = parser.add_argument("run", type=Path, metavar="RUN", help=what)
    action.home = "options.RUN"
    return action


def add_annotations(parser, what: str = "folder of QuPath GeoJSON exports named <slide_id>.geojson (tumour regions)"
                    ) -> argparse.Action:
    """`--annotations DIR`: QuPath's tumour annotations of the slides."""
    return _shared(parser, "--annotations", type=Path, metavar="DIR", help=what)


def hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """An earlier name of an option, still accepted, not shown in --help."""
    parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS, **kwargs)
