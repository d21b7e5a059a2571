"""transformers' Dinov2Model (Phikon-v2): a folder, config.json (checked against the architecture) and
model.safetensors with embeddings.{cls_token, mask_token (unused), position_embeddings,
patch_embeddings.projection}, encoder.layer.<i>.{norm1, attention.attention.{query, key, value},
attention.output.dense, layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2, layer_scale2.lambda1},
layernorm. Files saved by transformers 5 (attention.{q,k,v,o}_proj, a `dinov2.` prefix) are read under
the hub's names; position embeddings at another grid are interpolated as transformers does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.catalog import EncoderSpec, ViTSpec
from hist2rna_tf.extract.backbones.checkpoints.parts import Entries, Source, linear, norm, one, patch_embed
from hist2rna_tf.extract.backbones.posembed import torch_resize_grid

GRID_TENSOR = "embeddings.position_embeddings"
UNUSED = ("embeddings.mask_token",)  # the file holds it; the features do not use it
_TRANSFORMERS_5 = ((r"\.attention\.q_proj\.", ".attention.attention.query."),
                   (r"\.attention\.k_proj\.", ".attention.attention.key."),
                   (r"\.attention\.v_proj\.", ".attention.attention.value."),
                   (r"\.attention\.o_proj\.", ".attention.output.dense."))


def rename(name: str) -> str:
    """A file's tensor name as the hub names it (a transformers-5 file's renamed)."""
    for pattern, replacement in _TRANSFORMERS_5:
        name = re.sub(pattern, replacement, name)
    return name.removeprefix("dinov2.")


def _qkv_kernel(q, k, v):
    return np.concatenate([q.T, k.T, v.T], axis=1)


def entries(spec: ViTSpec, grid: int | None = None) -> Entries:
    """`grid`: the side of the file's grid of position embeddings (its config's image size)."""
    d, h = spec.embed_dim, spec.mlp_hidden
    ours = spec.img_size // spec.patch_size
    grid = grid or ours

    def positions(a):  # transformers' interpolate_pos_encoding: bicubic to the tiles' grid when it differs
        return a if grid == ours else np.concatenate([a[:, :1], torch_resize_grid(a[:, 1:], ours, "bicubic")], axis=1)

    found = [("patch_embed", patch_embed("embeddings.patch_embeddings.projection", spec)),
             ("tokens", [one("embeddings.cls_token", (1, 1, d)),
                         one("embeddings.position_embeddings", (1, grid ** 2 + 1, d), positions)])]
    for i in range(spec.depth):
        b, a = f"encoder.layer.{i}", f"encoder.layer.{i}.attention"
        qkv = tuple(f"{a}.attention.{x}" for x in ("query", "key", "value"))
        found += [(f"block{i}_norm1", norm(f"{b}.norm1", d)),
                  (f"block{i}_attn", [Source(tuple(f"{n}.weight" for n in qkv), ((d, d),) * 3, _qkv_kernel),
                                      Source(tuple(f"{n}.bias" for n in qkv), ((d,),) * 3, lambda *x: np.concatenate(x)),
                                      *linear(f"{a}.output.dense", d, d)]),
                  (f"block{i}_ls1", [one(f"{b}.layer_scale1.lambda1", (d,))]),
                  (f"block{i}_norm2", norm(f"{b}.norm2", d)),
                  (f"block{i}_mlp", linear(f"{b}.mlp.fc1", h, d) + linear(f"{b}.mlp.fc2", d, h)),
                  (f"block{i}_ls2", [one(f"{b}.layer_scale2.lambda1", (d,))])]
    found.append(("norm", norm("layernorm", d)))
    return found


def _expected_config(spec: ViTSpec) -> dict:
    """transformers' Dinov2Config fields that must match the architecture (name -> the spec's value)."""
    return {"model_type": "dinov2", "hidden_size": spec.embed_dim, "num_hidden_layers": spec.depth,
            "num_attention_heads": spec.num_heads, "patch_size": spec.patch_size, "mlp_ratio": spec.mlp_ratio,
            "layer_norm_eps": spec.norm_eps, "use_swiglu_ffn": False, "hidden_act": "gelu", "qkv_bias": True}


def weights_in(path: Path, spec: EncoderSpec) -> Path:
    """The model's folder (or its model.safetensors) -> its model.safetensors, once the folder holds both
    files and its config.json is checked against `spec`."""
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.json"
    weights = path if path.is_file() else folder / "model.safetensors"
    missing = [file.name for file in (config_file, weights) if not file.is_file()]
    if missing:
        raise BackboneError(f"{folder}: no {' and no '.join(missing)}; {spec.paper_name} is a transformers model: pass "
                            f"the folder holding config.json and model.safetensors, both downloaded from "
                            f"{spec.weights_page}.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{config_file}: not readable JSON ({exc}); download it again.") from None
    for key, expected in _expected_config(spec.vit).items():
        if config.get(key, expected) != expected:
            raise BackboneError(f"{config_file}: {key} is {config.get(key)!r}, {spec.paper_name} has {expected!r}: "
                                "the folder holds another model.")
    return weights
