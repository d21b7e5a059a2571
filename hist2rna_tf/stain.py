"""Stain normalisation: Macenko in TensorFlow ops (batched, inside tf.data, GPU-ready), and staintools.

The paper's "vector-based colour normalisation [21]" is Macenko et al. 2009; the hist2RNA authors ran
the reference implementation (schaugf/HEnorm_python) tile by tile with fixed targets (Io=240,
alpha=1, beta=0.15, HERef, maxCRef: `config.PAPER_HE_REF`, `config.PAPER_MAX_C_REF`).
`macenko_normalise` reproduces it step for step on a batch:

  OD = -log((I+1)/Io); keep pixels with every OD >= beta; eigenvectors of their covariance;
  angles of the projections onto the top two; the alpha / 100-alpha percentile angles give the
  H and E vectors (H: the one with larger red OD); concentrations by least squares; scale each
  so its 99th percentile matches maxCRef; recompose with HERef; clip > 255 to 254; truncate to uint8.

Percentiles use numpy's linear interpolation, taken from `tf.math.top_k` (only the tails are
needed, much cheaper than sorting 50,176 pixels). A tile with too few stained pixels (background,
blank, pen) cannot be estimated: it passes through unchanged and is flagged, never NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from .config import StainConfig

log = logging.getLogger(__name__)


def _tail_percentile(values: tf.Tensor, valid: tf.Tensor, q: float) -> tf.Tensor:
    """numpy.percentile(values[valid], q) per row of [B, N], for q near 0 or 100.

    Rows with no valid value give NaN-free garbage; callers flag them through `valid`.
    """
    n_total = values.shape[1]
    if n_total is None:
        raise ValueError("Macenko needs images of a known height and width (static shapes)")
    high = q >= 50.0
    tail = (100.0 - q) if high else q
    k = int(min(np.ceil(tail / 100.0 * (int(n_total) - 1)) + 2, int(n_total)))
    signed = values if high else -values
    fill = tf.fill(tf.shape(signed), tf.constant(-np.inf, signed.dtype))
    top = tf.math.top_k(tf.where(valid, signed, fill), k=k).values  # descending in `signed`
    n = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1), 1)
    pos = (q / 100.0) * tf.cast(n - 1, values.dtype)  # position in the ascending order
    lo, hi = tf.floor(pos), tf.math.ceil(pos)
    frac = pos - lo
    if high:  # ascending index i is descending index n-1-i
        idx_lo, idx_hi = tf.cast(n - 1, values.dtype) - lo, tf.cast(n - 1, values.dtype) - hi
    else:
        idx_lo, idx_hi = lo, hi
    clamp = float(k - 1)
    a_lo = tf.gather(top, tf.cast(tf.clip_by_value(idx_lo, 0.0, clamp), tf.int32), batch_dims=1)
    a_hi = tf.gather(top, tf.cast(tf.clip_by_value(idx_hi, 0.0, clamp), tf.int32), batch_dims=1)
    if not high:
        a_lo, a_hi = -a_lo, -a_hi
    a_lo = tf.where(tf.math.is_finite(a_lo), a_lo, tf.zeros_like(a_lo))
    a_hi = tf.where(tf.math.is_finite(a_hi), a_hi, tf.zeros_like(a_hi))
    return a_lo + (a_hi - a_lo) * frac


def _optical_density(images: tf.Tensor, io: float) -> tf.Tensor:
    """[B, H, W, 3] uint8 -> [B, H*W, 3] float32 optical density."""
    x = tf.cast(images, tf.float32)
    height, width = images.shape[1], images.shape[2]
    # A static pixel count (when the tile size is known) lets top_k take a static k.
    n_pixels = height * width if height is not None and width is not None else -1
    return tf.reshape(-tf.math.log((x + 1.0) / io), [tf.shape(x)[0], n_pixels, 3])


def estimate_stains(od: tf.Tensor, alpha: float, beta: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-image H&E vectors [B, 3, 2], concentrations [B, N, 2], and the stained-pixel count [B]."""
    stained = tf.reduce_all(od >= beta, axis=-1)  # the reference's ~np.any(OD < beta)
    weight = tf.cast(stained, tf.float32)[..., None]
    count = tf.reduce_sum(weight, axis=1)  # [B, 1]
    mean = tf.reduce_sum(od * weight, axis=1, keepdims=True) / tf.maximum(count[:, None], 1.0)
    centred = (od - mean) * weight
    cov = tf.einsum("bni,bnj->bij", centred, centred) / tf.maximum(count[:, None] - 1.0, 1.0)
    _, eigvecs = tf.linalg.eigh(tf.cast(cov, tf.float64))
    plane = tf.cast(eigvecs[:, :, 1:3], tf.float32)  # the two largest, ascending like numpy
    proj = tf.einsum("bni,bij->bnj", od, plane)
    phi = tf.math.atan2(proj[..., 1], proj[..., 0])
    min_phi = _tail_percentile(phi, stained, alpha)
    max_phi = _tail_percentile(phi, stained, 100.0 - alpha)
    v_min = tf.einsum("bij,bj->bi", plane, tf.stack([tf.cos(min_phi), tf.sin(min_phi)], axis=-1))
    v_max = tf.einsum("bij,bj->bi", plane, tf.stack([tf.cos(max_phi), tf.sin(max_phi)], axis=-1))
    h_first = (v_min[:, 0] > v_max[:, 0])[:, None, None]
    he = tf.where(h_first, tf.stack([v_min, v_max], axis=-1), tf.stack([v_max, v_min], axis=-1))
    # Least squares of every pixel's OD on the two stain vectors (the reference's lstsq).
    he64 = tf.cast(he, tf.float64)
    pinv = tf.cast(tf.linalg.solve(tf.matmul(he64, he64, transpose_a=True), tf.transpose(he64, [0, 2, 1])),
                   tf.float32)
    conc = tf.einsum("bij,bnj->bni", pinv, od)
    return he, conc, count[:, 0]


