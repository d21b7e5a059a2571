"""SEQUOIA's linearised transformer, `ViS` (Pizurica et al., Nat Commun 2024; gevaertlab/sequoia-pub
`src/tformer_lin.py`, MIT), in Keras: K cluster means of a slide's tile features [K, F] -> a learnt 1-D
position embedding per cluster -> `depth` blocks of (multi-head SummaryMixing + residual, LayerNorm ->
Linear -> GELU -> Linear + residual) -> the mean over clusters -> LayerNorm -> Linear(genes).

SummaryMixing (one head): local = GELU(LN(f(x))), summary = GELU(LN(mean over clusters of s(x))) given
to every cluster, out = GELU(c([local, summary])); the heads' outputs concatenated and projected back to
F. Defaults are `src/main.py`'s for `--model_type vis`: depth 6, 16 heads, f = s = c = 64, 100 clusters.
LayerNorms take torch's epsilon (1e-5), GELUs the exact (erf) form, as torch's defaults.

Exact to `ViS.forward` on the same weights (tests/model/test_heads.py; fixtures by
tests/fixtures/make_head_fixtures.py); `load_sequoia` reads its state dict (a hub fold's
`model.safetensors`; `hist2rna import-run --from sequoia`). It reads each slide's cluster means
(model/inputs/clusters.py; kmeans.py makes them), trains per slide with SEQUOIA's settings (the
registry's entry) and predicts a patient as the mean of its slides.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from hist2rna_tf.errors import ModelError
from hist2rna_tf.arguments import check_fields
from hist2rna_tf.model.heads import require_positive
from hist2rna_tf.model.heads.base import Standardization, check_sizes

EPSILON = 1e-5  # torch.nn.LayerNorm's


@dataclass(frozen=True)
class Settings:
    """SEQUOIA's `src/main.py` defaults for ViS (and `kmean_features.py`'s 100 clusters)."""

    depth: int = 6
    heads: int = 16
    dim_f: int = 64
    dim_s: int = 64
    dim_c: int = 64
    clusters: int = 100

    def __post_init__(self):
        check_fields(self)  # its types (arguments.py)
        require_positive(self, "depth", "heads", "dim_f", "dim_s", "dim_c", "clusters")


def _layer_norm(x, gamma, beta):
    mean = ops.mean(x, axis=-1, keepdims=True)
    var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) / ops.sqrt(var + EPSILON) * gamma + beta


def _gelu(x):
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="hist2rna")
class ClusterPositions(layers.Layer):
    """x [B, K, F] + a learnt embedding per cluster position [K, F] (ViS.pos_emb1D)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer="random_normal", name="pos_emb1D")

    def call(self, x):
        return x + self.embedding


@keras.saving.register_keras_serializable(package="hist2rna")
class MultiHeadSummary(layers.Layer):
    """SEQUOIA's MultiHeadSummary: `heads` SummaryMixing heads at once (their weights stacked on a first
    axis), concatenated in head order and projected back to the input's width."""

    def __init__(self, heads: int, dim_f: int, dim_s: int, dim_c: int, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.dim_f, self.dim_s, self.dim_c = heads, dim_f, dim_s, dim_c

    def build(self, input_shape):
        width, h = int(input_shape[-1]), self.heads

        def weight(name, shape, init="glorot_uniform"):
            return self.add_weight(shape=shape, initializer=init, name=name)

        self.f_kernel, self.f_bias = weight("f_kernel", (h, width, self.dim_f)), weight("f_bias", (h, self.dim_f), "zeros")
        self.s_kernel, self.s_bias = weight("s_kernel", (h, width, self.dim_s)), weight("s_bias", (h, self.dim_s), "zeros")
        self.local_gamma, self.local_beta = weight("local_gamma", (h, self.dim_f), "ones"), weight(
            "local_beta", (h, self.dim_f), "zeros")
        self.summary_gamma, self.summary_beta = weight("summary_gamma", (h, self.dim_s), "ones"), weight(
            "summary_beta", (h, self.dim_s), "zeros")
        self.c_kernel = weight("c_kernel", (h, self.dim_f + self.dim_s, self.dim_c))
        self.c_bias = weight("c_bias", (h, self.dim_c), "zeros")
        self.projection_kernel = weight("projection_kernel", (h * self.dim_c, width))
        self.projection_bias = weight("projection_bias", (width,), "zeros")

    def call(self, x):
        local = ops.einsum("bkf,hfd->bhkd", x, self.f_kernel) + self.f_bias[:, None, :]
        local = _gelu(_layer_norm(local, self.local_gamma[:, None, :], self.local_beta[:, None, :]))
        summary = ops.einsum("bkf,hfd->bhkd", x, self.s_kernel) + self.s_bias[:, None, :]
        summary = _gelu(_layer_norm(ops.mean(summary, axis=2), self.summary_gamma, self.summary_beta))  # [B, H, S]
        summary = ops.broadcast_to(summary[:, :, None, :], ops.shape(local)[:3] + (self.dim_s,))
        mixed = ops.einsum("bhkd,hdc->bhkc", ops.concatenate([local, summary], axis=-1), self.c_kernel)
        mixed = _gelu(mixed + self.c_bias[:, None, :])  # [B, H, K, C]
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (ops.shape(x)[0], ops.shape(x)[1], -1))
        return ops.matmul(mixed, self.projection_kernel) + self.projection_bias

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "dim_f": self.dim_f, "dim_s": self.dim_s,
                "dim_c": self.dim_c}


