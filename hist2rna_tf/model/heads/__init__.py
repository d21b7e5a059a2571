"""The heads a run can train: one module each, and this registry of them (TensorFlow-free, so the
command line offers `--head` without loading it).

Each head's module owns what makes it that head:

  READS       "mean": the patient's mean tile feature, [1, F] (the paper's input);
              "bag": every tile's feature, [T, F], padded to the batch's longest bag with a mask
              (model/bags.py streams them from the records of `extract --save-tile-features`)
  Settings    a frozen dataclass with the defaults of the head's source (recorded in the run)
  build(feature_dim, n_genes, settings, standardization=None, name=...) -> keras.Model
              a "mean" head takes [B, 1, F]; a "bag" head takes {"tiles": [B, T, F], "mask": [B, T]}
              and has a layer named ATTENTION whose output is each tile's attention score [B, T, 1];
              "clusters": each slide's K cluster means [K, F] (heads/clusters.py; SEQUOIA's input), a
              patient's prediction the mean of its slides'
  TRAINING    (in the entry) the training settings of its source that differ from the paper's

Adding a head is its module, one entry in HEADS below and its tests.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from hist2rna_tf.config import known_fields
from hist2rna_tf.errors import SettingsError

MEAN, BAG, CLUSTERS = "mean", "bag", "clusters"
# What reads the records' per-tile features (extract --save-tile-features).
READS_TILES = (BAG, CLUSTERS)
# The layer of a bag head whose output is each tile's (masked, pre-softmax) attention score [B, T, 1].
ATTENTION = "attention_scores"


@dataclass(frozen=True)
class HeadEntry:
    """What the registry knows of a head without loading TensorFlow."""

    name: str
    module: str
    reads: str  # MEAN, BAG or CLUSTERS
    summary: str  # one line for --help and the README's table
    training: tuple = ()  # (TrainConfig field, value): its source's training where it differs from the paper's

    @property
    def reads_tiles(self) -> bool:
        """Whether it needs the records' per-tile features."""
        return self.reads in READS_TILES

    def load(self):
        """The head's module (imports TensorFlow)."""
        return importlib.import_module(self.module)


HEADS = {entry.name: entry for entry in (
    HeadEntry("hist2rna", "hist2rna_tf.model.heads.paper", MEAN,
              "the paper's Conv1D head on the patient's mean tile feature (Mondol et al. 2023)"),
    HeadEntry("abmil", "hist2rna_tf.model.heads.abmil", BAG,
              "gated attention over every tile (Ilse et al. 2018), MIL-Lab's ABMIL; FEATHER-24K's weights with "
              "--head-init"),
    HeadEntry("sequoia", "hist2rna_tf.model.heads.sequoia", CLUSTERS,
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


def with_head_training(config):
    """`config` (a TrainConfig) with its head's source's training settings (SEQUOIA's batch 16, at most
    200 epochs, patience 20) in place of the paper's; what `hist2rna train --head` uses unless told."""
    return dataclasses.replace(config, **dict(head_entry(config.head).training))


def settings_dict(settings) -> dict:
    """A head's Settings as plain JSON-ready data (for the run's record)."""
    return dataclasses.asdict(settings)
