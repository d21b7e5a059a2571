"""What a head reads: one adapter per input kind (TensorFlow-free here; each kind's module loads it).

A head's registry entry (model/heads/__init__.py) names its kind; `input_kind(head, settings,
feature_dim)` gives the kind's adapter, bound to the head's settings and width. Everything that feeds a
head asks the adapter and never branches on the kind:

  examples     a cohort's patients as the head reads them, checked against the features folder
               (tile features present, enough tiles a slide); `subset` picks patients
  dataset      batched for training (tf.data; shuffled, seeded), `standardization` of the training ones
  predict      each patient's prediction with a Keras head; `predict_served` with an export's `serve`
  endpoint     the head export's serving signature; `serve_tiles` the end-to-end export's tail
  tile_values  a slide's tiles laid over it for `spatial` (each tile's value, and attention where there is)

The kinds: "mean" (mean.py: the patient's mean tile feature, the paper's), "bag" (bag.py: every tile),
"clusters" (clusters.py: each slide's K k-means cluster means, SEQUOIA's; kmeans.py makes and caches
them). Adding a kind is its module, one line in KINDS and its tests.
"""

from __future__ import annotations

import importlib

import numpy as np

from hist2rna_tf.errors import Hist2RNAError

KINDS = {"mean": "hist2rna_tf.model.inputs.mean", "bag": "hist2rna_tf.model.inputs.bag",
         "clusters": "hist2rna_tf.model.inputs.clusters"}


class InputKind:
    """The adapter of one input kind, bound to a head (`entry`: its registry entry, `settings`: its
    Settings) reading `feature_dim` features a tile. Subclasses give what differs; see the module."""

    tile_features = False  # whether it reads each tile's features (extract --save-tile-features)
    predict_batch = 8  # patients (or slides) a prediction batch holds
    # What its exports serve, in words: the head export's, the end-to-end export's.
    serves = ("", "")

    def __init__(self, entry, settings, feature_dim: int):
        self.entry, self.settings, self.feature_dim = entry, settings, int(feature_dim)
        self.head = entry.name

    def build(self, n_genes: int, standardization=None):
        """The head, untrained, for `n_genes` outputs (imports TensorFlow)."""
        return self.entry.load().build(self.feature_dim, n_genes, self.settings, standardization=standardization)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head={self.head!r}, feature_dim={self.feature_dim})"

    # --- reading ---
    def check(self, slides, source) -> None:
        """Nothing to check beyond the records' mean features (the kinds that read tiles check theirs):
        `slides` a FeatureFolder's table of the patients' slides, `source` the folder named in errors."""

    def examples(self, means, slides, source, progress: bool = False):
        """The patients of `means` (patients x F, the mean of their slides) as the head reads them, in
        order, after `check`."""
        raise NotImplementedError

    def from_means(self, features: np.ndarray, source):
        """Examples from patients' (or slides') mean features [N, F], where the head reads those."""
        raise Hist2RNAError(f"{source}: its {self.head} head reads every tile, not a mean feature; predict from "
                            "feature records (with tile features).")

    @staticmethod
    def subset(examples, keep: np.ndarray):
        """The examples where `keep` (bool [N]) holds."""
        return [example for example, kept in zip(examples, keep) if kept]

    # --- what needs the head's model ---
    def served(self, head):
        """What the exports hold and call: the head (a kind may add outputs, e.g. each tile's attention)."""
        return head

    def tile_values(self, model, tiles: np.ndarray, tile_xy_px: np.ndarray | None):
        """One slide's tiles [N, F] -> each tile's prediction [N, G] and each tile's attention [N] (None
        where the head has none)."""
        raise NotImplementedError

    def served_tile_values(self, serve, tiles: np.ndarray, source):
        """`tile_values` with a head export's `serve`, where the kind can."""
        raise Hist2RNAError(f"{source} is a head export; tile maps of its {self.head} head need the training run "
                            "folder.")


def kind_of(head) -> type[InputKind]:
    """The input kind (its adapter's class) of the head `head`: its name or registry entry."""
    from hist2rna_tf.model.heads import head_entry

    entry = head_entry(head) if isinstance(head, str) else head
    return importlib.import_module(KINDS[entry.inputs]).Kind


def input_kind(head, settings, feature_dim: int) -> InputKind:
    """The adapter of what the head `head` (its name or registry entry) reads, bound to its `settings` and
    `feature_dim`: the registry entry is looked up here once and carried (`.entry`)."""
    from hist2rna_tf.model.heads import head_entry

    entry = head_entry(head) if isinstance(head, str) else head
    return kind_of(entry)(entry, settings, feature_dim)
