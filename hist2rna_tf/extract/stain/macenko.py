"""Macenko stain normalisation in TensorFlow ops (batched, inside tf.data or on the GPU step).

The paper's "vector-based colour normalisation [21]" is Macenko et al. 2009. The hist2RNA authors
ran their own normaliser (raktim-mondol/hist2RNA `color_normalizer.py`, `MacenkoColorNormalization`)
tile by tile with fixed targets (Io=240, alpha=1, beta=0.15, HERef, maxCRef:
`config.PAPER_HE_REF`, `config.PAPER_MAX_C_REF`). `Macenko` reproduces it step for step on a batch:

  OD = -log10((I+1)/Io); keep pixels with every OD >= beta; eigenvectors of their covariance;
  angles of the projections onto the top two; the alpha / 100-alpha percentile angles give the
  H and E vectors (H: the one with larger red OD); concentrations by least squares; scale each
  so its 99th percentile matches maxCRef; recompose Io * exp(-HERef C); clip > 255 to 254;
  truncate to uint8.

Two variants (`StainConfig.method`): `macenko`, the authors' (log10 optical density), and
`macenko-henorm`, the HEnorm_python reference implementation they adapted (natural log). The base
matters in one place only: with the same beta, log10 keeps fewer pixels as stained (0.15 in log10
is 0.345 in natural-log units), which changes the stain vectors. Everything after the threshold is
base-independent (angles are; concentrations are rescaled to maxCRef before the natural exp), so
both variants compute in natural-log OD and differ only in which channel values count as stained.

Percentiles use numpy's linear interpolation between the two order statistics around the
position, found exactly by selection on the runs of each row that hold its largest values (both
angle tails in one call, both concentrations in another). The selection is NthElement on a CPU (no
sort, no heap: ~1.7x faster than `top_k` of the tail) and `top_k` on a GPU (NthElement has no GPU
kernel: the batch would go back to the CPU for it); both are exact, so both give the same bits
(`SELECTIONS`; tested). The pixel stages are XLA-compiled (on a GPU too). A tile with too few
stained pixels (background, blank, pen) cannot be estimated: it passes through unchanged and is
flagged, never NaN.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from hist2rna_tf.config import MACENKO_OD_LOG, StainConfig

log = logging.getLogger(__name__)


def _pad_width(n_total: int, q: float) -> int:
    """A bound on 1 + the descending rank `_descending_rank` can give for rows of <= n_total values."""
    tail = (100.0 - q) if q >= 50.0 else q
    return int(min(np.ceil(tail / 100.0 * (int(n_total) - 1)) + 2, int(n_total) + 1))


def _descending_rank(n: tf.Tensor, q: float):
    """Where numpy's linear q-th percentile of each row's `n` valid values lies, in the descending
    order of the SIGNED values (the values for q >= 50, their negatives for q < 50): the first of
    the two ranks it interpolates between, d [R] int32 (the other is d + 1); whether it needs both
    (else only d); and the fraction."""
    n = tf.cast(tf.maximum(n, 1), tf.float64)  # float64 positions, like numpy's
    pos = (q / 100.0) * (n - 1)  # position in the ascending order
    lo, hi = tf.floor(pos), tf.math.ceil(pos)
    first = (n - 1 - hi) if q >= 50.0 else lo  # ascending i is descending n-1-i; negated: i itself
    return tf.cast(first, tf.int32), hi > lo, tf.cast(pos - lo, tf.float32)


def _percentile_from_pair(v_d, v_next, two, frac, q: float):
    """numpy.percentile (linear) from the signed values at descending ranks d and d + 1."""
    v_next = tf.where(two, v_next, v_d)
    v_d = tf.where(tf.math.is_finite(v_d), v_d, tf.zeros_like(v_d))  # rows with no valid value:
    v_next = tf.where(tf.math.is_finite(v_next), v_next, tf.zeros_like(v_next))  # garbage, not NaN
    a_lo, a_hi = (v_next, v_d) if q >= 50.0 else (-v_d, -v_next)
    return a_lo + (a_hi - a_lo) * frac


def _row_sums(values):
    """reduce_sum over axis 1 of [B, N], as XLA runs it fast on CPU: first the elementwise sum of 8
    contiguous slices (one vectorised loop), then a short reduction. A plain row reduction
    compiles to one sequential chain of additions per row (2x slower for the stats stage, and its
    covariances 30x further from the reference's float64 ones: ~4e-5 against ~1e-6)."""
    length = values.shape[1] // 8
    head = tf.add_n([values[:, i * length:(i + 1) * length] for i in range(8)])
    return tf.reduce_sum(head, axis=1) + tf.reduce_sum(values[:, 8 * length:], axis=1)


_CHUNK = 16  # values per run in `_largest_chunks`


def _nth_largest_cpu(values, n: int):
    """The n-th largest (0-based) of each row of [R, M], by NthElement (CPU kernel only)."""
    return tf.raw_ops.NthElement(input=values, n=n, reverse=True)


def _nth_largest_gpu(values, n: int):
    """The same by top_k, which has a GPU kernel."""
    return tf.math.top_k(values, k=n + 1, sorted=True).values[:, n]


# How the percentiles select order statistics, by the device that runs the normaliser.
SELECTIONS = {"nth_element": _nth_largest_cpu, "top_k": _nth_largest_gpu}


def _first_of_ties(maxima, boundary, n_keep: int):
    """Per row, the chunks whose maxima exceed the boundary, then as many tied at it as fill n_keep."""
    above, tied = maxima > boundary, maxima == boundary
    room = n_keep - tf.reduce_sum(tf.cast(above, tf.int32), axis=1, keepdims=True)
    return above | (tied & (tf.cumsum(tf.cast(tied, tf.int32), axis=1) <= room))


def _largest_chunks(signed, rank, nth_largest, chunk: int = _CHUNK):
    """[R, (rank + 1) * chunk]: whole `chunk`-long runs of each row of `signed` [R, M] that hold
    its rank + 1 largest values (rank: a Python int), so exact order statistics up to `rank` can
    be taken on ~1.6% of the row. Those values lie in the chunks whose maxima are the rank + 1
    largest (a value >= the (rank+1)-th largest lies in a chunk whose maximum is too); ties at the
    boundary are taken in row order, so every row keeps exactly rank + 1 chunks, and no order
    statistic up to `rank` changes. Rows too short to gain come back whole."""
    rows, length = tf.shape(signed)[0], signed.shape[1]
    if length % chunk:
        fill = tf.fill([rows, chunk - length % chunk], tf.constant(-np.inf, signed.dtype))
        signed = tf.concat([signed, fill], axis=1)
    n_chunks = signed.shape[1] // chunk
    if 4 * (rank + 1) > n_chunks:  # the chunks kept would be much of the row (or all of it)
        return signed
    chunks = tf.reshape(signed, [rows, n_chunks, chunk])
    maxima = tf.reduce_max(chunks, axis=2)
    boundary = nth_largest(maxima, rank)[:, None]
    keep = maxima >= boundary
    exact = tf.reduce_all(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1) == rank + 1)
    keep = tf.cond(exact, lambda: keep, lambda: _first_of_ties(maxima, boundary, rank + 1))  # ties: rare
    return tf.reshape(tf.gather_nd(chunks, tf.where(keep)), [rows, (rank + 1) * chunk])


