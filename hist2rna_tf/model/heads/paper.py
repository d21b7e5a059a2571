"""The paper's regression head (section 2.4, Figure 2), as a Keras functional model: the default head.

input (1, F) -> Conv1D(256, 5, same, ReLU) -> Conv1D(512, 1, ReLU) -> Conv1D(512, 1, ReLU)
            -> GlobalAveragePooling1D -> Dense(n_genes, linear)

The input is one patient's mean tile feature as a length-1 sequence of F channels. On a length-1
sequence a kernel-5 'same' convolution sees zero padding on both sides, so only the kernel's centre
tap ever acts (the other four taps multiply zeros: they get zero gradient and keep their initial
values): faithful to the authors' code, and the parameter count matches their PyTorch head
(F=1280, 138 genes: 2,103,690).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from hist2rna_tf.arguments import check_fields
from hist2rna_tf.model.heads import require_positive
from hist2rna_tf.model.heads.base import Standardization, check_sizes


@dataclass(frozen=True)
class Settings:
    """The paper's layers (fixed by the paper; recorded so that a run says what it trained)."""

    filters: tuple[int, ...] = (256, 512, 512)
    kernel_size: int = 5

    def __post_init__(self):
        check_fields(self)  # its types (arguments.py)
        require_positive(self, "filters", "kernel_size")


def parameters(feature_dim: int, n_genes: int, settings: Settings = Settings()) -> int:
    """The head's trainable parameters, counted without building it (heads.refuse_oversized)."""
    first, *rest = settings.filters
    count, width = feature_dim * settings.kernel_size * first + first, first
    for filters in rest:
        count, width = count + width * filters + filters, filters
    return count + width * n_genes + n_genes


def build(feature_dim: int, n_genes: int, settings: Settings = Settings(),
          standardization: Standardization | None = None, name: str = "hist2rna_head") -> keras.Model:
    """The hist2RNA head for `feature_dim` input features and `n_genes` outputs."""
    check_sizes(feature_dim, n_genes, standardization)
    first, *rest = settings.filters

    # --- layers ---
    inputs = keras.Input(shape=(1, int(feature_dim)), name="slide_features")
    x = standardization.features(inputs) if standardization is not None else inputs
    x = layers.Conv1D(first, settings.kernel_size, padding="same", activation="relu", name="c1")(x)
    for i, filters in enumerate(rest, start=2):
        x = layers.Conv1D(filters, 1, activation="relu", name=f"c{i}")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(int(n_genes), activation="linear", name="genes")(x)
    if standardization is not None:
        outputs = standardization.genes(outputs)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)
