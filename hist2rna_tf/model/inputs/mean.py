"""The paper's input (section 2.3): each patient's mean tile feature [F], given to the head as a length-1
sequence [1, F]. The records' mean features are all it needs; a tile is mapped as if it were a slide
mean (spatial)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.model.heads.base import Standardization
from hist2rna_tf.model.inputs import InputKind


class Kind(InputKind):
    """The patient's mean tile feature."""

    serves = ("N slides' or patients' mean features [N, F] -> genes [N, G]", "tiles of one slide -> genes [G]")

    def examples(self, means, slides, source, progress: bool = False) -> np.ndarray:
        """The patients' mean features [N, F] (float32)."""
        return self.from_means(means.to_numpy(), source)

    def from_means(self, features: np.ndarray, source) -> np.ndarray:
        """`features` [N, F] checked: as wide as the head reads, finite numbers."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise Hist2RNAError(f"{source}: features of shape {features.shape}, but the {self.head} head reads "
                                f"[N, {self.feature_dim}] (the backbone it was trained on); extract features with the "
                                "same backbone.")
        if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
            raise Hist2RNAError(f"{source}: features contain non-numeric, NaN or inf values.")
        return features.astype(np.float32)

    @staticmethod
    def subset(examples: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return examples[np.asarray(keep, bool)]

    def dataset(self, examples: np.ndarray, targets: np.ndarray, batch_size: int,
                seed: int | None = None) -> tf.data.Dataset:
        """Batches of ([B, 1, F], [B, G]), shuffled each epoch with `seed`."""
        data = tf.data.Dataset.from_tensor_slices((examples[:, None, :].astype(np.float32),
                                                   np.asarray(targets, np.float32)))
        if seed is not None:
            data = data.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
        return data.batch(batch_size)

    def standardization(self, examples: np.ndarray, targets: np.ndarray) -> Standardization:
        """Of the patients' mean features and targets."""
        return Standardization.of(examples, targets)

    def predict(self, model, examples: np.ndarray) -> np.ndarray:
        """[N, G], in one call."""
        return np.asarray(model(examples[:, None, :].astype(np.float32), training=False))

    def predict_served(self, serve, examples: np.ndarray) -> np.ndarray:
        return np.asarray(serve(examples.astype(np.float32)))

    def endpoint(self, served):
        """The head export's: features [N, F] -> {"log2_expression": [N, G]} (a row a slide or patient)."""
        def serve(features):
            return {"log2_expression": served(tf.expand_dims(features, 1), training=False)}

        return serve, tf.TensorSpec([None, self.feature_dim], tf.float32)

    def serve_tiles(self, served, tiles) -> dict:
        """The end-to-end export's: the mean of the slide's tiles' features (summed a batch at a time) ->
        the head."""
        mean = tiles.mean_feature()
        return {"log2_expression": served(tf.reshape(mean, [1, 1, -1]), training=False)[0], "n_tiles": tiles.count}

    def tile_values(self, model, tiles: np.ndarray, tile_xy_px: np.ndarray | None):
        """Each tile's feature as if it were a slide mean; no attention."""
        return self.predict(model, self.from_means(tiles, "the slide's tiles")), None

    def served_tile_values(self, serve, tiles: np.ndarray, source):
        return self.predict_served(serve, self.from_means(tiles, source)), None
