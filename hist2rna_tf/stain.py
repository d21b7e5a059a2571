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
needed, much cheaper than sorting 50,176 pixels; both angle tails come from one call). A tile with too few stained pixels (background,
blank, pen) cannot be estimated: it passes through unchanged and is flagged, never NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from .config import StainConfig

log = logging.getLogger(__name__)


def _tail_k(n_total: int, q: float) -> int:
    """How many of the largest (q >= 50) or smallest values the q-th percentile of a row can need."""
    tail = (100.0 - q) if q >= 50.0 else q
    return int(min(np.ceil(tail / 100.0 * (int(n_total) - 1)) + 2, int(n_total)))


def _percentile_from_top(top: tf.Tensor, n: tf.Tensor, q: float) -> tf.Tensor:
    """numpy.percentile (linear) per row, from the row's top-k values in descending order of the
    SIGNED values (the values for q >= 50, their negatives for q < 50) and its count of valid
    values `n` [R]. Rows with no valid value give NaN-free garbage; callers flag them."""
    high = q >= 50.0
    n = tf.cast(tf.maximum(n, 1), top.dtype)
    pos = (q / 100.0) * (n - 1)  # position in the ascending order
    lo, hi = tf.floor(pos), tf.math.ceil(pos)
    frac = pos - lo
    idx_lo, idx_hi = (n - 1 - lo, n - 1 - hi) if high else (lo, hi)  # ascending i is descending n-1-i
    clamp = float(top.shape[1] - 1)
    a_lo = tf.gather(top, tf.cast(tf.clip_by_value(idx_lo, 0.0, clamp), tf.int32), batch_dims=1)
    a_hi = tf.gather(top, tf.cast(tf.clip_by_value(idx_hi, 0.0, clamp), tf.int32), batch_dims=1)
    if not high:
        a_lo, a_hi = -a_lo, -a_hi
    a_lo = tf.where(tf.math.is_finite(a_lo), a_lo, tf.zeros_like(a_lo))
    a_hi = tf.where(tf.math.is_finite(a_hi), a_hi, tf.zeros_like(a_hi))
    return a_lo + (a_hi - a_lo) * frac


