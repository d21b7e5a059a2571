"""Which checkpoint tensors make which weights of our Keras ViT (vit.py), for the three layouts the
encoders' files come in, and how they are converted (no TensorFlow):

- `timm`: timm's VisionTransformer (UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath):
  patch_embed.proj, cls_token, reg_token, pos_embed, blocks.<i>.{norm1, attn.qkv, attn.proj, ls1, norm2,
  mlp.fc1, mlp.fc2, ls2}, norm.
- `conch`: TRIDENT's CONCHVisionTower (CONCH v1.5, model_zoo/conchv1_5): the timm layout under
  `trunk.`, then attn_pool_contrast.{query, ln_q, ln_k, to_q, to_kv, to_out} and ln_contrast. Its
  position embeddings are resampled as TRIDENT does at load and at every forward (posembed.py).
- `dinov2-hf`: transformers' Dinov2Model (Phikon-v2): embeddings.{cls_token, mask_token (unused),
  position_embeddings, patch_embeddings.projection}, encoder.layer.<i>.{norm1, attention.attention.
  {query, key, value}, attention.output.dense, layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2,
  layer_scale2.lambda1}, layernorm. Files saved by transformers 5 (attention.{q,k,v,o}_proj) are
  read under the hub's names.

A layout is [(our layer, [Source])], each Source giving one weight of that layer, in the layer's
weight order. Linear weights [out, in] become Dense kernels [in, out]; conv [D, 3, p, p] -> [p, p, 3, D].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hist2rna_tf.extract.backbones.catalog import ViTSpec
from hist2rna_tf.extract.backbones.posembed import conch_pos_embed, square_grid, torch_resize_grid

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Source:
    """One weight of ours: the checkpoint tensors it is made of, their shapes, and how."""

    names: tuple[str, ...]
    shapes: tuple[Shape, ...]
    convert: Callable[..., np.ndarray] = lambda a: a


def _one(name: str, shape: Shape, convert: Callable[..., np.ndarray] = lambda a: a) -> Source:
    return Source((name,), (shape,), convert)


def _linear(name: str, out: int, inp: int, bias: bool = True) -> list[Source]:
    return [_one(f"{name}.weight", (out, inp), np.transpose)] + ([_one(f"{name}.bias", (out,))] if bias else [])


def _norm(name: str, d: int) -> list[Source]:
    return [_one(f"{name}.weight", (d,)), _one(f"{name}.bias", (d,))]


def _patch_embed(name: str, spec: ViTSpec) -> list[Source]:
    d, p = spec.embed_dim, spec.patch_size
    return [_one(f"{name}.weight", (d, 3, p, p), lambda a: a.transpose(2, 3, 1, 0)), _one(f"{name}.bias", (d,))]


def layout(spec: ViTSpec, checkpoint_grid: int | None = None) -> list[tuple[str, list[Source]]]:
    """The layout of `spec`'s checkpoints; `checkpoint_grid`: the side of the file's grid of position
    embeddings where the architecture resamples them (conch, dinov2-hf), else the model's own."""
    grid = spec.img_size // spec.patch_size
    if spec.layout == "dinov2-hf":
        return _dinov2_layout(spec, checkpoint_grid or grid)
    prefix = "trunk." if spec.layout == "conch" else ""
    entries = _timm_layout(spec, prefix, checkpoint_grid or grid)
    if spec.layout == "conch":
        entries += _pooler_layout(spec)
    return entries


