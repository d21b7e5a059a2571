"""Position embeddings resampled as the reference implementations resample them (no TensorFlow, no
torch): torch.nn.functional.interpolate's bilinear and bicubic modes (align_corners=False, no
antialiasing) as numpy, one separable [out, in] matrix a side. These run once, when a checkpoint is
converted, never per tile.

- CONCH v1.5 (TRIDENT model_zoo/conchv1_5): at load, the file's grid is resampled to the trunk's
  14 x 14 (timm's resample_abs_pos_embed, bilinear); at each forward, DINO's interpolate_pos_encoding
  takes it to the tiles' grid (bicubic with scale factor (grid + 0.1) / 14).
- Dinov2 in transformers (Phikon-v2): bicubic to the tiles' grid by size, when the grids differ.
"""

from __future__ import annotations

import math

import numpy as np

_A = -0.75  # torch's bicubic convolution constant


def _cubic(x: float) -> float:
    x = abs(x)
    if x <= 1.0:
        return ((_A + 2) * x - (_A + 3)) * x * x + 1
    if x < 2.0:
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A
    return 0.0


def interpolation_matrix(in_size: int, out_size: int, mode: str, scale: float | None = None) -> np.ndarray:
    """torch's 1-D interpolation (align_corners=False) as an [out, in] matrix; `scale` (in per out)
    defaults to in_size / out_size, as when torch is given a size rather than a scale factor."""
    scale = in_size / out_size if scale is None else scale
    matrix = np.zeros((out_size, in_size), np.float64)
    for dst in range(out_size):
        src = scale * (dst + 0.5) - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            i0 = int(src)
            i1 = i0 + (1 if i0 < in_size - 1 else 0)
            frac = src - i0
            matrix[dst, i0] += 1.0 - frac
            matrix[dst, i1] += frac
        elif mode == "bicubic":
            i0 = math.floor(src)
            frac = src - i0
            for offset, distance in ((-1, frac + 1), (0, frac), (1, 1 - frac), (2, 2 - frac)):
                matrix[dst, min(max(i0 + offset, 0), in_size - 1)] += _cubic(distance)
        else:
            raise ValueError(f"unknown interpolation {mode!r}")
    return matrix


def square_grid(tokens: int) -> int:
    """The side of a square grid of `tokens` position embeddings (a ValueError when it is not square)."""
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} position embeddings are not a square grid")
    return side


def torch_resize_grid(positions: np.ndarray, out_grid: int, mode: str, scale: float | None = None) -> np.ndarray:
    """[1, G*G, D] embeddings of a G x G grid (row by row) -> [1, out*out, D], as F.interpolate."""
    grid = square_grid(positions.shape[1])
    matrix = interpolation_matrix(grid, out_grid, mode, scale)
    planes = positions[0].reshape(grid, grid, -1).astype(np.float64)
    resized = np.einsum("ih,hwd,jw->ijd", matrix, planes, matrix)
    return resized.reshape(1, out_grid * out_grid, -1).astype(np.float32)


def conch_pos_embed(positions: np.ndarray, trunk_grid: int, tile_grid: int) -> np.ndarray:
    """CONCH v1.5's file embeddings [1, 1 + G*G, D] -> what its trunk adds to the tokens of a
    tile_grid x tile_grid tile: [1, 1 + tile_grid^2, D] (see the module's docstring)."""
    cls, patches = positions[:, :1], positions[:, 1:]
    if patches.shape[1] != trunk_grid ** 2:
        patches = torch_resize_grid(patches, trunk_grid, "bilinear")
    if tile_grid != trunk_grid:
        scale_factor = (tile_grid + 0.1) / trunk_grid
        assert math.floor(trunk_grid * scale_factor) == tile_grid
        patches = torch_resize_grid(patches, tile_grid, "bicubic", scale=1.0 / scale_factor)
    return np.concatenate([cls, patches], axis=1).astype(np.float32)
