"""Bags of tile features for the heads that read every tile (heads.BAG), streamed with tf.data from the
feature records of `hist2rna extract --save-tile-features` (records stay the one feature store); and
the slides' cluster means for SEQUOIA's head (heads.CLUSTERS: one [K, F] array a slide, cached .npy
files of heads/clusters.py), a patient's prediction the mean of its slides' (SEQUOIA trains and
predicts per slide).

A patient's bag is the tiles of all its slides, in record order. Bags are padded to the longest in
their batch, with a mask (1: a tile, 0: padding) that the heads honour: padding never changes a
prediction. Only a batch of bags is in memory at a time (a 4,000-tile slide of 1,536 features is 25 MB);
never a cohort's tiles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.errors import RecordError
from hist2rna_tf.model.heads.clusters import cluster_files

# The most slides one patient's bag gathers (its records are read in one batch).
MAX_SLIDES_PER_PATIENT = 4096
_BAG_SPEC = {"tile_features": tf.io.VarLenFeature(tf.float32)}


def require_tile_features(slides: pd.DataFrame, source, head: str) -> None:
    """A RecordError when any slide's record lacks its tiles' features (a bag head reads every tile);
    `slides`: a FeatureFolder's (extract.records)."""
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


def bag_tiles(groups: list[list[str]], feature_dim: int):
    """Each bag's tiles [n, F] (numpy), one bag at a time, streamed."""
    for bag in bag_dataset(groups, feature_dim, 1):
        yield bag["tiles"].numpy()[0]


def predict_bags(model, groups: list[list[str]], feature_dim: int, batch_size: int = 8) -> np.ndarray:
    """The head's predictions [N, G] for each bag of `groups`, in order."""
    rows = [np.asarray(model(batch, training=False)) for batch in bag_dataset(groups, feature_dim, batch_size)]
    return np.concatenate(rows) if rows else np.zeros((0, int(model.output_shape[-1])), np.float32)


def with_attention(model):
    """A bag head as a model of two outputs, its genes and each tile's attention (its ATTENTION layer)."""
    import keras

    from hist2rna_tf.model.heads import ATTENTION

    return keras.Model(model.inputs, [model.output, model.get_layer(ATTENTION).output])


def attention_of(model, files: list[str], feature_dim: int) -> np.ndarray:
    """Each tile's attention weight [T] in one bag (the records `files`, in order)."""
    batch = next(iter(bag_dataset([list(files)], feature_dim, 1)))
    return np.asarray(with_attention(model)(batch, training=False)[1])[0]


def cluster_dataset(groups: list[list[str]], feature_dim: int, k: int, batch_size: int,
                    targets: np.ndarray | None = None, seed: int | None = None) -> tf.data.Dataset:
    """Batches of slides' cluster means [B, K, F] (with `targets` also [B, G]: each slide its patient's
    row), the slides of `groups` (each patient's cluster files) in order, shuffled each epoch with `seed`."""
    files = [f for group in groups for f in group]
    data = tf.data.Dataset.from_tensor_slices(files)
    if targets is not None:
        rows = np.repeat(np.asarray(targets, np.float32), [len(g) for g in groups], axis=0)
        data = tf.data.Dataset.zip((data, tf.data.Dataset.from_tensor_slices(rows)))
    if seed is not None:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def load(path):
        means = tf.numpy_function(lambda p: np.load(p.decode()).astype(np.float32), [path], tf.float32)
        return tf.ensure_shape(means, [k, feature_dim])

    data = data.map((lambda f: load(f)) if targets is None else (lambda f, y: (load(f), y)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    n_batches = -(-len(files) // batch_size)
    return data.batch(batch_size).apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


def cluster_arrays(groups: list[list[str]]):
    """Each slide's cluster means [K, F] (numpy), one at a time."""
    for group in groups:
        for path in group:
            yield np.load(path)


def predict_clusters(model, groups: list[list[str]], feature_dim: int, k: int, batch_size: int = 16) -> np.ndarray:
    """Each patient's prediction [N, G]: the mean of its slides' (`groups`: each patient's cluster files)."""
    rows = [np.asarray(model(batch, training=False)) for batch in cluster_dataset(groups, feature_dim, k, batch_size)]
    slides = np.concatenate(rows) if rows else np.zeros((0, int(model.output_shape[-1])), np.float32)
    ends = np.cumsum([len(g) for g in groups])
    return np.stack([slides[end - len(g):end].mean(axis=0) for g, end in zip(groups, ends)]) if len(groups) else slides


def cluster_groups(groups: list[list[str]], k: int, progress: bool = False) -> list[list[str]]:
    """Each patient's record files -> its slides' cluster-means files (computed once, cached)."""
    files = iter(cluster_files([f for g in groups for f in g], k, progress))
    return [[next(files) for _ in g] for g in groups]
