"""What every head shares: the optional standardisation of features and targets inside the model.

Optional, NOT in the paper: `Standardization` wraps a head in two fixed (non-trainable) Keras
Normalization layers, features z-scored on the way in and genes un-z-scored on the way out, with
the training patients' means and variances (a bag head: of their tiles). Inputs and outputs stay raw
features and log2 expression, so saved models, exports and predictions need nothing extra. It
matters when features barely vary between slides (random-weight backbones, as in the offline demo):
the paper's head, fed raw, then cannot move off the cohort mean within early stopping's patience.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import layers


@dataclass(frozen=True)
class Standardization:
    """Means and variances of the training features [F] and log2 targets [G]."""

    feature_mean: np.ndarray
    feature_var: np.ndarray
    target_mean: np.ndarray
    target_var: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, floor: float = 1e-12) -> "Standardization":
        """Statistics of features `x` [N, F] and targets `y` [N, G]; zero variances floored."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return cls(x.mean(0), np.maximum(x.var(0), floor), y.mean(0), np.maximum(y.var(0), floor))

    @classmethod
    def of_tiles(cls, tiles, y: np.ndarray, floor: float = 1e-12) -> "Standardization":
        """Statistics of tile features streamed in chunks (`tiles`: arrays [n, F], one pass, float64)
        and of targets `y` [N, G]: for heads that learn from tiles (bags, the patch baseline)."""
        total = squares = None
        count = 0
        for chunk in tiles:
            x = np.asarray(chunk, np.float64).reshape(len(chunk), -1)
            total = x.sum(0) if total is None else total + x.sum(0)
            squares = (x ** 2).sum(0) if squares is None else squares + (x ** 2).sum(0)
            count += len(x)
        mean = total / count
        y = np.asarray(y, np.float64)
        return cls(mean, np.maximum(squares / count - mean ** 2, floor), y.mean(0), np.maximum(y.var(0), floor))

    def check(self, feature_dim: int, n_genes: int) -> None:
        if len(self.feature_mean) != int(feature_dim) or len(self.target_mean) != int(n_genes):
            raise ValueError("standardization statistics do not match feature_dim and n_genes")

    def features(self, x):
        """The layer z-scoring features (any leading axes)."""
        return layers.Normalization(axis=-1, mean=self.feature_mean, variance=self.feature_var,
                                    name="standardize_features")(x)

    def genes(self, y):
        """The layer taking z-scored genes back to log2 expression."""
        return layers.Normalization(axis=-1, mean=self.target_mean, variance=self.target_var, invert=True,
                                    name="unstandardize_genes")(y)


def check_sizes(feature_dim: int, n_genes: int, standardization: Standardization | None) -> None:
    if int(feature_dim) < 1 or int(n_genes) < 1:
        raise ValueError(f"feature_dim and n_genes must be positive, got {feature_dim} and {n_genes}")
    if standardization is not None:
        standardization.check(feature_dim, n_genes)
