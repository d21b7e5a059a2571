"""The paper's regression head (section 2.4, Figure 2), as a Keras functional model.

input (1, F) -> Conv1D(256, 5, same, ReLU) -> Conv1D(512, 1, ReLU) -> Conv1D(512, 1, ReLU)
            -> GlobalAveragePooling1D -> Dense(n_genes, linear)

The input is one slide's mean tile feature as a length-1 sequence of F channels. On a length-1
sequence a kernel-5 'same' convolution sees zero padding on both sides, so only the kernel's centre
tap ever acts (the other four taps are trained to nothing): faithful to the authors' code, and the
parameter count matches their PyTorch head (F=1280, 138 genes: 2,103,690).
"""

from __future__ import annotations

import keras
from keras import layers


def build_head(feature_dim: int, n_genes: int, name: str = "hist2rna_head") -> keras.Model:
    """The hist2RNA head for `feature_dim` input features and `n_genes` outputs."""
    if int(feature_dim) < 1 or int(n_genes) < 1:
        raise ValueError(f"feature_dim and n_genes must be positive, got {feature_dim} and {n_genes}")

    # --- layers ---
    inputs = keras.Input(shape=(1, int(feature_dim)), name="slide_features")
    x = layers.Conv1D(256, 5, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv1D(512, 1, activation="relu", name="c2")(x)
    x = layers.Conv1D(512, 1, activation="relu", name="c3")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(int(n_genes), activation="linear", name="genes")(x)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)
