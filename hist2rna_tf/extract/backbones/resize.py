"""The encoders' reference resize, exact to the integer: what torchvision's Resize (and CenterCrop) does
to a PIL tile, which is Pillow's resampling (Resample.c), written as two integer matrix products so
that it runs inside the model (tf.data, XLA, the end-to-end SavedModel).

Pillow resamples an 8-bit image in two passes, horizontal then vertical, each output pixel a weighted
sum of the input pixels in the filter's support (widened by the scale when shrinking: antialiased),
the weights normalised to sum to 1 and stored in fixed point (22 fractional bits), the sum rounded
and clipped to uint8 after each pass. `pil_weights` builds those fixed-point weights as an
[out, in] matrix; `pil_resize` applies them. In float64 every product and sum is an exact integer
(|sum| < 2^31), so the result is Pillow's to the last bit; tests/extract/test_resize.py holds it to
Pillow itself.
"""

from __future__ import annotations

import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


FILTERS = {"bilinear": (1.0, _bilinear), "bicubic": (2.0, _bicubic)}  # name -> (support, kernel)


def pil_weights(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """Pillow's fixed-point resampling weights, int64 [out_size, in_size] (precompute_coeffs and
    normalize_coeffs_8bpc of Resample.c)."""
    support, kernel = FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    weights = np.zeros((out_size, in_size), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = np.array([kernel((x - center + 0.5) / filterscale) for x in range(xmin, xmax)])
        if w.sum() != 0.0:
            w = w / w.sum()
        weights[xx, xmin:xmax] = [int(-0.5 + v * (1 << PRECISION_BITS)) if v < 0 else
                                  int(0.5 + v * (1 << PRECISION_BITS)) for v in w]
    return weights


def center_crop_offset(size: int, crop: int) -> int:
    """Where torchvision's CenterCrop starts a `crop` of `size` (int(round((size - crop) / 2)))."""
    return int(round((size - crop) / 2.0))


def pil_resize(tiles, out_size: int, interpolation: str):
    """uint8-valued tiles [B, S, S, 3] (any float dtype) -> [B, out, out, 3] float32, as
    PIL.Image.resize((out, out), interpolation) gives them (unchanged when S == out)."""
    from keras import ops

    size = int(tiles.shape[1])
    if size == out_size:
        return ops.cast(tiles, "float32")
    matrix = ops.convert_to_tensor(pil_weights(size, out_size, interpolation).astype(np.float64))
    half, one = float(1 << (PRECISION_BITS - 1)), float(1 << PRECISION_BITS)

    def rounded(total):  # Pillow's clip8: (total + half) >> PRECISION_BITS, in [0, 255]
        return ops.clip(ops.floor((total + half) / one), 0.0, 255.0)

    x = ops.cast(tiles, "float64")
    x = rounded(ops.einsum("bhwc,jw->bhjc", x, matrix))  # horizontal pass first, as Pillow
    x = rounded(ops.einsum("bhwc,ih->biwc", x, matrix))
    return ops.cast(x, "float32")


def reference_transform(tiles, resize: int, interpolation: str, crop: int | None):
    """torchvision's Resize(resize, interpolation) then, when `crop`, CenterCrop(crop), on uint8-valued
    square tiles [B, S, S, 3] -> float32 [B, crop or resize, ...] in [0, 255]."""
    x = pil_resize(tiles, resize, interpolation)
    if crop is not None and crop != resize:
        start = center_crop_offset(resize, crop)
        x = x[:, start:start + crop, start:start + crop, :]
    return x

