"""A Space Ranger output folder (10x Genomics Visium) and the full-resolution H&E the user gives:
`filtered_feature_bc_matrix.h5` (10x's HDF5 counts: `matrix/` data, indices, indptr, shape, barcodes,
`features/name` the symbols, `features/feature_type`), `spatial/tissue_positions.csv` (Space Ranger 2+,
with a header) or `spatial/tissue_positions_list.csv` (1.x, none; columns barcode, in_tissue, array_row,
array_col, pxl_row_in_fullres, pxl_col_in_fullres) and `spatial/scalefactors_json.json`.

The pixel size: `--mpp`, else the image's own, else the scale factors' `microns_per_pixel` (Visium HD's),
else Visium's 55 um spot over `spot_diameter_fullres`, as HEST estimates it.

Visium HD: an output folder holding `binned_outputs/square_<N>um/` (002, 008, 016) is read at one binning
(`bin_um`, 16 by default): that folder's counts and `spatial/tissue_positions.parquet` (the same columns),
each bin a pseudo-spot of the bin's size; the sample is named `<name>-<N>um` and its source is the bin
folder, so the binning is named wherever the sample is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.hest import image_size, open_image
from hist2rna_tf.spots.sample import SpotSample, checked_sample, matched, summed_duplicates

COUNTS = "filtered_feature_bc_matrix.h5"
POSITIONS = ("spatial/tissue_positions.csv", "spatial/tissue_positions_list.csv", "spatial/tissue_positions.parquet")
BINNED = "binned_outputs"  # Visium HD: square_002um/, square_008um/, square_016um/
HD_DEFAULT_BIN_UM = 16
SCALEFACTORS = "spatial/scalefactors_json.json"
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
VISIUM_SPOT_UM = 55.0  # a Visium spot's diameter
# The hires image's size over its scale factor is the full-resolution image's, within this share.
SCALE_TOLERANCE = 0.02


def read_spaceranger(folder: str | Path, image: str | Path, mpp: float | None = None, sample_id: str | None = None,
                     duplicate_genes: str = "refuse", bin_um: int | None = None) -> SpotSample:
    """The sample in Space Ranger's output `folder`, on the full-resolution H&E `image`, checked; named
    `sample_id`, else the folder's name (its parent's for a folder named `outs`). A Visium HD folder is
    read at `bin_um` (see the module)."""
    folder, image = Path(folder), Path(image)
    name = sample_id or (folder.parent.name if folder.name == "outs" else folder.name)
    folder, name = binned(folder, bin_um, name, sample_id is not None)
    counts_path = folder / COUNTS
    if not counts_path.is_file():
        raise SpotError(f"{folder}: no {COUNTS}; give Space Ranger's output folder (outs/) of the sample.")
    if not image.is_file():
        raise SpotError(f"{image}: not found; give the full-resolution H&E image Space Ranger was run on.")
    barcodes, genes, counts = read_10x_h5(counts_path)
    if duplicate_genes == "sum":
        counts, genes = summed_duplicates(counts, list(genes))
    positions, positions_path = _positions(folder)
    placed = positions[positions["in_tissue"] == 1] if "in_tissue" in positions else positions
    rows = matched(barcodes, placed["barcode"].to_numpy(str), str(folder), positions_path.name)
    centres = placed[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)[rows]
    scalefactors = _scalefactors(folder)
    size = image_size(image)
    _check_scale(folder, scalefactors, size)
    diameter = scalefactors.get("bin_size_um") or (VISIUM_SPOT_UM if scalefactors.get("spot_diameter_fullres") else None)
    sample = SpotSample(name, barcodes, centres, counts, tuple(genes), image,
                        _pixel_size(image, mpp, scalefactors, folder), str(folder), diameter)
    return checked_sample(sample, size)


def binned(folder: Path, bin_um: int | None, name: str, named: bool) -> tuple[Path, str]:
    """A Visium HD folder's bin folder at `bin_um` (16 unless given) and the sample's name with its
    binning (unless the user `named` it); any other folder as it is (a SpotError when `bin_um` is given
    for a folder without bins)."""
    bins = folder / BINNED
    if not bins.is_dir():
        if bin_um is not None:
            raise SpotError(f"{folder}: no {BINNED}/ (not a Visium HD output folder); leave --bin-um out for Visium.")
        return folder, name
    size = bin_um or HD_DEFAULT_BIN_UM
    chosen = bins / f"square_{size:03d}um"
    if not chosen.is_dir():
        there = sorted(p.name for p in bins.glob("square_*um"))
        raise SpotError(f"{folder}: no {BINNED}/{chosen.name}; its bins are {', '.join(there) or 'none'}; give "
                        "--bin-um with one of them (e.g. 8 or 16).")
    return chosen, name if named else f"{name}-{size}um"


def read_10x_h5(path: Path) -> tuple[np.ndarray, list[str], sparse.csr_matrix]:
    """(barcodes, gene symbols, counts spots x genes) of a 10x HDF5 count file, its gene expression only."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            m = f["matrix"]
            shape = tuple(int(v) for v in m["shape"][:])
            by_barcode = sparse.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
            barcodes = np.array([b.decode() for b in m["barcodes"][:]], dtype=str)
            names = [n.decode() for n in m["features"]["name"][:]]
            kinds = ([k.decode() for k in m["features"]["feature_type"][:]] if "feature_type" in m["features"]
                     else ["Gene Expression"] * len(names))
    except (OSError, KeyError, ValueError) as exc:
        raise SpotError(f"{path}: not a 10x HDF5 count matrix ({exc}); give Space Ranger's "
                        f"{COUNTS}.") from None
    genes = np.array([k == "Gene Expression" for k in kinds])
    counts = by_barcode.T.tocsr()[:, genes].astype(np.float64)
    return barcodes, [n for n, keep in zip(names, genes) if keep], counts


