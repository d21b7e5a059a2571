"""ABMIL: gated attention over every tile (Ilse et al. 2018), as MIL-Lab writes it
(mahmoodlab/MIL-Lab `src/models/abmil.py`, `model_configs/abmil/base.yaml`), with a linear gene layer
where MIL-Lab has its classifier:

  tiles [B, T, F] -> patch_embed: Dense(embed, ReLU)                                  h [B, T, E]
  h -> attention_a: Dense(attn, tanh), Dropout  ·  attention_b: Dense(attn, sigmoid), Dropout
    -> attention_c: Dense(1)                                                          scores [B, T]
  softmax of the scores over each bag's own tiles (padding masked: weight exactly 0)  a [B, T]
  sum_t a_t h_t -> genes: Dense(n_genes, linear)                                      [B, G]

Exact to MIL-Lab's forward on the same weights (tests/model/test_heads.py, fixtures made by
tests/fixtures/make_head_fixtures.py). `load_mil_lab` reads MIL-Lab's tensors into the model:
FEATHER-24K's files (`mahmoodlab/abmil.base.<encoder>.pc108-24k`, model.safetensors) start a run with
`--head-init` (its classifier left out: the gene layer is new).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from hist2rna_tf.errors import ModelError
from hist2rna_tf.arguments import check_fields
from hist2rna_tf.model.heads import ATTENTION, require_positive
from hist2rna_tf.model.heads.base import Standardization, check_sizes


@dataclass(frozen=True)
class Settings:
    """MIL-Lab's ABMIL base config (model_configs/abmil/base.yaml): gated, embed 512, attention 384,
    dropout 0.25, one FC layer in the patch embedding."""

    embed_dim: int = 512
    attn_dim: int = 384
    dropout: float = 0.25
    gate: bool = True

    def __post_init__(self):
        check_fields(self)  # its types (arguments.py)
        require_positive(self, "embed_dim", "attn_dim")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")


@keras.saving.register_keras_serializable(package="hist2rna")
class MaskedTiles(layers.Layer):
    """The bag's tiles with padding set to zero, whatever the padding held (so that no value of it can
    reach a prediction, not even an inf through the embedding)."""

    def call(self, tiles, mask):
        return ops.where(ops.expand_dims(mask, -1) > 0, tiles, ops.zeros_like(tiles))


@keras.saving.register_keras_serializable(package="hist2rna")
class AttentionWeights(layers.Layer):
    """Scores [B, T, 1] and mask [B, T] -> softmax over each bag's tiles [B, T], padding weighted 0 (as
    MIL-Lab: the score plus the dtype's lowest value where masked)."""

    def call(self, scores, mask):
        scores = ops.squeeze(scores, -1)
        lowest = np.finfo(np.float32).min
        scores = ops.where(mask > 0, scores, ops.full_like(scores, lowest))
        # softmax written out: Keras warns of a softmax over one element (a bag of one tile: weight 1, rightly)
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
        return weights / ops.sum(weights, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="hist2rna")
class WeightedSum(layers.Layer):
    """sum_t a[b, t] h[b, t, :] (MIL-Lab's torch.bmm(A, h))."""

    def call(self, weights, h):
        return ops.einsum("bt,bte->be", weights, h)


def parameters(feature_dim: int, n_genes: int, settings: Settings = Settings()) -> int:
    """The head's trainable parameters, counted without building it (heads.refuse_oversized)."""
    e, a = settings.embed_dim, settings.attn_dim
    return feature_dim * e + e + (1 + settings.gate) * (e * a + a) + a + 1 + e * n_genes + n_genes


def build(feature_dim: int, n_genes: int, settings: Settings = Settings(),
          standardization: Standardization | None = None, name: str = "abmil_head") -> keras.Model:
    """ABMIL for bags of `feature_dim` tile features and `n_genes` outputs."""
    check_sizes(feature_dim, n_genes, standardization)

    # --- layers ---
    tiles = keras.Input(shape=(None, int(feature_dim)), name="tiles")
    mask = keras.Input(shape=(None,), name="mask")
    x = MaskedTiles(name="masked_tiles")(tiles, mask)
    if standardization is not None:
        x = standardization.features(x)
    h = layers.Dense(settings.embed_dim, activation="relu", name="patch_embed")(x)
    a = layers.Dropout(settings.dropout, name="attention_a_dropout")(
        layers.Dense(settings.attn_dim, activation="tanh", name="attention_a")(h))
    if settings.gate:
        b = layers.Dropout(settings.dropout, name="attention_b_dropout")(
            layers.Dense(settings.attn_dim, activation="sigmoid", name="attention_b")(h))
        a = layers.Multiply(name="gate")([a, b])
    scores = layers.Dense(1, name="attention_c")(a)
    weights = AttentionWeights(name=ATTENTION)(scores, mask)
    pooled = WeightedSum(name="pool")(weights, h)
    outputs = layers.Dense(int(n_genes), activation="linear", name="genes")(pooled)
    if standardization is not None:
        outputs = standardization.genes(outputs)

    # --- functional model ---
    return keras.Model({"tiles": tiles, "mask": mask}, outputs, name=name)


