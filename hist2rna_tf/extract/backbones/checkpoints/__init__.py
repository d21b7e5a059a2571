"""The layouts the encoders' checkpoint files come in, one module each, one contract (`Layout`): which
tensors make which weights of our Keras ViT (vit.py) and how they are converted; where the file keeps
the position embeddings the architecture resamples (their grid is read off the file); the tensors a
file may hold that the features do not use (strict otherwise, as timm's strict load); how a file's
tensor names map to the layout's; and, for a layout that is a folder, its weights file once the folder
is checked. A new encoder of a known layout is one catalog entry (catalog.ENCODERS) and a fixture; a
new layout, one module here and one entry in LAYOUTS. No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hist2rna_tf.extract.backbones.catalog import EncoderSpec, ViTSpec
from hist2rna_tf.extract.backbones.checkpoints import conch, dinov2_hf, timm
from hist2rna_tf.extract.backbones.checkpoints.parts import Entries, Source
from hist2rna_tf.extract.backbones.posembed import square_grid

__all__ = ["LAYOUTS", "Layout", "Source", "layout_of"]


@dataclass(frozen=True)
class Layout:
    name: str  # ViTSpec.layout
    entries: Callable[[ViTSpec, int | None], Entries]  # (spec, the file's grid of position embeddings)
    grid_tensor: str | None = None  # the position embeddings the architecture resamples (their grid: the file's)
    unused: tuple[str, ...] = ()
    rename: Callable[[str], str] = lambda name: name
    weights_in: Callable[[Path, EncoderSpec], Path] | None = None  # a folder layout: its checked weights file

    @property
    def is_folder(self) -> bool:
        return self.weights_in is not None

    def grid(self, shapes: dict[str, tuple[int, ...]]) -> int | None:
        """The side of the file's grid of position embeddings where the architecture resamples them
        (CONCH v1.5's file may hold them at 448 px or at 224; a Dinov2 file at its config's image size)."""
        if self.grid_tensor is None or self.grid_tensor not in shapes:
            return None
        return square_grid(shapes[self.grid_tensor][1] - 1)


LAYOUTS = {layout.name: layout for layout in (
    Layout("timm", timm.entries),
    Layout("conch", conch.entries, grid_tensor=conch.GRID_TENSOR),
    Layout("dinov2-hf", dinov2_hf.entries, grid_tensor=dinov2_hf.GRID_TENSOR, unused=dinov2_hf.UNUSED,
           rename=dinov2_hf.rename, weights_in=dinov2_hf.weights_in),
)}


def layout_of(spec: ViTSpec) -> Layout:
    return LAYOUTS[spec.layout]
