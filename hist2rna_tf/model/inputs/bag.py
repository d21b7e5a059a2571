"""Every tile (ABMIL's input): a patient's bag is the tiles of all its slides, in record order, streamed
with tf.data from the feature records of `hist2rna extract --save-tile-features` (records stay the one
feature store).

Bags are padded to the longest in their batch, with a mask (1: a tile, 0: padding) that the heads honour:
padding never changes a prediction. Only a batch of bags is in memory at a time (a 4,000-tile slide of
1,536 features is 25 MB); never a cohort's tiles. The heads of this kind have a layer named
heads.ATTENTION (each tile's score); a tile is mapped as a bag of that one tile, with its attention in the
slide's bag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.errors import RecordError
from hist2rna_tf.model.heads import ATTENTION
from hist2rna_tf.model.heads.base import Standardization
from hist2rna_tf.model.inputs import InputKind

# The most slides one patient's bag gathers (its records are read in one batch).
MAX_SLIDES_PER_PATIENT = 4096
_BAG_SPEC = {"tile_features": tf.io.VarLenFeature(tf.float32)}


def require_tile_features(slides: pd.DataFrame, source, head: str) -> None:
    """A RecordError when any slide's record lacks its tiles' features; `slides`: a FeatureFolder's
    (extract.records)."""
    missing = slides.index[~slides["has_tile_features"].astype(bool)]
    if len(missing):
        raise RecordError(f"{source}: {len(missing)} of {len(slides)} slides (e.g. {missing[0]}) have no per-tile "
                          f"features, which --head {head} reads (every tile); extract them again with "
                          "--save-tile-features (or train the default head, which reads the slide mean).")


def patient_groups(slides: pd.DataFrame, patients) -> list[list[str]]:
    """Each patient's record files, in `patients` order (a patient's bag: all its slides)."""
    by_patient = slides.groupby("patient_id")["path"].apply(list)
    return [sorted(by_patient[p]) for p in patients]


def _read_bag(files: tf.Tensor, feature_dim: int) -> dict[str, tf.Tensor]:
    serialized = tf.data.TFRecordDataset(files).batch(MAX_SLIDES_PER_PATIENT).get_single_element()
    values = tf.io.parse_example(serialized, _BAG_SPEC)["tile_features"].values  # the slides' tiles, in order
    tiles = tf.reshape(values, [-1, feature_dim])
    return {"tiles": tiles, "mask": tf.ones(tf.shape(tiles)[:1], tf.float32)}


def bag_dataset(groups: list[list[str]], feature_dim: int, batch_size: int, targets: np.ndarray | None = None,
                seed: int | None = None) -> tf.data.Dataset:
    """Batches of bags ({"tiles": [B, T, F], "mask": [B, T]}, with `targets` also [B, G]), patients in
    `groups` order (shuffled each epoch when `seed` is given), each batch padded to its longest bag."""
    files = tf.ragged.constant(groups, dtype=tf.string)
    data = (tf.data.Dataset.from_tensor_slices(files) if targets is None else
            tf.data.Dataset.from_tensor_slices((files, np.asarray(targets, np.float32))))
    if seed is not None:
        data = data.shuffle(len(groups), seed=seed, reshuffle_each_iteration=True)
    if targets is None:
        data = data.map(lambda f: _read_bag(f, feature_dim), num_parallel_calls=tf.data.AUTOTUNE)
        shapes = {"tiles": [None, feature_dim], "mask": [None]}
    else:
        data = data.map(lambda f, y: (_read_bag(f, feature_dim), y), num_parallel_calls=tf.data.AUTOTUNE)
        shapes = ({"tiles": [None, feature_dim], "mask": [None]}, [targets.shape[1]])
    n_batches = -(-len(groups) // batch_size)
    return (data.padded_batch(batch_size, padded_shapes=shapes)
            .apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2))


def with_attention(model):
    """A bag head as a model of two outputs, its genes and each tile's attention (its ATTENTION layer)."""
    import keras

    return keras.Model(model.inputs, [model.output, model.get_layer(ATTENTION).output])


def attention_of(model, files: list[str], feature_dim: int) -> np.ndarray:
    """Each tile's attention weight [T] in one bag (the records `files`, in order)."""
    batch = next(iter(bag_dataset([list(files)], feature_dim, 1)))
    return np.asarray(with_attention(model)(batch, training=False)[1])[0]


class Kind(InputKind):
    """Every tile of the patient's slides, one bag a patient."""

    tile_features = True
    serves = ("one bag's tile features [N, F] -> genes [G] and each tile's attention [N]",
              "tiles of one slide -> genes [G] and each tile's attention [N]")

    def check(self, slides: pd.DataFrame, source) -> None:
        require_tile_features(slides, source, self.head)

    def examples(self, means, slides, source, progress: bool = False) -> list[list[str]]:
        """Each patient's record files (its bag)."""
        slides = slides[slides["patient_id"].isin(set(means.index))]
        self.check(slides, source)
        return patient_groups(slides, means.index)

    def dataset(self, examples, targets, batch_size: int, seed: int | None = None) -> tf.data.Dataset:
        return bag_dataset(examples, self.feature_dim, batch_size, targets, seed)

    def standardization(self, examples, targets) -> Standardization:
        """Of the training patients' tiles (streamed, a bag at a time) and their targets."""
        tiles = (bag["tiles"].numpy()[0] for bag in bag_dataset(examples, self.feature_dim, 1))
        return Standardization.of_tiles(tiles, targets)

    def predict(self, model, examples) -> np.ndarray:
        rows = [np.asarray(model(batch, training=False))
                for batch in bag_dataset(examples, self.feature_dim, self.predict_batch)]
        return np.concatenate(rows) if rows else np.zeros((0, int(model.output_shape[-1])), np.float32)

    def predict_served(self, serve, examples) -> np.ndarray:
        """A head export serves one bag a call."""
        from hist2rna_tf.extract.records import read_record

        return np.stack([serve(np.concatenate([read_record(f).tile_features for f in files]).astype(np.float32))
                         for files in examples])

    def served(self, head):
        """What the exports hold and call: the head with each tile's attention as a second output."""
        return with_attention(head)

    def endpoint(self, served):
        """The head export's: one bag's features [N, F] -> {"log2_expression": [G], "attention": [N]}."""
        def serve(features):
            genes, attention = served({"tiles": features[None], "mask": tf.ones([1, tf.shape(features)[0]])},
                                      training=False)
            return {"log2_expression": genes[0], "attention": attention[0]}

        return serve, tf.TensorSpec([None, self.feature_dim], tf.float32)

    def serve_tiles(self, served, tiles) -> dict:
        """The end-to-end export's: every tile's features -> the head, with each tile's attention."""
        genes, attention = served({"tiles": tiles.features()[None], "mask": tf.ones([1, tiles.count])},
                                  training=False)
        return {"log2_expression": genes[0], "attention": attention[0], "n_tiles": tiles.count}

    def tile_values(self, model, tiles: np.ndarray, tile_xy_px: np.ndarray | None):
        """Each tile as a bag of that one tile, and its attention in the slide's bag."""
        tiles = np.asarray(tiles, np.float32)
        each = np.asarray(model({"tiles": tiles[:, None, :], "mask": np.ones((len(tiles), 1), np.float32)},
                                training=False))
        attention = with_attention(model)({"tiles": tiles[None], "mask": np.ones((1, len(tiles)), np.float32)},
                                          training=False)[1]
        return each, np.asarray(attention)[0]