@keras.saving.register_keras_serializable(package="hist2rna")
class ClusterMean(layers.Layer):
    """The mean over clusters: [B, K, F] -> [B, F]."""

    def call(self, x):
        return ops.mean(x, axis=1)


def parameters(feature_dim: int, n_genes: int, settings: Settings = Settings()) -> int:
    """The head's trainable parameters, counted without building it (heads.refuse_oversized)."""
    width, f, s, c = feature_dim, settings.dim_f, settings.dim_s, settings.dim_c
    mixing = settings.heads * (width * (f + s) + 3 * (f + s) + (f + s) * c + c + c * width) + width
    block = mixing + 2 * width + 2 * (width * width + width)
    return settings.clusters * width + settings.depth * block + 2 * width + width * n_genes + n_genes


def build(feature_dim: int, n_genes: int, settings: Settings = Settings(),
          standardization: Standardization | None = None, name: str = "sequoia_vis") -> keras.Model:
    """ViS for `settings.clusters` cluster means of `feature_dim` features and `n_genes` outputs."""
    check_sizes(feature_dim, n_genes, standardization)
    width = int(feature_dim)

    # --- layers ---
    inputs = keras.Input(shape=(settings.clusters, width), name="clusters")
    x = standardization.features(inputs) if standardization is not None else inputs
    x = ClusterPositions(name="positions")(x)
    for i in range(settings.depth):
        mixed = MultiHeadSummary(settings.heads, settings.dim_f, settings.dim_s, settings.dim_c, name=f"mixing_{i}")(x)
        x = layers.Add(name=f"mixing_{i}_residual")([x, mixed])
        y = layers.LayerNormalization(epsilon=EPSILON, name=f"ff_{i}_norm")(x)
        y = layers.Dense(width, activation="gelu", name=f"ff_{i}_in")(y)  # exact (erf), as torch's
        y = layers.Dense(width, name=f"ff_{i}_out")(y)
        x = layers.Add(name=f"ff_{i}_residual")([x, y])
    x = layers.LayerNormalization(epsilon=EPSILON, name="head_norm")(ClusterMean(name="cluster_mean")(x))
    outputs = layers.Dense(int(n_genes), name="genes")(x)
    if standardization is not None:
        outputs = standardization.genes(outputs)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)


def load_sequoia(model: keras.Model, tensors, source, settings: Settings = Settings()) -> None:
    """Set `model` (built with `settings`) from ViS's state dict (`tensors`: name -> array); a ModelError
    naming `source` and the first tensor missing or of another shape."""
    tensors = {name: np.asarray(tensors[name], np.float32) for name in tensors}

    def get(name, shape=None):
        if name not in tensors:
            raise ModelError(f"{source}: no tensor {name!r}; not a SEQUOIA ViS state dict of depth {settings.depth} and "
                             f"{settings.heads} heads (it holds e.g. {', '.join(sorted(tensors)[:3]) or 'nothing'}).")
        if shape is not None and tuple(tensors[name].shape) != tuple(shape):
            raise ModelError(f"{source}: {name} is {tuple(tensors[name].shape)}, the model's is {tuple(shape)} (another "
                             "feature size, gene count or setting than the file's).")
        return tensors[name]

    def linear(layer_name, prefix):
        kernel, bias = model.get_layer(layer_name).get_weights()
        model.get_layer(layer_name).set_weights([get(f"{prefix}.weight", kernel.shape[::-1]).T,
                                                 get(f"{prefix}.bias", bias.shape)])

    def norm(layer_name, prefix):
        gamma, beta = model.get_layer(layer_name).get_weights()
        model.get_layer(layer_name).set_weights([get(f"{prefix}.weight", gamma.shape), get(f"{prefix}.bias", beta.shape)])

    positions = model.get_layer("positions")
    positions.set_weights([get("pos_emb1D", positions.get_weights()[0].shape)])
    for i in range(settings.depth):
        base = f"transformer.layers.{i}"
        mixers = [f"{base}.0.mixers.{j}" for j in range(settings.heads)]
        stack = [np.stack([get(f"{m}.{part}") for m in mixers]) for part in (
            "f.weight", "f.bias", "s.weight", "s.bias", "local_norm.weight", "local_norm.bias", "summary_norm.weight",
            "summary_norm.bias", "c.weight", "c.bias")]
        f_w, f_b, s_w, s_b, lg, lb, sg, sb, c_w, c_b = stack
        layer = model.get_layer(f"mixing_{i}")
        values = [f_w.transpose(0, 2, 1), f_b, s_w.transpose(0, 2, 1), s_b, lg, lb, sg, sb, c_w.transpose(0, 2, 1), c_b,
                  get(f"{base}.0.projection.weight").T, get(f"{base}.0.projection.bias")]
        expected = [w.shape for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ModelError(f"{source}: block {i}'s SummaryMixing weights do not fit the model's (dimensions f, s, c "
                             f"or the feature size differ): {[v.shape for v in values][:2]} against {expected[:2]}.")
        layer.set_weights(values)
        norm(f"ff_{i}_norm", f"{base}.1.net.0")
        linear(f"ff_{i}_in", f"{base}.1.net.1")
        linear(f"ff_{i}_out", f"{base}.1.net.3")
    norm("head_norm", "linear_head.0")
    linear("genes", "linear_head.1")