def _order_statistics(signed, d, padding, rank, nth_largest=_nth_largest_cpu):
    """The values at descending ranks d and d + 1 [R] of each row of `signed` [R, M] (invalid entries
    -inf), exactly. `signed` carries `padding` [R] extra +inf entries per row, chosen so that rank
    d + 1 of the row is rank `rank` (one scalar) of the padded row: then one selection
    (`nth_largest`; NthElement is O(M), no sort, no heap), on the chunks that hold the largest
    values, serves every row; the next value above it is the smallest of those greater."""
    top = _largest_chunks(signed, rank, nth_largest)
    v_next = nth_largest(top, rank)
    above = top > v_next[:, None]
    count = tf.reduce_sum(tf.cast(above, tf.int32), axis=1) - padding  # the padding's +inf excluded
    smallest_above = tf.reduce_min(tf.where(above, top, tf.constant(np.inf, top.dtype)), axis=1)
    # d + 1 values above v_next: rank d holds the smallest of them; fewer: v_next is tied at rank d.
    return tf.where(count == d + 1, smallest_above, v_next), v_next


def stained_value_limit(config: StainConfig) -> int:
    """The largest channel value (0-255) whose optical density reaches beta in the config's variant;
    a pixel is stained when each of its channels is at most this (-1: none can be). Evaluated as
    the reference evaluates it (float64, its own logarithm), so the stained pixels are exactly its."""
    log = getattr(np, MACENKO_OD_LOG[config.method])
    od = -log((np.arange(256, dtype=np.float64) + 1.0) / config.io)  # decreasing in the value
    stained = np.flatnonzero(od >= config.beta)
    return int(stained.max()) if stained.size else -1


