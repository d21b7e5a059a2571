"""Macenko in TensorFlow against the reference implementation, staintools, and bad tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hist2rna_tf.config import PAPER_HE_REF, StainConfig
from hist2rna_tf.demo.cohort import real_tiles
from hist2rna_tf.extract.stain.macenko import Macenko, macenko_normalise, stained_value_limit
from hist2rna_tf.extract.stain.normalisers import fit_macenko_targets, make_normaliser


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _authors_macenko(img: np.ndarray) -> np.ndarray:
    """The hist2RNA authors' normaliser, transcribed line for line from raktim-mondol/hist2RNA
    `color_normalizer.py` (MacenkoColorNormalization.__call__, defaults; MIT, commit 33fbe02), numpy
    only (their file also imports cv2 and returns a PIL image). Checked against their own output below."""
    io, alpha, beta = 240, 1, 0.15
    he_ref = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
    max_c_ref = np.array([1.9705, 1.0308])
    h, w, _ = img.shape
    img = img.reshape((-1, 3))
    od = -np.log10((img.astype(np.float64) + 1) / io)
    od_hat = od[~np.any(od < beta, axis=1)]
    _, eigvecs = np.linalg.eigh(np.cov(od_hat.T))
    t_hat = od_hat.dot(eigvecs[:, 1:3])
    phi = np.arctan2(t_hat[:, 1], t_hat[:, 0])
    min_phi, max_phi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v_min = eigvecs[:, 1:3].dot(np.array([(np.cos(min_phi), np.sin(min_phi))]).T)
    v_max = eigvecs[:, 1:3].dot(np.array([(np.cos(max_phi), np.sin(max_phi))]).T)
    he = np.array((v_min[:, 0], v_max[:, 0])).T if v_min[0] > v_max[0] else np.array((v_max[:, 0], v_min[:, 0])).T
    c = np.linalg.lstsq(he, np.reshape(od, (-1, 3)).T, rcond=None)[0]
    max_c = np.array([np.percentile(c[0, :], 99), np.percentile(c[1, :], 99)])
    c2 = np.divide(c, np.divide(max_c, max_c_ref)[:, np.newaxis])
    inorm = np.multiply(io, np.exp(-he_ref.dot(c2)))
    inorm[inorm > 255] = 254
    return np.reshape(inorm.T, (h, w, 3)).astype(np.uint8)


def _within_one(ours, reference) -> float:
    """The share of pixels whose every channel is within 1 grey level."""
    return float((np.abs(np.asarray(ours).astype(int) - np.asarray(reference).astype(int)) <= 1).all(axis=-1).mean())


def test_default_is_the_authors_normaliser(reference_data):
    """The default `macenko` reproduces the hist2RNA authors' own normaliser (log10 optical density)
    on their output for the reference input, within 1 grey level on >= 99% of pixels; HEnorm's
    natural-log output is far from it (34 grey levels on average), so the test tells them apart."""
    stain = reference_data / "stain"
    image, expected = _rgb(stain / "macenko_input.png"), _rgb(stain / "macenko_expected_authors.png")
    assert StainConfig().method == "macenko"
    out, ok = macenko_normalise(image[None])
    assert bool(ok[0])
    assert _within_one(out[0], expected) >= 0.99
    assert _within_one(_authors_macenko(image), expected) >= 0.999  # the transcription below is theirs
    henorm = _rgb(stain / "macenko_expected.png")
    assert np.abs(henorm.astype(int) - expected.astype(int)).mean() > 20


def test_default_matches_the_authors_normaliser_tile_by_tile():
    """The pipeline normalises 224-px tiles one estimate each, as the authors' pipeline did: every
    shipped TCGA tile within 1 grey level of their normaliser on >= 99% of pixels, in one batch."""
    tiles = np.stack(real_tiles()[0])
    out, ok = Macenko(StainConfig())(tiles)
    assert ok.numpy().all()
    for i, tile in enumerate(tiles):
        reference = _authors_macenko(tile)
        assert _within_one(out[i], reference) >= 0.99, f"tile {i}: {_within_one(out[i], reference):.4f}"
    henorm, _ = Macenko(StainConfig(method="macenko-henorm"))(tiles)
    apart = [np.abs(henorm[i].numpy().astype(int) - _authors_macenko(t).astype(int)).mean() for i, t in enumerate(tiles)]
    assert np.median(apart) > 3  # the other variant is not within reach of this test


def test_henorm_variant_matches_its_reference_implementation_output(reference_data):
    """`macenko-henorm` (HEnorm_python, natural log, fixed targets): Inorm, H and E within 1 grey level."""
    stain = reference_data / "stain"
    out, ok, h_only, e_only = macenko_normalise(_rgb(stain / "macenko_input.png")[None],
                                                StainConfig(method="macenko-henorm"), components=True)
    assert bool(ok[0])
    for ours, name in ((out, "macenko_expected.png"), (h_only, "macenko_expected_H.png"),
                       (e_only, "macenko_expected_E.png")):
        within_one = _within_one(ours[0], _rgb(stain / name))
        assert within_one >= 0.99, f"{name}: only {within_one:.4f} of pixels within 1 grey level"


@pytest.mark.parametrize("method", ["macenko", "macenko-henorm"])
def test_stained_pixels_are_the_references(method):
    """A pixel counts as stained exactly when the reference's float64 OD test keeps it, in its base."""
    config = StainConfig(method=method)
    log = np.log10 if method == "macenko" else np.log
    values = np.arange(256)
    stained = (-log((values + 1.0) / config.io) >= config.beta)
    assert stained_value_limit(config) == values[stained].max() == (168 if method == "macenko" else 205)


