"""TRIDENT's CONCHVisionTower (CONCH v1.5, its model_zoo/conchv1_5): the timm layout under `trunk.`,
then attn_pool_contrast.{query, ln_q, ln_k, to_q, to_kv, to_out} and ln_contrast. Its file's position
embeddings (a 28 x 28 grid, or 14 x 14) are resampled as TRIDENT does at load and at every forward
(posembed.py), once, here."""

from __future__ import annotations

from hist2rna_tf.extract.backbones.catalog import ViTSpec
from hist2rna_tf.extract.backbones.checkpoints import timm
from hist2rna_tf.extract.backbones.checkpoints.parts import Entries, linear, norm, one
from hist2rna_tf.extract.backbones.posembed import conch_pos_embed

GRID_TENSOR = "trunk.pos_embed"


def entries(spec: ViTSpec, grid: int | None = None) -> Entries:
    """`grid`: the side of the file's grid of position embeddings."""
    ours = spec.img_size // spec.patch_size
    return timm.trunk(spec, "trunk.", grid, lambda a: conch_pos_embed(a, spec.reference_grid, ours)) + pooler(spec)


def pooler(spec: ViTSpec) -> Entries:
    """CONCH's attentional pooler (one query) and the LayerNorm after it."""
    d, c, pool = spec.pooler_dim, spec.embed_dim, "attn_pool_contrast"
    return [("pool_ln_k", norm(f"{pool}.ln_k", c)),
            ("pooler", [one(f"{pool}.query", (1, d)), *norm(f"{pool}.ln_q", d),
                        *linear(f"{pool}.to_q", d, d, bias=False), *linear(f"{pool}.to_kv", 2 * d, c, bias=False),
                        *linear(f"{pool}.to_out", d, d, bias=False)]),
            ("pool_norm", norm("ln_contrast", d))]
