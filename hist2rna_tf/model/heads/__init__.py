"""The heads a run can train: one module each, and this registry of them (TensorFlow-free, so the
command line offers `--head` without loading it).

Each head's module owns what makes it that head:

  Settings    a frozen dataclass with the defaults of the head's source (recorded in the run)
  build(feature_dim, n_genes, settings, standardization=None, name=...) -> keras.Model
              taking what its input kind gives it (model/inputs/: "mean" [B, 1, F]; "bag"
              {"tiles": [B, T, F], "mask": [B, T]}, with a layer named ATTENTION whose output is each
              tile's attention score [B, T, 1]; "clusters" [B, K, F])
  parameters(feature_dim, n_genes, settings) -> int
              its trainable parameters, counted without building it (refuse_oversized: a size the
              machine cannot train is refused before it is built)

Its registry entry names its input kind (model/inputs/ reads, batches and serves it) and the training
settings of its source that differ from the paper's. Adding a head is its module, one entry in HEADS
below and its tests. The heads import nothing of the package above them (a leaf of model/).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from dataclasses import dataclass

from hist2rna_tf.config import known_fields
from hist2rna_tf.errors import SettingsError

# The layer of a bag head whose output is each tile's (masked, pre-softmax) attention score [B, T, 1].
ATTENTION = "attention_scores"


@dataclass(frozen=True)
class HeadEntry:
    """What the registry knows of a head without loading TensorFlow."""

    name: str
    module: str
    inputs: str  # its input kind: a key of model/inputs' KINDS
    summary: str  # one line for --help and the README's table
    training: tuple = ()  # (TrainConfig field, value): its source's training where it differs from the paper's

    def load(self):
        """The head's module (imports TensorFlow)."""
        return importlib.import_module(self.module)


HEADS = {entry.name: entry for entry in (
    HeadEntry("hist2rna", "hist2rna_tf.model.heads.paper", "mean",
              "the paper's Conv1D head on the patient's mean tile feature (Mondol et al. 2023)"),
    HeadEntry("abmil", "hist2rna_tf.model.heads.abmil", "bag",
              "gated attention over every tile (Ilse et al. 2018), MIL-Lab's ABMIL; FEATHER-24K's weights with "
              "--head-init"),
    HeadEntry("sequoia", "hist2rna_tf.model.heads.sequoia", "clusters",
              "SEQUOIA's linearised transformer (ViS, Pizurica et al. 2024) on each slide's k-means cluster means; "
              "its published folds with `hist2rna import-run --from sequoia`",
              training=(("batch_size", 16), ("max_epochs", 200), ("patience", 20))),
)}
DEFAULT_HEAD = "hist2rna"


def head_entry(name: str) -> HeadEntry:
    """The registry's entry for `name`, or a SettingsError listing the heads there are."""
    if name not in HEADS:
        raise SettingsError(f"--head {name!r}: no such head; the heads are {', '.join(HEADS)}.")
    return HEADS[name]


def head_settings(name: str, saved: dict | None = None):
    """The head's Settings: its source's defaults, with what `saved` (a run's record) says."""
    kind = head_entry(name).load().Settings
    return kind(**known_fields(kind, saved or {}))


def settings_from_options(name: str, options=()):
    """The head's Settings for `--head NAME --head-option KEY=VALUE ...`: its source's defaults, each KEY (a
    field of its Settings) set to VALUE read as that field's type (a tuple: values separated by commas); a
    SettingsError naming an unknown key, a value of another type or one out of range."""
    kind = head_entry(name).load().Settings
    types = typing.get_type_hints(kind)
    known = _defaults(kind)
    values: dict = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise SettingsError(f"--head-option {option!r}: give NAME=VALUE, NAME one of the {name} head's settings "
                                f"(defaults: {known}).")
        if key not in types:
            raise SettingsError(f"--head-option {option!r}: the {name} head has no setting {key!r}{_elsewhere(key)}; "
                                f"the {name} head's settings (defaults): {known}.")
        if key in values:
            raise SettingsError(f"--head-option: {key} given twice; give it once.")
        values[key] = _typed(text.strip(), types[key], option)
    try:
        return kind(**values)
    except ValueError as exc:
        raise SettingsError(f"--head-option: the {name} head's {exc} (defaults: {known}).") from None