def _timm_layout(spec: ViTSpec, prefix: str, checkpoint_grid: int) -> list[tuple[str, list[Source]]]:
    d, h = spec.embed_dim, spec.mlp_hidden
    prefix_tokens = 0 if spec.no_embed_class else 1 + spec.reg_tokens
    tokens = [_one(f"{prefix}cls_token", (1, 1, d))]
    if spec.reg_tokens:
        tokens.append(_one(f"{prefix}reg_token", (1, spec.reg_tokens, d)))
    positions = (1, checkpoint_grid ** 2 + prefix_tokens, d)
    if spec.layout == "conch":
        to_ours = lambda a: conch_pos_embed(a, spec.reference_grid, spec.img_size // spec.patch_size)  # noqa: E731
        tokens.append(_one(f"{prefix}pos_embed", positions, to_ours))
    else:
        tokens.append(_one(f"{prefix}pos_embed", positions))
    entries = [("patch_embed", _patch_embed(f"{prefix}patch_embed.proj", spec)), ("tokens", tokens)]
    for i in range(spec.depth):
        b = f"{prefix}blocks.{i}"
        entries += [(f"block{i}_norm1", _norm(f"{b}.norm1", d)),
                    (f"block{i}_attn", _linear(f"{b}.attn.qkv", 3 * d, d, spec.qkv_bias) + _linear(f"{b}.attn.proj", d, d))]
        if spec.layer_scale:
            entries.append((f"block{i}_ls1", [_one(f"{b}.ls1.gamma", (d,))]))
        entries += [(f"block{i}_norm2", _norm(f"{b}.norm2", d)),
                    (f"block{i}_mlp", _linear(f"{b}.mlp.fc1", h, d) +
                     _linear(f"{b}.mlp.fc2", d, h // 2 if spec.swiglu else h))]
        if spec.layer_scale:
            entries.append((f"block{i}_ls2", [_one(f"{b}.ls2.gamma", (d,))]))
    entries.append(("norm", _norm(f"{prefix}norm", d)))
    return entries


def _pooler_layout(spec: ViTSpec) -> list[tuple[str, list[Source]]]:
    """CONCH's attentional pooler (one query) and the LayerNorm after it."""
    d, c, pool = spec.pooler_dim, spec.embed_dim, "attn_pool_contrast"
    return [("pool_ln_k", _norm(f"{pool}.ln_k", c)),
            ("pooler", [_one(f"{pool}.query", (1, d)), *_norm(f"{pool}.ln_q", d),
                        *_linear(f"{pool}.to_q", d, d, bias=False), *_linear(f"{pool}.to_kv", 2 * d, c, bias=False),
                        *_linear(f"{pool}.to_out", d, d, bias=False)]),
            ("pool_norm", _norm("ln_contrast", d))]


def _qkv_kernel(q, k, v):
    return np.concatenate([q.T, k.T, v.T], axis=1)


def _dinov2_layout(spec: ViTSpec, checkpoint_grid: int) -> list[tuple[str, list[Source]]]:
    d, h = spec.embed_dim, spec.mlp_hidden
    grid = spec.img_size // spec.patch_size

    def positions(a):  # transformers' interpolate_pos_encoding: bicubic to the tiles' grid when it differs
        return a if checkpoint_grid == grid else np.concatenate(
            [a[:, :1], torch_resize_grid(a[:, 1:], grid, "bicubic")], axis=1)

    entries = [("patch_embed", _patch_embed("embeddings.patch_embeddings.projection", spec)),
               ("tokens", [_one("embeddings.cls_token", (1, 1, d)),
                           _one("embeddings.position_embeddings", (1, checkpoint_grid ** 2 + 1, d), positions)])]
    for i in range(spec.depth):
        b, a = f"encoder.layer.{i}", f"encoder.layer.{i}.attention"
        qkv = tuple(f"{a}.attention.{x}" for x in ("query", "key", "value"))
        entries += [(f"block{i}_norm1", _norm(f"{b}.norm1", d)),
                    (f"block{i}_attn", [Source(tuple(f"{n}.weight" for n in qkv), ((d, d),) * 3, _qkv_kernel),
                                        Source(tuple(f"{n}.bias" for n in qkv), ((d,),) * 3,
                                               lambda *x: np.concatenate(x)),
                                        *_linear(f"{a}.output.dense", d, d)]),
                    (f"block{i}_ls1", [_one(f"{b}.layer_scale1.lambda1", (d,))]),
                    (f"block{i}_norm2", _norm(f"{b}.norm2", d)),
                    (f"block{i}_mlp", _linear(f"{b}.mlp.fc1", h, d) + _linear(f"{b}.mlp.fc2", d, h)),
                    (f"block{i}_ls2", [_one(f"{b}.layer_scale2.lambda1", (d,))])]
    entries.append(("norm", _norm("layernorm", d)))
    return entries


# Tensors a file may hold that the features do not use (strict otherwise, as timm's strict load).
UNUSED = {"dinov2-hf": ("embeddings.mask_token",)}

_TRANSFORMERS_5 = ((r"\.attention\.q_proj\.", ".attention.attention.query."),
                   (r"\.attention\.k_proj\.", ".attention.attention.key."),
                   (r"\.attention\.v_proj\.", ".attention.attention.value."),
                   (r"\.attention\.o_proj\.", ".attention.output.dense."))


def canonical_name(name: str, spec: ViTSpec) -> str:
    """A file's tensor name as `layout` names it (a transformers-5 Dinov2 file's renamed)."""
    if spec.layout != "dinov2-hf":
        return name
    for pattern, replacement in _TRANSFORMERS_5:
        name = re.sub(pattern, replacement, name)
    return name.removeprefix("dinov2.")


def checkpoint_grid(shapes: dict[str, tuple[int, ...]], spec: ViTSpec) -> int | None:
    """The side of the file's grid of position embeddings where the architecture resamples them (CONCH
    v1.5's file may hold them at 448 px or at 224; a Dinov2 file at its config's image size)."""
    name = {"conch": "trunk.pos_embed", "dinov2-hf": "embeddings.position_embeddings"}.get(spec.layout)
    if name is None or name not in shapes:
        return None
    return square_grid(shapes[name][1] - 1)