# MIL-Lab's tensor names (the model's state_dict; a hub file may prefix them with "model.") -> our layers.
_TENSORS = {"patch_embed.0": "patch_embed", "global_attn.attention_a.0": "attention_a",
            "global_attn.attention_b.0": "attention_b", "global_attn.attention_c": "attention_c",
            "global_attn.module.0": "attention_a", "global_attn.module.3": "attention_c"}
CLASSIFIER = "classifier"
# MIL-Lab's feature size of each encoder it publishes FEATHER for (src/_global_mappings.py), to name a mismatch.
FEATHER_ENCODERS = {1024: "UNI", 1536: "UNI2-h", 768: "CONCH v1.5"}


def mil_lab_tensors(tensors) -> dict[str, np.ndarray]:
    """MIL-Lab's state dict with the hub's "model." prefix taken off (numpy arrays)."""
    return {name.removeprefix("model."): np.asarray(tensors[name]) for name in tensors}


def load_mil_lab(model: keras.Model, tensors: dict[str, np.ndarray], source, with_genes: bool = False) -> None:
    """Set `model`'s ABMIL layers (and with `with_genes` its gene layer, from MIL-Lab's classifier) from
    MIL-Lab's tensors; a ModelError naming `source` and what does not fit: a file of another model, of
    another encoder's feature size, of other dimensions."""
    tensors = mil_lab_tensors(tensors)
    wanted = {ours for ours in _TENSORS.values() if _has_layer(model, ours)}
    found = {ours: theirs for theirs, ours in _TENSORS.items() if f"{theirs}.weight" in tensors}
    if set(found) != wanted:
        missing = sorted(wanted - set(found))
        raise ModelError(f"{source}: not an ABMIL checkpoint of MIL-Lab's layout (no tensors for {', '.join(missing)}; "
                         f"it holds e.g. {', '.join(sorted(tensors)[:3]) or 'nothing'}). Give FEATHER's model.safetensors "
                         "(huggingface.co/MahmoodLab/abmil.base.<encoder>.pc108-24k).")
    pairs = dict(found)
    if with_genes:
        pairs["genes"] = CLASSIFIER
    for ours, theirs in pairs.items():
        layer = model.get_layer(ours)
        kernel, bias = layer.get_weights()
        weight, their_bias = tensors[f"{theirs}.weight"].T, tensors[f"{theirs}.bias"]
        if weight.shape != kernel.shape or their_bias.shape != bias.shape:
            raise ModelError(_mismatch(source, ours, weight.shape, kernel.shape))
        layer.set_weights([weight.astype(np.float32), their_bias.astype(np.float32)])


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _mismatch(source, layer: str, theirs: tuple, ours: tuple) -> str:
    if layer == "patch_embed" and theirs[0] != ours[0]:
        encoder = FEATHER_ENCODERS.get(theirs[0])
        made_for = f" ({encoder}'s)" if encoder else ""
        return (f"{source}: its patch embedding takes {theirs[0]} features{made_for}, the run's features have "
                f"{ours[0]}; give the FEATHER file of the encoder the features were extracted with (UNI: 1024, "
                "UNI2-h: 1536, CONCH v1.5: 768), or leave --head-init out.")
    return (f"{source}: its {layer} weights are {theirs}, the head's are {ours}; the head's settings differ from the "
            "file's (FEATHER: embed 512, attention 384, gated), or it is another model's file.")


def initial_weights(model: keras.Model, path: str | Path) -> None:
    """Start `model` from a MIL-Lab/FEATHER checkpoint file (its classifier left out)."""
    from hist2rna_tf.extract.backbones.weights import read_tensors

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--head-init {path}: no such file; give FEATHER's model.safetensors.")
    tensors = read_tensors(path)
    load_mil_lab(model, {name: tensors[name] for name in tensors}, path)
