"""Each slide's K k-means cluster means [K, F] (SEQUOIA's input; made and cached by kmeans.py): the head
trains and predicts a slide at a time, each slide its patient's targets, and a patient's prediction is
the mean of its slides'. K is the head's `clusters` setting. A slide is mapped with SEQUOIA's sliding
windows of tiles (their `spatial_vis/visualize.py`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.errors import RecordError
from hist2rna_tf.model.heads.base import Standardization
from hist2rna_tf.model.inputs import InputKind
from hist2rna_tf.model.inputs.bag import patient_groups, require_tile_features
from hist2rna_tf.model.inputs.kmeans import cluster_files


def too_few_tiles(slides: pd.DataFrame, k: int, source) -> None:
    """A RecordError naming the slides (a FeatureFolder's `slides`) with fewer tiles than `k` clusters."""
    few = slides[slides["n_tiles"] < k]
    if len(few):
        raise RecordError(f"{source}: {len(few)} of {len(slides)} slides have fewer tiles than the {k} clusters SEQUOIA's "
                          f"head reads (e.g. {few.index[0]}: {int(few['n_tiles'].iloc[0])} tiles); give --head-option "
                          f"clusters={int(slides['n_tiles'].min())} or fewer, or give a features folder without those slides "
                          "(SEQUOIA's code skips them; here none is dropped unsaid).")


def cluster_groups(groups: list[list[str]], k: int, progress: bool = False) -> list[list[str]]:
    """Each patient's record files -> its slides' cluster-means files (computed once, cached)."""
    files = iter(cluster_files([f for g in groups for f in g], k, progress))
    return [[next(files) for _ in g] for g in groups]


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


def tile_grid(tile_xy_px: np.ndarray) -> np.ndarray:
    """Tiles' level-0 top-left corners [N, 2] -> their column and row on the slide's tile grid (0-based;
    the step is the smallest spacing between tiles)."""
    xy = np.asarray(tile_xy_px, np.int64)
    grid = np.zeros_like(xy)
    for axis in (0, 1):
        values = np.unique(xy[:, axis])
        step = np.diff(values).min() if len(values) > 1 else 1
        grid[:, axis] = np.rint((xy[:, axis] - values[0]) / step).astype(np.int64)
    return grid


def window_predictions(model, tiles: np.ndarray, grid: np.ndarray, k: int, stride: int = 1,
                       batch_size: int = 32) -> np.ndarray:
    """SEQUOIA's spatial method (their `spatial_vis/visualize.py`, `sliding_window_method`): windows of
    side x side tiles (side = sqrt(K): 10 for 100 clusters) slid over the tile grid by `stride`; a window
    holding more than half its places is given to the head as its tiles' features (in tile order,
    zero-padded to K) in place of cluster means, and its prediction goes to each of its tiles; a tile's
    value is the mean over its windows (`k`: the head's clusters). [N, G]; NaN for a tile in no such window."""
    side = int(np.sqrt(k))
    tiles, grid = np.asarray(tiles, np.float32), np.asarray(grid, np.int64)
    members = [np.flatnonzero((grid[:, 0] >= x) & (grid[:, 0] < x + side) & (grid[:, 1] >= y) & (grid[:, 1] < y + side))
               for x in range(0, max(int(grid[:, 0].max()), 1), stride)
               for y in range(0, max(int(grid[:, 1].max()), 1), stride)]
    members = [m for m in members if len(m) > side * side / 2]
    total = np.zeros((len(tiles), int(model.output_shape[-1])), np.float64)
    count = np.zeros(len(tiles))
    for start in range(0, len(members), batch_size):
        chunk = members[start:start + batch_size]
        batch = np.zeros((len(chunk), k, tiles.shape[1]), np.float32)
        for i, m in enumerate(chunk):
            batch[i, :len(m)] = tiles[m]
        predicted = np.asarray(model(batch, training=False))
        for i, m in enumerate(chunk):
            total[m] += predicted[i]
            count[m] += 1
    with np.errstate(invalid="ignore"):
        return (total / count[:, None]).astype(np.float32)


class Kind(InputKind):
    """Each slide's K cluster means; a patient the mean of its slides' predictions."""

    tile_features = True
    predict_batch = 16
    serves = ("one slide's K cluster means [K, F] -> genes [G]",
              "tiles of one slide -> their features [N, F] (k-means them as the run does, then the head export)")

    @property
    def k(self) -> int:
        """The clusters a slide gives the head (its `clusters` setting)."""
        return int(self.settings.clusters)

    def check(self, slides: pd.DataFrame, source) -> None:
        require_tile_features(slides, source, self.head)
        too_few_tiles(slides, self.k, source)

    def examples(self, means, slides, source, progress: bool = False) -> list[list[str]]:
        """Each patient's slides' cluster-means files (computed once, cached)."""
        slides = slides[slides["patient_id"].isin(set(means.index))]
        self.check(slides, source)
        return cluster_groups(patient_groups(slides, means.index), self.k, progress)

    def dataset(self, examples, targets, batch_size: int, seed: int | None = None) -> tf.data.Dataset:
        """A slide a sample."""
        return cluster_dataset(examples, self.feature_dim, self.k, batch_size, targets, seed)

    def standardization(self, examples, targets) -> Standardization:
        """Of the training slides' cluster means and their patients' targets."""
        return Standardization.of_tiles((np.load(path) for group in examples for path in group), targets)

    def predict(self, model, examples) -> np.ndarray:
        """Each patient's prediction [N, G]: the mean of its slides'."""
        rows = [np.asarray(model(batch, training=False))
                for batch in cluster_dataset(examples, self.feature_dim, self.k, self.predict_batch)]
        slides = np.concatenate(rows) if rows else np.zeros((0, int(model.output_shape[-1])), np.float32)
        ends = np.cumsum([len(g) for g in examples])
        return (np.stack([slides[end - len(g):end].mean(axis=0) for g, end in zip(examples, ends)]) if len(examples)
                else slides)

    def predict_served(self, serve, examples) -> np.ndarray:
        """A head export serves one slide's cluster means a call."""
        return np.stack([np.mean([serve(np.load(f)) for f in files], axis=0) for files in examples])

    def endpoint(self, served):
        """The head export's: one slide's cluster means [K, F] -> {"log2_expression": [G]}."""
        def serve(features):
            return {"log2_expression": served(features[None], training=False)[0]}

        return serve, tf.TensorSpec([self.k, self.feature_dim], tf.float32)

    def serve_tiles(self, served, tiles) -> dict:
        """The end-to-end export's: the tiles' features [N, F], to cluster as kmeans.py does (scikit-learn's
        k-means, which a SavedModel cannot hold) and give to the head export."""
        return {"tile_features": tiles.features(), "n_tiles": tiles.count}

    def tile_values(self, model, tiles: np.ndarray, tile_xy_px: np.ndarray | None):
        """SEQUOIA's sliding windows; no attention."""
        return window_predictions(model, tiles, tile_grid(tile_xy_px), self.k), None
