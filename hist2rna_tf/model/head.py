"""The paper's regression head (section 2.4, Figure 2), as a Keras functional model.

input (1, F) -> Conv1D(256, 5, same, ReLU) -> Conv1D(512, 1, ReLU) -> Conv1D(512, 1, ReLU)
            -> GlobalAveragePooling1D -> Dense(n_genes, linear)

The input is one slide's mean tile feature as a length-1 sequence of F channels. On a length-1
sequence a kernel-5 'same' convolution sees zero padding on both sides, so only the kernel's centre
tap ever acts (the other four taps multiply zeros: they get zero gradient and keep their initial
values): faithful to the authors' code, and the parameter count matches their PyTorch head
(F=1280, 138 genes: 2,103,690).

Optional, NOT in the paper: `Standardization` wraps the head in two fixed (non-trainable) Keras
Normalization layers, features z-scored on the way in and genes un-z-scored on the way out, with
the training patients' means and variances. Inputs and outputs stay raw features and log2
expression, so saved models, exports and predictions need nothing extra. It matters when slide
features barely vary between slides (random-weight backbones, as in the offline demo): the paper's
head, fed raw, then cannot move off the cohort mean within early stopping's patience.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
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


def build_head(feature_dim: int, n_genes: int, name: str = "hist2rna_head",
               standardization: Standardization | None = None) -> keras.Model:
    """The hist2RNA head for `feature_dim` input features and `n_genes` outputs."""
    if int(feature_dim) < 1 or int(n_genes) < 1:
        raise ValueError(f"feature_dim and n_genes must be positive, got {feature_dim} and {n_genes}")
    if standardization is not None and (len(standardization.feature_mean) != int(feature_dim)
                                        or len(standardization.target_mean) != int(n_genes)):
        raise ValueError("standardization statistics do not match feature_dim and n_genes")

    # --- layers ---
    inputs = keras.Input(shape=(1, int(feature_dim)), name="slide_features")
    x = inputs
    if standardization is not None:
        x = layers.Normalization(axis=-1, mean=standardization.feature_mean, variance=standardization.feature_var,
                                 name="standardize_features")(x)
    x = layers.Conv1D(256, 5, padding="same", activation="relu", name="c1")(x)
    x = layers.Conv1D(512, 1, activation="relu", name="c2")(x)
    x = layers.Conv1D(512, 1, activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(int(n_genes), activation="linear", name="genes")(x)
    if standardization is not None:
        outputs = layers.Normalization(axis=-1, mean=standardization.target_mean, variance=standardization.target_var,
                                       invert=True, name="unstandardize_genes")(outputs)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)


def build_finetune_model(backbone, tile_size_px: int, n_genes: int, target_mean: np.ndarray | None = None,
                         target_var: np.ndarray | None = None, name: str = "patch_baseline_finetune") -> keras.Model:
    """The patch-based approach's model (the paper's comparison, section 3.2): float RGB tiles
    [B, T, T, 3] in [0, 255] -> the backbone's own preprocessing -> the backbone, TRAINABLE ->
    Dense(n_genes, linear). With `target_mean`/`target_var` (the training patients' log2 genes) the
    genes are learnt z-scored and un-z-scored on the way out, as `Standardization` does for the head.
    `backbone`: a backbones.Backbone (its model is set trainable here)."""
    if int(n_genes) < 1:
        raise ValueError(f"n_genes must be positive, got {n_genes}")
    size = int(tile_size_px)

    # --- layers ---
    backbone.model.trainable = True
    inputs = keras.Input((size, size, 3), dtype="float32", name="tiles")
    outputs = layers.Dense(int(n_genes), name="genes")(backbone.model(backbone.preprocess(inputs)))
    if target_mean is not None:
        outputs = layers.Normalization(axis=-1, mean=target_mean, variance=np.maximum(target_var, 1e-12), invert=True,
                                       name="unstandardize_genes")(outputs)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)
