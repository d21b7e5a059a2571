"""timm's VisionTransformer (UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath): patch_embed.proj,
cls_token, reg_token, pos_embed, blocks.<i>.{norm1, attn.qkv, attn.proj, ls1, norm2, mlp.fc1, mlp.fc2,
ls2}, norm. One file, position embeddings at the model's own grid."""

from __future__ import annotations

from typing import Callable

import numpy as np

from hist2rna_tf.extract.backbones.catalog import ViTSpec
from hist2rna_tf.extract.backbones.checkpoints.parts import Entries, linear, norm, one, patch_embed


def trunk(spec: ViTSpec, prefix: str = "", grid: int | None = None,
          positions: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> Entries:
    """timm's ViT under `prefix`, its position embeddings on a `grid` x `grid` (default: the model's own),
    made ours by `positions`."""
    d, h = spec.embed_dim, spec.mlp_hidden
    grid = grid or spec.img_size // spec.patch_size
    prefix_tokens = 0 if spec.no_embed_class else 1 + spec.reg_tokens
    tokens = [one(f"{prefix}cls_token", (1, 1, d))]
    if spec.reg_tokens:
        tokens.append(one(f"{prefix}reg_token", (1, spec.reg_tokens, d)))
    tokens.append(one(f"{prefix}pos_embed", (1, grid ** 2 + prefix_tokens, d), positions))
    entries = [("patch_embed", patch_embed(f"{prefix}patch_embed.proj", spec)), ("tokens", tokens)]
    for i in range(spec.depth):
        b = f"{prefix}blocks.{i}"
        entries += [(f"block{i}_norm1", norm(f"{b}.norm1", d)),
                    (f"block{i}_attn", linear(f"{b}.attn.qkv", 3 * d, d, spec.qkv_bias) + linear(f"{b}.attn.proj", d, d))]
        if spec.layer_scale:
            entries.append((f"block{i}_ls1", [one(f"{b}.ls1.gamma", (d,))]))
        entries += [(f"block{i}_norm2", norm(f"{b}.norm2", d)),
                    (f"block{i}_mlp", linear(f"{b}.mlp.fc1", h, d) +
                     linear(f"{b}.mlp.fc2", d, h // 2 if spec.swiglu else h))]
        if spec.layer_scale:
            entries.append((f"block{i}_ls2", [one(f"{b}.ls2.gamma", (d,))]))
    entries.append(("norm", norm(f"{prefix}norm", d)))
    return entries


def entries(spec: ViTSpec, grid: int | None = None) -> Entries:
    return trunk(spec)
