"""What every checkpoint layout is made of: a `Source` (one weight of our Keras ViT and the checkpoint
tensors it is made of, with their shapes and the conversion), and the parts layouts share: a Linear
(weights [out, in] -> a Dense kernel [in, out]), a LayerNorm, the patch embedding (conv [D, 3, p, p] ->
[p, p, 3, D])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hist2rna_tf.extract.backbones.catalog import ViTSpec

Shape = tuple[int, ...]
# A layout: [(our layer, [Source])], each Source giving one weight of that layer, in the layer's weight order.
Entries = list[tuple[str, list["Source"]]]


@dataclass(frozen=True)
class Source:
    """One weight of ours: the checkpoint tensors it is made of, their shapes, and how."""

    names: tuple[str, ...]
    shapes: tuple[Shape, ...]
    convert: Callable[..., np.ndarray] = lambda a: a


def one(name: str, shape: Shape, convert: Callable[..., np.ndarray] = lambda a: a) -> Source:
    return Source((name,), (shape,), convert)


def linear(name: str, out: int, inp: int, bias: bool = True) -> list[Source]:
    return [one(f"{name}.weight", (out, inp), np.transpose)] + ([one(f"{name}.bias", (out,))] if bias else [])


def norm(name: str, d: int) -> list[Source]:
    return [one(f"{name}.weight", (d,)), one(f"{name}.bias", (d,))]


def patch_embed(name: str, spec: ViTSpec) -> list[Source]:
    d, p = spec.embed_dim, spec.patch_size
    return [one(f"{name}.weight", (d, 3, p, p), lambda a: a.transpose(2, 3, 1, 0)), one(f"{name}.bias", (d,))]