class Macenko:
    """The authors' Macenko (or HEnorm's, by `config.method`) as compiled TensorFlow stages.

    Pixel-wise arithmetic runs in XLA-fused stages (each reads the uint8 tiles once, so OD is never
    stored); atan2 and the selections use TensorFlow's own kernels, much faster on CPU than XLA's.
    Call it on uint8 [B, H, W, 3] (H, W static) inside or outside tf.data. `selection` (a key of
    SELECTIONS) picks the order-statistic kernel: None for the one of the device TensorFlow places
    ops on (top_k when there is a GPU).
    """

    def __init__(self, config: StainConfig = StainConfig(), selection: str | None = None):
        if not config.is_macenko:
            raise ValueError(f"Macenko needs a Macenko stain method (macenko, macenko-henorm), not {config.method!r}")
        if selection is None:
            selection = "top_k" if tf.config.list_logical_devices("GPU") else "nth_element"
        self.config, self.selection = config, selection
        self._nth_largest = SELECTIONS[selection]
        self._stained_limit = stained_value_limit(config)
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
    @staticmethod
    def _channels(images):
        """uint8 [B, H, W, 3] -> three [B, H*W] float32 channel planes."""
        if images.shape[1] is None or images.shape[2] is None:
            raise ValueError("Macenko needs images of a known height and width (static shapes)")
        flat = tf.reshape(images, [tf.shape(images)[0], images.shape[1] * images.shape[2], 3])
        return [tf.cast(flat[..., c], tf.float32) for c in range(3)]

    def _od_planes(self, images):
        """uint8 [B, H, W, 3] -> three [B, H*W] optical-density planes, -ln((I+1)/Io) (natural log in
        both variants: the log10 of the authors' is this / ln 10, a factor nothing after the
        stained-pixel threshold depends on)."""
        return [-tf.math.log((c + 1.0) / self.config.io) for c in self._channels(images)]

    def _stats_fn(self, images):
        channels = self._channels(images)
        limit = float(self._stained_limit)  # the reference keeps pixels with no OD < beta
        stained = (channels[0] <= limit) & (channels[1] <= limit) & (channels[2] <= limit)
        od = [-tf.math.log((c + 1.0) / self.config.io) for c in channels]
        weight = tf.cast(stained, tf.float32)
        count = _row_sums(weight)
        mean = [_row_sums(p * weight) / tf.maximum(count, 1.0) for p in od]
        denominator = tf.maximum(count - 1.0, 1.0)
        upper = {(i, j): (_row_sums(od[i] * od[j] * weight) - count * mean[i] * mean[j]) / denominator
                 for i in range(3) for j in range(i, 3)}
        cov = [[upper[min(i, j), max(i, j)] for j in range(3)] for i in range(3)]  # symmetric
        return stained, count, tf.stack([tf.stack(row, axis=-1) for row in cov], axis=1)

    @staticmethod
    def _dot(planes, vector):
        """sum_c planes[c] * vector[:, c], per tile: planes 3 x [B, N], vector [B, 3] -> [B, N]."""
        return planes[0] * vector[:, 0:1] + planes[1] * vector[:, 1:2] + planes[2] * vector[:, 2:3]

    def _project_fn(self, images, plane):
        od = self._od_planes(images)
        return self._dot(od, plane[:, :, 0]), self._dot(od, plane[:, :, 1])

    def _angle_pad_width(self, n_pixels: int) -> int:
        """Padding for the angle rows, enough for either tail, rounded so rows split into chunks."""
        width = max(_pad_width(n_pixels, self.config.alpha), _pad_width(n_pixels, 100.0 - self.config.alpha))
        return width + (-(n_pixels + width)) % _CHUNK

    @staticmethod
    def _signed_tails_fn(phi, stained, padding, width: int):
        """[2B, N + width]: the stained pixels' angles, then their negatives (-inf elsewhere), each
        row followed by its `padding` +inf entries (then -inf up to width): the rows
        `_order_statistics` takes for the 100-alpha and the alpha percentile."""
        fill = tf.constant(-np.inf, phi.dtype)
        signed = tf.concat([tf.where(stained, phi, fill), tf.where(stained, -phi, fill)], axis=0)
        pad = tf.where(tf.range(width)[None, :] < padding[:, None], np.inf, -np.inf)
        return tf.concat([signed, tf.cast(pad, phi.dtype)], axis=1)

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
        """Io * exp(-HERef . C2), > 255 -> 254, truncated to uint8; tiles not `ok` pass through
        (whatever their estimate held, NaN included: it is computed, then not selected).

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

    def angle_percentiles(self, phi, stained, count):
        """numpy's alpha and 100-alpha percentiles [B] of each row's stained angles: phi [B, N]
        float32, stained [B, N] bool, count [B] stained pixels (float or int)."""
        alpha, batch = self.config.alpha, tf.shape(phi)[0]
        n = tf.cast(count, tf.int32)
        d_max, two_max, frac_max = _descending_rank(n, 100.0 - alpha)
        d_min, two_min, frac_min = _descending_rank(n, alpha)
        d = tf.concat([d_max, d_min], axis=0)
        width = self._angle_pad_width(phi.shape[1])
        padding = width - (d + 1)  # every row's rank d + 1 becomes rank `width` of its padded row
        v_d, v_next = _order_statistics(self._signed_tails(phi, stained, padding, width), d, padding, width,
                                        self._nth_largest)
        min_phi = _percentile_from_pair(v_d[batch:], v_next[batch:], two_min, frac_min, alpha)
        max_phi = _percentile_from_pair(v_d[:batch], v_next[:batch], two_max, frac_max, 100.0 - alpha)
        return min_phi, max_phi

    def concentration_percentiles(self, conc):
        """numpy's 99th percentiles [B, 2] of concentrations [B, 2, N] over every pixel, as in the
        reference (not only the stained ones)."""
        batch, n_pixels = tf.shape(conc)[0], conc.shape[2]
        with tf.init_scope():  # every row has n_pixels values: Python numbers, so shapes stay static
            d, two, frac = (t.numpy()[0].item() for t in _descending_rank(tf.constant([n_pixels]), 99.0))
        rows = tf.fill([2 * batch], 0)
        flat = tf.reshape(conc, [2 * batch, n_pixels])
        v_d, v_next = _order_statistics(flat, rows + d, rows, d + 1, self._nth_largest)
        return tf.reshape(_percentile_from_pair(v_d, v_next, two, frac, 99.0), [batch, 2])

    def estimate(self, images):
        """Per-tile H&E vectors [B, 3, 2], concentrations [B, 2, N], 99th-percentile concentrations
        [B, 2], and whether the estimate is usable [B]."""
        cfg = self.config
        stained, count, cov = self._stats(images)
        _, eigvecs = tf.linalg.eigh(tf.cast(cov, tf.float64))
        plane = tf.cast(eigvecs[:, :, 1:3], tf.float32)  # the two largest, ascending like numpy
        p0, p1 = self._project(images, plane)
        phi = tf.math.atan2(p1, p0)  # TensorFlow's kernel: faster on CPU than XLA's
        min_phi, max_phi = self.angle_percentiles(phi, stained, count)
        he, conc = self._concentrations(images, plane, min_phi, max_phi)
        max_c = self.concentration_percentiles(conc)
        n_pixels = phi.shape[1]
        ok = (count >= tf.maximum(cfg.min_stained_fraction * float(n_pixels), 3.0)) & tf.reduce_all(max_c > 0, axis=1)
        ok &= tf.reduce_all(tf.math.is_finite(he), axis=[1, 2]) & tf.reduce_all(tf.math.is_finite(max_c), axis=1)
        # Uniform tiles (blank glass, black, one flat colour) give two identical 'stain' vectors and
        # a singular least squares: require them to differ (sin^2 of their angle, as they are unit).
        gram = tf.matmul(he, he, transpose_a=True)
        ok &= gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] ** 2 > 1e-4
        return he, conc, max_c, ok

    def stages(self, images):
        """The estimate and the recomposition as named steps, for timing them one by one (benchmarks):
        yields (name, step), `step()` running that step alone (compiled) on `images` and returning its
        output; the next step starts from it."""
        images = tf.convert_to_tensor(images, tf.uint8)
        step = lambda: self._stats(images)  # noqa: E731
        yield "OD and covariance", step
        stained, count, cov = step()
        plane = tf.cast(tf.linalg.eigh(tf.cast(cov, tf.float64))[1][:, :, 1:3], tf.float32)
        step = tf.function(lambda: tf.math.atan2(*reversed(self._project(images, plane))))
        yield "projections and angles", step
        phi = step()
        step = tf.function(lambda: self.angle_percentiles(phi, stained, count))
        yield "angle percentiles", step
        low, high = step()
        step = lambda: self._concentrations(images, plane, low, high)  # noqa: E731
        yield "concentrations", step
        _, conc = step()
        step = tf.function(lambda: self.concentration_percentiles(conc))
        yield "concentration percentiles", step
        max_c = step()
        ok = tf.ones([tf.shape(images)[0]], tf.bool)
        yield "recomposition", lambda: self._compose(images, conc, max_c, ok, (1.0, 1.0))

    def _normalise_fn(self, images):
        _, conc, max_c, ok = self.estimate(images)
        return self._compose(images, conc, max_c, ok, (1.0, 1.0)), ok

    def components(self, images):
        """The normalised image and the H-only and E-only images (the reference's Inorm, H, E)."""
        images = tf.convert_to_tensor(images, tf.uint8)
        _, conc, max_c, ok = self.estimate(images)
        out = [self._compose(images, conc, max_c, ok, w) for w in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0))]
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