class Macenko:
    """The reference Macenko as compiled TensorFlow stages, for one StainConfig.

    Pixel-wise arithmetic runs in XLA-fused stages (each reads the uint8 tiles once, so OD is never
    stored); atan2 and top_k use TensorFlow's own kernels, much faster on CPU than XLA's. Call it on
    uint8 [B, H, W, 3] (H, W static) inside or outside tf.data.
    """

    def __init__(self, config: StainConfig = StainConfig()):
        self.config = config
        self._he_ref = tf.constant(config.he_ref, tf.float32)  # [3, 2]: H and E columns
        self._max_c_ref = tf.constant(config.max_c_ref, tf.float32)
        jit = dict(jit_compile=True)  # no reduce_retracing: XLA needs static shapes to fuse well
        self._stats = tf.function(self._stats_fn, **jit)
        self._project = tf.function(self._project_fn, **jit)
        self._concentrations = tf.function(self._concentrations_fn, **jit)
        self._signed_tails = tf.function(self._signed_tails_fn, **jit)
        self._compose = tf.function(self._compose_fn, **jit)
        self.normalise = tf.function(self._normalise_fn, reduce_retracing=True)

    def __call__(self, images):
        """(normalised uint8 [B, H, W, 3], normalised bool [B]); see `macenko_normalise`."""
        return self.normalise(tf.convert_to_tensor(images, tf.uint8))

    # --- stages ---
    # Channels are handled as separate [B, N] planes: XLA fuses plane arithmetic into one loop per
    # stage, whereas its matmuls with 2- or 3-long dimensions are slow on CPU.
    def _od_planes(self, images):
        """uint8 [B, H, W, 3] -> three [B, H*W] optical-density planes, the reference's -log((I+1)/Io)."""
        if images.shape[1] is None or images.shape[2] is None:
            raise ValueError("Macenko needs images of a known height and width (static shapes)")
        flat = tf.reshape(images, [tf.shape(images)[0], images.shape[1] * images.shape[2], 3])
        return [-tf.math.log((tf.cast(flat[..., c], tf.float32) + 1.0) / self.config.io) for c in range(3)]

    def _stats_fn(self, images):
        od = self._od_planes(images)
        stained = (od[0] >= self.config.beta) & (od[1] >= self.config.beta) & (od[2] >= self.config.beta)
        weight = tf.cast(stained, tf.float32)  # the reference keeps pixels with no OD < beta
        count = tf.reduce_sum(weight, axis=1)
        mean = [tf.reduce_sum(p * weight, axis=1) / tf.maximum(count, 1.0) for p in od]
        denominator = tf.maximum(count - 1.0, 1.0)
        cov = [[(tf.reduce_sum(od[i] * od[j] * weight, axis=1) - count * mean[i] * mean[j]) / denominator
                for j in range(3)] for i in range(3)]
        return stained, count, tf.stack([tf.stack(row, axis=-1) for row in cov], axis=1)

    @staticmethod
    def _dot(planes, vector):
        """sum_c planes[c] * vector[:, c], per tile: planes 3 x [B, N], vector [B, 3] -> [B, N]."""
        return planes[0] * vector[:, 0:1] + planes[1] * vector[:, 1:2] + planes[2] * vector[:, 2:3]

    def _project_fn(self, images, plane):
        od = self._od_planes(images)
        return self._dot(od, plane[:, :, 0]), self._dot(od, plane[:, :, 1])

    @staticmethod
    def _signed_tails_fn(phi, stained):
        """[2B, N]: the stained pixels' angles, then their negatives (-inf elsewhere): one top_k
        call then gives both tails, the 100-alpha percentile's and the alpha percentile's."""
        fill = tf.constant(-np.inf, phi.dtype)
        return tf.concat([tf.where(stained, phi, fill), tf.where(stained, -phi, fill)], axis=0)

    def _concentrations_fn(self, images, plane, min_phi, max_phi):
        v_min = plane[:, :, 0] * tf.cos(min_phi)[:, None] + plane[:, :, 1] * tf.sin(min_phi)[:, None]
        v_max = plane[:, :, 0] * tf.cos(max_phi)[:, None] + plane[:, :, 1] * tf.sin(max_phi)[:, None]
        h_first = (v_min[:, 0] > v_max[:, 0])[:, None, None]  # H has the larger red OD
        he = tf.where(h_first, tf.stack([v_min, v_max], axis=-1), tf.stack([v_max, v_min], axis=-1))
        # Least squares of every pixel's OD on the two stain vectors (the reference's lstsq).
        pinv = tf.linalg.solve(tf.matmul(he, he, transpose_a=True), tf.transpose(he, [0, 2, 1]))  # [B, 2, 3]
        od = self._od_planes(images)
        return he, tf.stack([self._dot(od, pinv[:, 0]), self._dot(od, pinv[:, 1])], axis=1)  # [B, 2, N]

    def _compose_fn(self, images, conc, max_c, ok, weights):
        """Io * exp(-HERef . C2), > 255 -> 254, truncated to uint8; tiles not `ok` pass through.

        `weights` (a Python pair, static: as a tensor XLA's fusion runs 5x slower) keeps both stains
        (1, 1), or only H (1, 0) or E (0, 1).
        """
        scale = self._max_c_ref / max_c * tf.constant(weights, tf.float32)  # [B, 2]
        c_h, c_e = conc[:, 0] * scale[:, 0:1], conc[:, 1] * scale[:, 1:2]
        ref = self.config.he_ref
        channels = []
        for c in range(3):
            value = self.config.io * tf.exp(-(ref[c][0] * c_h + ref[c][1] * c_e))
            channels.append(tf.where(value > 255.0, 254.0, value))
        out = tf.cast(tf.stack(channels, axis=-1), tf.uint8)  # float -> uint8 truncates, like numpy
        out = tf.reshape(out, [-1, images.shape[1], images.shape[2], 3])  # static: XLA fuses it
        return tf.where(ok[:, None, None, None], out, images)

    def estimate(self, images):
        """Per-tile H&E vectors [B, 3, 2], concentrations [B, 2, N], 99th-percentile concentrations
        [B, 2], and whether the estimate is usable [B]."""
        cfg = self.config
        stained, count, cov = self._stats(images)
        _, eigvecs = tf.linalg.eigh(tf.cast(cov, tf.float64))
        plane = tf.cast(eigvecs[:, :, 1:3], tf.float32)  # the two largest, ascending like numpy
        p0, p1 = self._project(images, plane)
        phi = tf.math.atan2(p1, p0)  # TensorFlow's kernel: faster on CPU than XLA's
        n_pixels = phi.shape[1]
        k = max(_tail_k(n_pixels, cfg.alpha), _tail_k(n_pixels, 100.0 - cfg.alpha))
        top = tf.math.top_k(self._signed_tails(phi, stained), k=k).values
        batch = tf.shape(phi)[0]
        n = tf.cast(count, tf.int32)
        max_phi = _percentile_from_top(top[:batch], n, 100.0 - cfg.alpha)
        min_phi = _percentile_from_top(top[batch:], n, cfg.alpha)
        he, conc = self._concentrations(images, plane, min_phi, max_phi)
        flat = tf.reshape(conc, [2 * batch, n_pixels])  # every pixel counts here, as in the reference
        top_c = tf.math.top_k(flat, k=_tail_k(n_pixels, 99.0)).values
        max_c = tf.reshape(_percentile_from_top(top_c, tf.fill([2 * batch], n_pixels), 99.0), [batch, 2])
        ok = (count >= tf.maximum(cfg.min_stained_fraction * float(n_pixels), 3.0)) & tf.reduce_all(max_c > 0, axis=1)
        ok &= tf.reduce_all(tf.math.is_finite(he), axis=[1, 2]) & tf.reduce_all(tf.math.is_finite(max_c), axis=1)
        # Uniform tiles (blank glass, black, one flat colour) give two identical 'stain' vectors and
        # a singular least squares: require them to differ (sin^2 of their angle, as they are unit).
        gram = tf.matmul(he, he, transpose_a=True)
        ok &= gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] ** 2 > 1e-4
        return he, conc, max_c, ok

    def _normalise_fn(self, images):
        _, conc, max_c, ok = self.estimate(images)
        safe_max_c = tf.where(ok[:, None], max_c, tf.ones_like(max_c))
        safe_conc = tf.where(ok[:, None, None], conc, tf.zeros_like(conc))
        return self._compose(images, safe_conc, safe_max_c, ok, (1.0, 1.0)), ok

    def components(self, images):
        """The normalised image and the H-only and E-only images (the reference's Inorm, H, E)."""
        images = tf.convert_to_tensor(images, tf.uint8)
        _, conc, max_c, ok = self.estimate(images)
        safe_max_c = tf.where(ok[:, None], max_c, tf.ones_like(max_c))
        safe_conc = tf.where(ok[:, None, None], conc, tf.zeros_like(conc))
        out = [self._compose(images, safe_conc, safe_max_c, ok, w) for w in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0))]
        return out[0], ok, out[1], out[2]