def max_concentrations(conc: tf.Tensor) -> tf.Tensor:
    """99th percentile of each stain's concentration over all pixels: [B, 2]."""
    everywhere = tf.ones_like(conc[..., 0], dtype=tf.bool)
    return tf.stack([_tail_percentile(conc[..., 0], everywhere, 99.0),
                     _tail_percentile(conc[..., 1], everywhere, 99.0)], axis=-1)


def _compose(conc: tf.Tensor, he_ref: tf.Tensor, io: float, shape: tf.Tensor) -> tf.Tensor:
    rgb = io * tf.exp(-tf.einsum("ij,bnj->bni", he_ref, conc))
    rgb = tf.where(rgb > 255.0, tf.constant(254.0), rgb)
    return tf.cast(tf.reshape(rgb, shape), tf.uint8)  # float -> uint8 truncates, as numpy's astype


def macenko_normalise(images: tf.Tensor, config: StainConfig = StainConfig(), components: bool = False):
    """Normalise a batch of RGB tiles [B, H, W, 3] uint8 to the config's reference stain.

    Returns (normalised uint8 [B, H, W, 3], normalised bool [B]); tiles with fewer stained pixels
    than `config.min_stained_fraction`, or whose estimate is not finite, come back unchanged with
    False. With `components=True` also returns the H-only and E-only images (the reference's H, E).
    """
    images = tf.convert_to_tensor(images, dtype=tf.uint8)
    shape = tf.shape(images)
    od = _optical_density(images, config.io)
    he, conc, count = estimate_stains(od, config.alpha, config.beta)
    max_c = max_concentrations(conc)
    max_c_ref = tf.constant(config.max_c_ref, tf.float32)
    conc = conc / (max_c / max_c_ref)[:, None, :]
    he_ref = tf.constant(config.he_ref, tf.float32)
    n_pixels = tf.cast(tf.shape(od)[1], tf.float32)
    ok = (count >= tf.maximum(config.min_stained_fraction * n_pixels, 3.0)) & tf.reduce_all(
        tf.math.is_finite(conc), axis=[1, 2]) & tf.reduce_all(max_c > 0, axis=1)
    ok &= tf.reduce_all(tf.math.is_finite(he), axis=[1, 2])
    safe_conc = tf.where(ok[:, None, None], conc, tf.zeros_like(conc))
    out = tf.where(ok[:, None, None, None], _compose(safe_conc, he_ref, config.io, shape), images)
    if not components:
        return out, ok
    h_only = _compose(safe_conc * [1.0, 0.0], he_ref, config.io, shape)
    e_only = _compose(safe_conc * [0.0, 1.0], he_ref, config.io, shape)
    return out, ok, h_only, e_only