# Bytes a parameter takes to train: float32 weight, gradient and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def machine_memory() -> int:
    """This machine's memory in bytes (RAM)."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def refuse_oversized(name: str, settings, feature_dim: int, n_genes: int, memory: int | None = None) -> int:
    """The head's parameter count on `feature_dim` features and `n_genes` genes, counted before it is built;
    a SettingsError when training it would need more than the machine's `memory` (default: its RAM), with
    the estimate (parameters x 16 bytes: weights, gradients and Adam's two moments, in float32)."""
    count = head_entry(name).load().parameters(int(feature_dim), int(n_genes), settings)
    memory = machine_memory() if memory is None else memory
    needed = count * TRAINING_BYTES_PER_PARAMETER
    if needed > memory:
        given = ", ".join(f"{f.name}={_shown(getattr(settings, f.name))}" for f in dataclasses.fields(settings))
        raise SettingsError(f"--head {name} with {given}: {count:,} parameters on {feature_dim} features and "
                            f"{n_genes} genes, ~{_gigabytes(needed)} to train (parameters x "
                            f"{TRAINING_BYTES_PER_PARAMETER} bytes: float32 weights, gradients and Adam's two moments), "
                            "more than this machine's "
                            f"{_gigabytes(memory)} of memory; give smaller --head-option values (defaults: "
                            f"{_defaults(type(settings))}).")
    return count


def _gigabytes(n: float) -> str:
    """Bytes in GiB (TiB from 1024 GiB)."""
    return f"{n / 2 ** 30:.1f} GiB" if n < 2 ** 40 else f"{n / 2 ** 40:,.0f} TiB"


def _defaults(kind) -> str:
    return ", ".join(f"{f.name}={_shown(f.default)}" for f in dataclasses.fields(kind))


def _elsewhere(key: str) -> str:
    """Where a setting a head lacks may belong: the nearest name of its, another head's setting."""
    import difflib

    owners = [n for n, entry in HEADS.items() if key in {f.name for f in dataclasses.fields(entry.load().Settings)}]
    if owners:
        return f" (it is a setting of --head {' and --head '.join(owners)})"
    names = sorted({f.name for entry in HEADS.values() for f in dataclasses.fields(entry.load().Settings)})
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def require_positive(settings, *names: str) -> None:
    """A ValueError naming the first of `names` (fields of a head's Settings: sizes, counts) below 1."""
    for field_name in names:
        value = getattr(settings, field_name)
        values = value if isinstance(value, tuple) else (value,)
        if not values or any(v < 1 for v in values):
            raise ValueError(f"{field_name} must be at least 1, not {_shown(value)}")


def _typed(text: str, kind, option: str):
    """`text` read as a Settings field of type `kind` (int, float, bool, str or a tuple of one of them)."""
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        return tuple(_typed(part.strip(), element, option) for part in text.split(",") if part.strip())
    try:
        if kind is bool:
            flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return flags[text.lower()]
        if kind is int:
            return int(text)
        if kind is float and math.isfinite(float(text)):
            return float(text)
        if kind is str:
            return text
    except (KeyError, ValueError):
        pass
    raise SettingsError(f"--head-option {option!r}: {text!r} is not {_TYPE_NAMES.get(kind, kind)}.")


_TYPE_NAMES = {int: "a whole number", float: "a finite number", bool: "true or false"}


def _shown(value) -> str:
    """A setting as --head-option takes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def with_head_training(config):
    """`config` (a TrainConfig) with its head's source's training settings (SEQUOIA's batch 16, at most
    200 epochs, patience 20) in place of the paper's; what `hist2rna train --head` uses unless told."""
    return dataclasses.replace(config, **dict(head_entry(config.head).training))


def settings_dict(settings) -> dict:
    """A head's Settings as plain JSON-ready data (for the run's record)."""
    return dataclasses.asdict(settings)
