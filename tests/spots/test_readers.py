"""Spatial samples in (spots/hest.py, spots/spaceranger.py): a HEST-1k sample as downloaded and a Space
Ranger folder read to the same spots, counts and pixel size; each bad input one SpotError naming the file
and the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.hest import read_hest_sample
from hist2rna_tf.spots.spaceranger import read_spaceranger

from spatial_samples import GENES, write_hest_sample, write_spaceranger


@pytest.fixture(scope="module")
def hest(tmp_path_factory):
    root = tmp_path_factory.mktemp("hest")
    return root, write_hest_sample(root)


def test_a_hest_sample_reads_as_written(hest):
    root, written = hest
    sample = read_hest_sample(root, "SYN1")
    assert sample.n_spots == len(written["centres"]) == 25 and sample.genes == tuple(GENES) and sample.mpp == 0.25
    np.testing.assert_array_equal(sample.barcodes, written["barcodes"])
    np.testing.assert_allclose(sample.centres_px, written["centres"])
    expression = sample.expression(["MKI67", "ESR1"])
    np.testing.assert_allclose(expression.to_numpy(), np.log1p(written["counts"].toarray()[:, [3, 0]]))
    assert list(expression.index[:1]) == [written["barcodes"][0]]
    total = sample.expression(normalize_total=1e4).to_numpy()
    np.testing.assert_allclose(np.expm1(total).sum(axis=1), 1e4)
    assert read_hest_sample(root, "SYN1", mpp=0.3).mpp == 0.3  # --mpp overrides the metadata


def test_a_space_ranger_folder_reads_as_the_same_sample(hest, tmp_path):
    root, written = hest
    image = root / "wsis" / "SYN1.tif"
    for old in (False, True):  # Space Ranger 2's tissue_positions.csv, 1.x's tissue_positions_list.csv
        folder = write_spaceranger(tmp_path / f"outs{old}", image, written, old_positions=old, extra_positions=4)
        sample = read_spaceranger(folder, image)
        hest_sample = read_hest_sample(root, "SYN1")
        np.testing.assert_array_equal(sample.barcodes, hest_sample.barcodes)
        np.testing.assert_allclose(sample.centres_px, hest_sample.centres_px, atol=0.5)  # Space Ranger's whole px
        assert (sample.counts != hest_sample.counts).nnz == 0 and sample.genes == hest_sample.genes
        assert sample.mpp == 0.25 and sample.spot_diameter_um == 55.0


def test_visium_hd_bins_read_as_spots_of_their_size(hest, tmp_path):
    """Visium HD: each bin of the chosen size a pseudo-spot (16 um unless --bin-um says), from its parquet
    positions; the pixel size its scale factors' microns_per_pixel; the binning in the sample's name and
    source; a bin size it lacks named with the ones it has."""
    from PIL import Image

    from spatial_samples import write_visium_hd

    root, written = hest
    plain = tmp_path / "he.png"  # an image without its own resolution: the scale factors give it
    Image.fromarray(written["image"]).save(plain)
    hd = write_visium_hd(tmp_path / "P01" / "outs", plain, written["image"], mpp=0.25)
    sample = read_spaceranger(tmp_path / "P01" / "outs", plain)
    assert sample.sample_id == "P01-16um" and sample.source.endswith("binned_outputs/square_016um")
    assert sample.spot_diameter_um == 16.0 and sample.mpp == 0.25 and sample.n_spots == len(hd[16]["barcodes"])
    np.testing.assert_allclose(sample.centres_px, hd[16]["centres"], atol=0.5)
    assert (sample.counts != hd[16]["counts"]).nnz == 0
    fine = read_spaceranger(tmp_path / "P01" / "outs", plain, bin_um=8)
    assert fine.sample_id == "P01-8um" and fine.n_spots == len(hd[8]["barcodes"]) > 3 * sample.n_spots
    with pytest.raises(SpotError, match=r"no binned_outputs/square_002um; its bins are square_008um, square_016um"):
        read_spaceranger(tmp_path / "P01" / "outs", plain, bin_um=2)
    with pytest.raises(SpotError, match="not a Visium HD output folder"):
        read_spaceranger(tmp_path / "P01" / "outs" / "binned_outputs" / "square_016um", plain, bin_um=16)


def _hest_copy(hest, tmp_path):
    root, written = hest
    copy = shutil.copytree(root, tmp_path / "copy")
    return copy, written


def _rewrite_st(path, change):
    import anndata

    adata = anndata.read_h5ad(path)
    adata = change(adata) or adata
    adata.write_h5ad(path)


@pytest.mark.parametrize("case, breaks, said", [
    ("no obsm spatial", lambda root, w: _rewrite_st(root / "st/SYN1.h5ad", lambda a: a.obsm.pop("spatial") is None),
     ["no obsm['spatial']"]),
    ("no pixel size", lambda root, w: (root / "metadata/SYN1.json").write_text(json.dumps({"spot_diameter": 55})),
     ["no pixel size", "--mpp"]),
    ("spots outside the image", lambda root, w: _rewrite_st(
        root / "st/SYN1.h5ad", lambda a: a.obsm.__setitem__("spatial", a.obsm["spatial"] * 3)),
     ["spot centres lie outside the image", "full-resolution image"]),
    ("all-zero counts", lambda root, w: _rewrite_st(root / "st/SYN1.h5ad", lambda a: setattr(a, "X", a.X * 0)),
     ["every count is zero"]),
    ("duplicate symbols", lambda root, w: _rewrite_st(
        root / "st/SYN1.h5ad", lambda a: setattr(a, "var_names", ["ESR1", "ESR1", *GENES[2:]])),
     ["ESR1", "--duplicate-genes sum"]),
    ("no image", lambda root, w: (root / "wsis/SYN1.tif").unlink(), ["SYN1.tif not found", "huggingface"]),
    ("not an h5ad", lambda root, w: (root / "st/SYN1.h5ad").write_bytes(b"not hdf5"), ["not a readable AnnData"]),
])
def test_a_bad_hest_sample_is_one_message(hest, tmp_path, case, breaks, said):
    root, written = _hest_copy(hest, tmp_path)
    breaks(root, written)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(SpotError) as refused:
        read_hest_sample(root, "SYN1")
    message = str(refused.value)
    assert "\n" not in message and all(s in message for s in said), message
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written


def test_duplicate_symbols_summed_when_asked(hest, tmp_path):
    root, written = _hest_copy(hest, tmp_path)
    _rewrite_st(root / "st/SYN1.h5ad", lambda a: setattr(a, "var_names", ["ESR1", "ESR1", *GENES[2:]]))
    sample = read_hest_sample(root, "SYN1", duplicate_genes="sum")
    assert sample.genes == ("ESR1", *GENES[2:])
    np.testing.assert_allclose(sample.counts[:, 0].toarray().ravel(), written["counts"][:, :2].toarray().sum(axis=1))


@pytest.mark.parametrize("case, breaks, said", [
    ("counted spots without positions", lambda f, w: _drop_position_rows(f, 3),
     ["3 counted spot(s) have no position in tissue_positions.csv"]),
    ("positions under tissue without counts", lambda f, w: _add_tissue_rows(f, 2),
     ["2 spot(s) of tissue_positions.csv have no counts"]),
    ("an image of another size than the scale factors say", lambda f, w: _scale(f, 0.2),
     ["the scale factors make the full resolution", "full-resolution image"]),
    ("no positions", lambda f, w: (f / "spatial/tissue_positions.csv").unlink(), ["no spatial/tissue_positions.csv"]),
    ("an empty count matrix", lambda f, w: _empty_counts(f), ["the count matrix is empty"]),
])
def test_a_bad_space_ranger_folder_is_one_message(hest, tmp_path, case, breaks, said):
    root, written = hest
    folder = write_spaceranger(tmp_path / "outs", root / "wsis" / "SYN1.tif", written)
    breaks(folder, written)
    with pytest.raises(SpotError) as refused:
        read_spaceranger(folder, root / "wsis" / "SYN1.tif")
    message = str(refused.value)
    assert "\n" not in message and all(s in message for s in said), message


def test_a_space_ranger_image_without_mpp_takes_visiums_spot_size(hest, tmp_path):
    """No --mpp and no resolution in the image: 55 um over the scale factors' spot diameter, as HEST
    estimates; neither: the message names --mpp."""
    from PIL import Image

    root, written = hest
    plain = tmp_path / "he.png"
    Image.fromarray(written["image"]).save(plain)
    folder = write_spaceranger(tmp_path / "outs", plain, written, mpp=0.25)
    assert read_spaceranger(folder, plain).mpp == pytest.approx(0.25)
    factors = json.loads((folder / "spatial/scalefactors_json.json").read_text())
    del factors["spot_diameter_fullres"]
    (folder / "spatial/scalefactors_json.json").write_text(json.dumps(factors))
    with pytest.raises(SpotError, match="--mpp"):
        read_spaceranger(folder, plain)
    assert read_spaceranger(folder, plain, mpp=0.26).mpp == 0.26


def _positions(folder):
    import pandas as pd

    return pd.read_csv(folder / "spatial/tissue_positions.csv")


def _drop_position_rows(folder, n):
    _positions(folder).iloc[n:].to_csv(folder / "spatial/tissue_positions.csv", index=False)


def _add_tissue_rows(folder, n):
    import pandas as pd

    table = _positions(folder)
    extra = table.iloc[:n].assign(barcode=[f"NEW{i:013d}-1" for i in range(n)])
    pd.concat([table, extra]).to_csv(folder / "spatial/tissue_positions.csv", index=False)


def _scale(folder, factor):
    path = folder / "spatial/scalefactors_json.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tissue_hires_scalef": factor}))


def _empty_counts(folder):
    import h5py

    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "r+") as f:
        for key in ("data", "indices"):
            del f["matrix"][key]
            f["matrix"][key] = np.array([], np.int32)
        del f["matrix"]["indptr"], f["matrix"]["barcodes"], f["matrix"]["shape"]
        f["matrix"]["indptr"] = np.array([0], np.int64)
        f["matrix"]["barcodes"] = np.array([], "S18")
        f["matrix"]["shape"] = np.array([len(f["matrix"]["features"]["name"]), 0])
    (folder / "spatial/tissue_positions.csv").write_text(
        "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n")