def _positions(folder: Path) -> tuple[pd.DataFrame, Path]:
    for name in POSITIONS:
        path = folder / name
        if path.is_file():
            header = None if name == POSITIONS[1] else "infer"  # Space Ranger 1.x's list has no header
            try:
                table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, header=header)
            except ImportError:
                raise SpotError(f"{path}: reading Visium HD's parquet positions needs pyarrow (pip install "
                                "pyarrow).") from None
            except (OSError, ValueError) as exc:
                raise SpotError(f"{path}: not readable as {path.suffix[1:].upper()} ({exc}).") from None
            if header is None:
                table.columns = POSITION_COLUMNS[:table.shape[1]]
            missing = [c for c in ("barcode", "pxl_row_in_fullres", "pxl_col_in_fullres") if c not in table]
            if missing:
                raise SpotError(f"{path}: no column {', '.join(missing)}; not Space Ranger's tissue positions.")
            return table, path
    raise SpotError(f"{folder}: no {' or '.join(POSITIONS)}; give Space Ranger's output folder with its spatial/.")


def _scalefactors(folder: Path) -> dict:
    path = folder / SCALEFACTORS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SpotError(f"{path}: not readable JSON ({exc}).") from None


def _check_scale(folder: Path, scalefactors: dict, size: tuple[int, int]) -> None:
    """The hires image over its scale factor is the image's size: else the image is not the one the
    positions were made on."""
    from PIL import Image

    hires, factor = folder / "spatial" / "tissue_hires_image.png", scalefactors.get("tissue_hires_scalef")
    if not (hires.is_file() and factor):
        return
    with Image.open(hires) as picture:
        implied = (picture.size[0] / factor, picture.size[1] / factor)
    if any(abs(a - b) > SCALE_TOLERANCE * b for a, b in zip(implied, size)):
        raise SpotError(f"{folder}: the image is {size[0]} x {size[1]} px but the scale factors make the full "
                        f"resolution {implied[0]:.0f} x {implied[1]:.0f} px (tissue_hires_image.png / "
                        "tissue_hires_scalef); give the full-resolution image Space Ranger was run on.")


def _pixel_size(image: Path, mpp: float | None, scalefactors: dict, folder: Path) -> float:
    if mpp is not None:
        return float(mpp)
    slide = open_image(image)
    try:
        own = slide.properties.get("openslide.mpp-x")
    finally:
        slide.close()
    if own:
        return float(own)
    if scalefactors.get("microns_per_pixel"):  # Visium HD's own
        return float(scalefactors["microns_per_pixel"])
    diameter = scalefactors.get("spot_diameter_fullres")
    if diameter:
        return VISIUM_SPOT_UM / float(diameter)
    raise SpotError(f"{image}: no microns per pixel in the image and no spot_diameter_fullres in {folder / SCALEFACTORS}; "
                    "give --mpp with the image's microns per pixel.")