def test_stain_covariance_matches_the_reference_float64():
    """The reference takes np.cov of the stained pixels' OD in float64; our float32 sums stay within
    1e-5 of it (sequential float32 sums were 3e-5 to 7e-5 off)."""
    tiles = np.stack(real_tiles()[0][:12])
    stained, count, cov = Macenko(StainConfig(method="macenko-henorm"))._stats(tiles)
    for tile, ours, n in zip(tiles, cov.numpy(), count.numpy()):
        od = -np.log((tile.reshape(-1, 3).astype(np.float64) + 1) / 240)  # HEnorm's OD, so one scale
        od = od[~np.any(od < 0.15, axis=1)]
        assert n == len(od)
        reference = np.cov(od.T)
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


def _rows_with_ties(rng, n_rows: int, n: int) -> np.ndarray:
    """Random rows, some with many tied values (as pixels of one colour give)."""
    rows = rng.normal(size=(n_rows, n)).astype(np.float32)
    rows[1::3] = np.round(rows[1::3], 1)  # ~60 distinct values
    rows[2::3, : n // 2] = rows[2::3, :1]  # half of the row one value
    return rows


@pytest.mark.parametrize("selection", ["nth_element", "top_k"])  # the CPU's kernel; the GPU's
@pytest.mark.parametrize("side", [(224, 224), (37, 41)])  # a tile; a small odd-sized image
def test_angle_percentiles_equal_numpy(side, selection):
    """The selection-based percentiles are numpy's, exactly, for any number of stained pixels."""
    rng = np.random.default_rng(0)
    n = side[0] * side[1]
    phi = _rows_with_ties(rng, 9, n)
    counts = [n, n - 1, n // 2, 700, 33, 2, 1, n - 5, 3 * n // 4]
    stained = np.zeros((9, n), bool)
    for row, count in enumerate(counts):
        stained[row, rng.permutation(n)[:count]] = True
    macenko = Macenko(selection=selection)
    low, high = macenko.angle_percentiles(phi, stained, stained.sum(1).astype(np.float32))
    for row in range(9):
        expected = np.percentile(phi[row][stained[row]], [1.0, 99.0])
        np.testing.assert_allclose([low[row], high[row]], expected, rtol=1e-6, atol=1e-6, err_msg=f"row {row}")


@pytest.mark.parametrize("selection", ["nth_element", "top_k"])
@pytest.mark.parametrize("side", [(224, 224), (100, 101)])
def test_concentration_percentiles_equal_numpy(side, selection):
    rng = np.random.default_rng(1)
    conc = _rows_with_ties(rng, 6, side[0] * side[1]).reshape(3, 2, -1)
    ours = Macenko(selection=selection).concentration_percentiles(conc).numpy()
    np.testing.assert_allclose(ours, np.percentile(conc, 99.0, axis=2), rtol=1e-6, atol=1e-6)


def test_stages_run_one_by_one_give_the_normalised_tiles():
    """Macenko.stages (what the benchmark times step by step) chains to the same pixels as the
    normaliser in one call."""
    tiles = np.stack(real_tiles()[0][:4])
    macenko = Macenko()
    steps = list(macenko.stages(tiles))
    assert [name for name, _ in steps] == ["OD and covariance", "projections and angles", "angle percentiles",
                                           "concentrations", "concentration percentiles", "recomposition"]
    normalised, ok = macenko(tiles)
    assert ok.numpy().all()
    np.testing.assert_array_equal(steps[-1][1]().numpy(), normalised.numpy())


def test_batch_equals_one_at_a_time():
    """Each tile is normalised with its own stain estimate: batching changes nothing."""
    tiles, _ = real_tiles()
    batch = np.stack(tiles[:6])
    macenko = Macenko()
    together, _ = macenko(batch)
    for i in range(len(batch)):
        alone, _ = macenko(batch[i:i + 1])
        assert np.abs(together[i].numpy().astype(int) - alone[0].numpy().astype(int)).max() <= 1


@pytest.mark.parametrize("method, most", [("macenko", 0.8), ("macenko-henorm", 0.4)])
def test_output_actually_changes_the_stain(method, most):
    """A stain cast is reduced: two casts of each shipped tile come closer after normalising (median
    over the tiles). The authors' log10 variant keeps fewer pixels as stained, so it removes less
    (measured: median 0.68 of the difference left, against 0.25 for HEnorm's natural-log variant)."""
    macenko, left = Macenko(StainConfig(method=method)), []
    for tile in real_tiles()[0]:
        od = -np.log((tile.astype(np.float32) + 1) / 256)
        casts = np.stack([np.clip(256 * np.exp(-od * g) - 1, 0, 255).astype(np.uint8)
                          for g in ((0.75, 1.0, 1.2), (1.25, 0.9, 0.8))])
        out, ok = macenko(casts)
        assert ok.numpy().all()
        before = np.abs(casts[0].astype(int) - casts[1].astype(int)).mean()
        left.append(np.abs(out[0].numpy().astype(int) - out[1].numpy().astype(int)).mean() / before)
    assert np.median(left) < most, np.round(left, 2)


@pytest.mark.parametrize("kind", ["blank", "black", "pen", "noise-free grey"])
def test_tiles_without_stain_pass_through_unchanged(kind):
    """Background, pen or blank tiles cannot be estimated: unchanged, flagged, never NaN."""
    tile = {"blank": np.full((224, 224, 3), 245, np.uint8),
            "black": np.zeros((224, 224, 3), np.uint8),
            "pen": np.tile(np.array([30, 160, 60], np.uint8), (224, 224, 1)),
            "noise-free grey": np.full((224, 224, 3), 120, np.uint8)}[kind]
    good = real_tiles()[0][0]
    out, ok = Macenko()(np.stack([tile, good]))
    assert not bool(ok[0])
    assert (out[0].numpy() == tile).all()
    assert bool(ok[1])  # its neighbour in the batch is unaffected


def test_degenerate_stain_never_yields_nan_or_inf():
    rng = np.random.default_rng(0)
    tiles = np.stack([np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8),
                      rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)])
    out, ok = Macenko()(tiles)
    assert out.dtype == np.uint8 and out.shape == tiles.shape
    assert ok.numpy().tolist() == [False, False, True]
    assert (out.numpy()[:2] == tiles[:2]).all()


