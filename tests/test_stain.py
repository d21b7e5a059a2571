"""Macenko in TensorFlow against the reference implementation, staintools, and bad tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hist2rna_tf.config import PAPER_HE_REF, StainConfig
from hist2rna_tf.demo import real_tiles
from hist2rna_tf.stain import Macenko, fit_macenko_targets, macenko_normalise, make_normaliser


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_matches_reference_implementation_output(shared_data):
    """The paper's normaliser (HEnorm_python, fixed targets): Inorm, H and E within 1 grey level."""
    stain = shared_data / "stain"
    out, ok, h_only, e_only = macenko_normalise(_rgb(stain / "macenko_input.png")[None], components=True)
    assert bool(ok[0])
    for ours, name in ((out, "macenko_expected.png"), (h_only, "macenko_expected_H.png"),
                       (e_only, "macenko_expected_E.png")):
        diff = np.abs(ours[0].numpy().astype(int) - _rgb(stain / name).astype(int))
        within_one = (diff <= 1).all(axis=-1).mean()
        assert within_one >= 0.99, f"{name}: only {within_one:.4f} of pixels within 1 grey level"


def test_stain_covariance_matches_the_reference_float64():
    """The reference takes np.cov of the stained pixels' OD in float64; our float32 sums stay within
    1e-5 of it (sequential float32 sums were 3e-5 to 7e-5 off)."""
    tiles = np.stack(real_tiles()[0][:12])
    stained, count, cov = Macenko()._stats(tiles)
    for tile, ours, n in zip(tiles, cov.numpy(), count.numpy()):
        od = -np.log((tile.reshape(-1, 3).astype(np.float64) + 1) / 240)
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


@pytest.mark.parametrize("side", [(224, 224), (37, 41)])  # a tile; a small odd-sized image
def test_angle_percentiles_equal_numpy(side):
    """The selection-based percentiles are numpy's, exactly, for any number of stained pixels."""
    rng = np.random.default_rng(0)
    n = side[0] * side[1]
    phi = _rows_with_ties(rng, 9, n)
    counts = [n, n - 1, n // 2, 700, 33, 2, 1, n - 5, 3 * n // 4]
    stained = np.zeros((9, n), bool)
    for row, count in enumerate(counts):
        stained[row, rng.permutation(n)[:count]] = True
    macenko = Macenko()
    low, high = macenko.angle_percentiles(phi, stained, stained.sum(1).astype(np.float32))
    for row in range(9):
        expected = np.percentile(phi[row][stained[row]], [1.0, 99.0])
        np.testing.assert_allclose([low[row], high[row]], expected, rtol=1e-6, atol=1e-6, err_msg=f"row {row}")


@pytest.mark.parametrize("side", [(224, 224), (100, 101)])
def test_concentration_percentiles_equal_numpy(side):
    rng = np.random.default_rng(1)
    conc = _rows_with_ties(rng, 6, side[0] * side[1]).reshape(3, 2, -1)
    ours = Macenko.concentration_percentiles(conc).numpy()
    np.testing.assert_allclose(ours, np.percentile(conc, 99.0, axis=2), rtol=1e-6, atol=1e-6)


def test_batch_equals_one_at_a_time():
    """Each tile is normalised with its own stain estimate: batching changes nothing."""
    tiles, _ = real_tiles()
    batch = np.stack(tiles[:6])
    macenko = Macenko()
    together, _ = macenko(batch)
    for i in range(len(batch)):
        alone, _ = macenko(batch[i:i + 1])
        assert np.abs(together[i].numpy().astype(int) - alone[0].numpy().astype(int)).max() <= 1


def test_output_actually_changes_the_stain():
    """A stain cast is largely removed: two casts of one tile become much closer after normalising."""
    tile = real_tiles()[0][3].astype(np.float32)
    od = -np.log((tile + 1) / 256)
    casts = [np.clip(256 * np.exp(-od * g) - 1, 0, 255).astype(np.uint8) for g in ((0.75, 1.0, 1.2), (1.25, 0.9, 0.8))]
    out, ok = Macenko()(np.stack(casts))
    assert ok.numpy().all()
    before = np.abs(casts[0].astype(int) - casts[1].astype(int)).mean()
    after = np.abs(out[0].numpy().astype(int) - out[1].numpy().astype(int)).mean()
    assert after < 0.5 * before


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


def test_fitted_targets_recover_the_reference_stain(shared_data):
    """Fitting targets to the reference's own normalised output recovers its HERef."""
    fitted = fit_macenko_targets(_rgb(shared_data / "stain" / "macenko_expected.png"))
    cosine = (np.asarray(fitted.he_ref) * np.asarray(PAPER_HE_REF)).sum(0) / (
        np.linalg.norm(fitted.he_ref, axis=0) * np.linalg.norm(PAPER_HE_REF, axis=0))
    assert (cosine > 0.99).all(), cosine


def test_stain_vectors_agree_with_staintools(shared_data):
    """Independent reference: staintools' Macenko stain matrix (its own tissue mask and OD)."""
    import staintools
    from staintools.stain_extraction.macenko_stain_extractor import MacenkoStainExtractor

    images = [np.array(t) for t in real_tiles()[0][:5]] + [_rgb(shared_data / "stain" / "macenko_input.png")]
    macenko = Macenko()
    for image in images:
        theirs = MacenkoStainExtractor.get_stain_matrix(np.array(image))  # rows: H, E (unit)
        he, _, _, ok = macenko.estimate(image[None])
        ours = he[0].numpy().T
        ours /= np.linalg.norm(ours, axis=1, keepdims=True)
        assert bool(ok[0])
        assert ((theirs * ours).sum(axis=1) > 0.99).all()
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
    with pytest.raises(ValueError, match="unknown stain method"):
        make_normaliser(StainConfig(method="reinhard"))