def macenko_normalise(images, config: StainConfig = StainConfig(), components: bool = False):
    """Normalise a batch of RGB tiles [B, H, W, 3] uint8 to the config's reference stain.

    Returns (normalised uint8 [B, H, W, 3], normalised bool [B]); tiles with fewer stained pixels
    than `config.min_stained_fraction`, or whose estimate is not finite, come back unchanged with
    False. With `components=True` also returns the H-only and E-only images (the reference's H, E).
    For many batches build one `Macenko(config)` and call it (this compiles on every call).
    """
    macenko = Macenko(config)
    return macenko.components(images) if components else macenko(images)


def fit_macenko_targets(image: np.ndarray, config: StainConfig = StainConfig()) -> StainConfig:
    """A StainConfig whose targets (HERef, maxCRef) are fitted to a reference RGB image."""
    he, _, max_c, ok = Macenko(config).estimate(tf.convert_to_tensor(image[None], tf.uint8))
    if not bool(ok[0]):
        raise ValueError("the reference image has too few stained pixels to fit Macenko targets to")
    he_ref = tuple(tuple(float(v) for v in row) for row in he[0].numpy())
    max_c = max_c[0].numpy()
    from dataclasses import replace

    return replace(config, he_ref=he_ref, max_c_ref=(float(max_c[0]), float(max_c[1])))


# --- the pipeline's normaliser --------------------------------------------------------------------


def make_normaliser(config: StainConfig):
    """A function [B, H, W, 3] uint8 -> (uint8 images, bool normalised [B]) for tf.data.map.

    `macenko` runs as TensorFlow ops; the staintools methods run through tf.numpy_function
    (slow, CPU only, for comparison); `none` passes tiles through.
    """
    if config.method == "none":
        def passthrough(images):
            images = tf.convert_to_tensor(images, tf.uint8)
            return images, tf.ones(tf.shape(images)[:1], tf.bool)
        return passthrough
    if config.method == "macenko":
        return Macenko(config)
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
    normaliser.fit(np.array(reference))  # staintools writes into its inputs: always hand it copies

    def normalise_one(tile: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            out = normaliser.transform(np.array(tile))
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