def fit_macenko_targets(image: np.ndarray, config: StainConfig = StainConfig()) -> StainConfig:
    """A StainConfig whose targets (HERef, maxCRef) are fitted to a reference RGB image."""
    od = _optical_density(tf.convert_to_tensor(image[None], tf.uint8), config.io)
    he, conc, count = estimate_stains(od, config.alpha, config.beta)
    if float(count[0]) < 3:
        raise ValueError("the reference image has no stained pixels to fit Macenko targets to")
    max_c = max_concentrations(conc)[0].numpy()
    he_ref = tuple(tuple(float(v) for v in row) for row in he[0].numpy())
    from dataclasses import replace

    return replace(config, he_ref=he_ref, max_c_ref=(float(max_c[0]), float(max_c[1])))


# --- the pipeline's normaliser --------------------------------------------------------------------


def make_normaliser(config: StainConfig):
    """A function [B, H, W, 3] uint8 -> (uint8 images, bool normalised [B]) for tf.data.map.

    `macenko` runs as TensorFlow ops; the staintools methods run through tf.numpy_function
    (slow, CPU only, for comparison); `none` passes tiles through.
    """
    if config.method == "none":
        return lambda images: (images, tf.ones(tf.shape(images)[:1], tf.bool))
    if config.method == "macenko":
        fn = tf.function(lambda images: macenko_normalise(images, config), reduce_retracing=True)
        return fn
    if config.method in ("staintools-macenko", "staintools-vahadane"):
        return _staintools_normaliser(config)
    raise ValueError(f"unknown stain method {config.method!r}; choose macenko, staintools-macenko, "
                     "staintools-vahadane or none")


def staintools_normaliser_numpy(config: StainConfig):
    """A numpy function (tile uint8 [H, W, 3]) -> (uint8 tile, ok) backed by staintools."""
    import staintools

    reference = load_reference_image(config.reference_image)
    method = config.method.split("-", 1)[1]
    normaliser = staintools.StainNormalizer(method=method)
    normaliser.fit(reference)

    def normalise_one(tile: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            out = normaliser.transform(tile)
        except Exception as exc:  # staintools raises bare Exceptions on tiles with no tissue
            log.debug("staintools could not normalise a tile: %s", exc)
            return tile, False
        if not np.isfinite(out).all():
            return tile, False
        return np.clip(out, 0, 255).astype(np.uint8), True

    return normalise_one


def _staintools_normaliser(config: StainConfig):
    normalise_one = staintools_normaliser_numpy(config)

    def batch_numpy(images: np.ndarray):
        outs, oks = zip(*(normalise_one(tile) for tile in images)) if len(images) else ((), ())
        return np.stack(outs) if outs else images, np.asarray(oks, dtype=bool)

    def fn(images):
        out, ok = tf.numpy_function(batch_numpy, [images], (tf.uint8, tf.bool))
        out.set_shape(images.shape)
        ok.set_shape(images.shape[:1])
        return out, ok

    return fn


def load_reference_image(path: str | None) -> np.ndarray:
    """The user's reference image, or the shipped default (a real TCGA-BRCA tile)."""
    from importlib import resources

    from PIL import Image

    if path is None:
        path = resources.files("hist2rna_tf") / "data" / "tcga_tiles" / DEFAULT_REFERENCE_TILE
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


DEFAULT_REFERENCE_TILE = "TCGA-A2-A0YG-01Z-00-DX1.89A39319-F880-47DE-B311-DA1F6A64B6F3_x41216_y30464.png"


def resolve_stain_config(config: StainConfig) -> StainConfig:
    """For `macenko` with a reference image, fit the targets to it; otherwise unchanged."""
    if config.method == "macenko" and config.reference_image is not None:
        return fit_macenko_targets(load_reference_image(config.reference_image), config)
    return config