def test_fitted_targets_recover_the_reference_stain(reference_data):
    """Fitting targets to each variant's own normalised output recovers its HERef."""
    stain = reference_data / "stain"
    for method, name in (("macenko", "macenko_expected_authors.png"), ("macenko-henorm", "macenko_expected.png")):
        fitted = fit_macenko_targets(_rgb(stain / name), StainConfig(method=method))
        cosine = (np.asarray(fitted.he_ref) * np.asarray(PAPER_HE_REF)).sum(0) / (
            np.linalg.norm(fitted.he_ref, axis=0) * np.linalg.norm(PAPER_HE_REF, axis=0))
        assert (cosine > 0.99).all(), (method, cosine)


@pytest.mark.parametrize("method, least", [("macenko-henorm", 0.99), ("macenko", 0.96)])
def test_stain_vectors_agree_with_staintools(reference_data, method, least):
    """Independent reference: staintools' Macenko stain matrix (its own tissue mask and natural-log
    OD, so closer to HEnorm's variant; the authors' stricter stained-pixel test turns an E vector
    by up to 13 degrees on these images)."""
    import staintools
    from staintools.stain_extraction.macenko_stain_extractor import MacenkoStainExtractor

    images = [np.array(t) for t in real_tiles()[0][:5]] + [_rgb(reference_data / "stain" / "macenko_input.png")]
    macenko = Macenko(StainConfig(method=method))
    for image in images:
        theirs = MacenkoStainExtractor.get_stain_matrix(np.array(image))  # rows: H, E (unit)
        he, _, _, ok = macenko.estimate(image[None])
        ours = he[0].numpy().T
        ours /= np.linalg.norm(ours, axis=1, keepdims=True)
        assert bool(ok[0])
        assert ((theirs * ours).sum(axis=1) > least).all(), (theirs * ours).sum(axis=1)
    assert staintools.__name__


@pytest.mark.parametrize("method", ["staintools-macenko", "staintools-vahadane", "none"])
def test_other_backends_return_uint8_batches(method):
    tiles = np.stack(real_tiles()[0][:2] + [np.full((224, 224, 3), 250, np.uint8)])
    out, ok = make_normaliser(StainConfig(method=method))(tiles)
    assert out.shape == tiles.shape and out.numpy().dtype == np.uint8
    assert ok.numpy()[:2].all()
    if method == "none":
        assert (out.numpy() == tiles).all()
    else:
        assert not (out.numpy()[:2] == tiles[:2]).all()


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="StainConfig.method='reinhard'.: takes one of 'macenko', 'macenko-henorm'"):
        make_normaliser(StainConfig(method="reinhard"))
