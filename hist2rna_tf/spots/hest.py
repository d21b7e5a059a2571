"""HEST-1k's files (mahmoodlab/HEST, read as a reference): a sample as downloaded, its patches, and the
embeddings HEST-Benchmark writes.

A download folder holds, per sample id: `st/<id>.h5ad` (raw counts; `obsm['spatial']` the spot centres
in full-resolution pixels; the barcodes its index, the gene symbols its columns), `wsis/<id>.tif` (the
pyramidal H&E), `metadata/<id>.json` (`pixel_size_um_estimated`, `spot_diameter`, ...) and, when
downloaded, `patches/<id>.h5` (`img` [n, 224, 224, 3] uint8, `coords` [n, 2] top-left corners,
`barcode` [n, 1] bytes). HEST-Benchmark's embeddings are `<id>.h5` with `embeddings` [n, D], `barcodes`
[n, 1] and `coords` [n, 2], each a dataset of that name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import sparse

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.sample import SpotSample, checked_sample, summed_duplicates

HEST_DOWNLOAD = "https://huggingface.co/datasets/MahmoodLab/hest"
# The pixel size HEST's readers use (read_HESTData: metrics['pixel_size_um_estimated']), then the file's own.
PIXEL_SIZE_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")


def hest_files(root: str | Path, sample_id: str) -> dict[str, Path]:
    """The files of sample `sample_id` in a HEST download folder `root` (patches may be absent)."""
    root = Path(root)
    return {"st": root / "st" / f"{sample_id}.h5ad", "wsi": root / "wsis" / f"{sample_id}.tif",
            "metadata": root / "metadata" / f"{sample_id}.json", "patches": root / "patches" / f"{sample_id}.h5"}


def read_hest_sample(root: str | Path, sample_id: str, mpp: float | None = None,
                     duplicate_genes: str = "refuse") -> SpotSample:
    """HEST-1k sample `sample_id` from its download folder `root`, checked (sample.checked_sample).
    `mpp` overrides the metadata's pixel size; `duplicate_genes`="sum" adds the counts of a symbol
    named twice (default: refused, named)."""
    import anndata

    files = hest_files(root, sample_id)
    missing = [str(files[k]) for k in ("st", "wsi", "metadata") if not files[k].is_file()]
    if missing:
        raise SpotError(f"sample {sample_id}: {', '.join(missing)} not found; download the sample with HEST's "
                        f"layout (st/, wsis/, metadata/) from {HEST_DOWNLOAD}, or give the folder that holds it.")
    try:
        adata = anndata.read_h5ad(files["st"])
    except (OSError, KeyError, ValueError) as exc:
        raise SpotError(f"{files['st']}: not a readable AnnData file ({exc}); download it again.") from None
    if "spatial" not in adata.obsm:
        raise SpotError(f"{files['st']}: no obsm['spatial'] (the spot centres in full-resolution pixels); it is not "
                        "a HEST sample's st file, or was saved without its positions.")
    counts = sparse.csr_matrix(adata.X, dtype=np.float64)
    genes = [str(g) for g in adata.var_names]
    if duplicate_genes == "sum":
        counts, genes = summed_duplicates(counts, genes)
    metadata = _metadata(files["metadata"])
    sample = SpotSample(sample_id, np.asarray(adata.obs_names, dtype=str),
                        np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2], counts, tuple(genes),
                        files["wsi"], _pixel_size(metadata, files["metadata"], mpp), str(files["st"]),
                        metadata.get("spot_diameter"), _patient(metadata))
    return checked_sample(sample, image_size(files["wsi"]))


def _patient(metadata: dict) -> str | None:
    """The sample's patient as HEST's metadata names it (`patient`), when it does."""
    value = metadata.get("patient")
    return str(value) if value not in (None, "", "nan") else None


def _metadata(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpotError(f"{path}: not readable JSON ({exc}); download the sample's metadata again.") from None
    if not isinstance(data, dict):
        raise SpotError(f"{path}: not HEST metadata (a JSON object of the sample's fields); download it again.")
    return data


def _pixel_size(data: dict, path: Path, mpp: float | None) -> float:
    """`mpp` when given, else the metadata's (`data`, read from `path`)."""
    if mpp is not None:
        return float(mpp)
    for key in PIXEL_SIZE_KEYS:
        value = data.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    raise SpotError(f"{path}: no pixel size ({' or '.join(PIXEL_SIZE_KEYS)}); give --mpp with the full-resolution "
                    "image's microns per pixel.")


def open_image(path: str | Path):
    """An OpenSlide handle of a full-resolution H&E: a slide or pyramidal TIFF, else a plain image
    (PNG, JPEG, a TIFF OpenSlide does not read), as openslide.open_slide decides."""
    import openslide

    from hist2rna_tf.extract.slides import SlideRef, open_slide

    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideUnsupportedFormatError, openslide.OpenSlideError):
        return open_slide(SlideRef(Path(path), "image"))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a full-resolution image in pixels."""
    slide = open_image(path)
    try:
        return tuple(slide.dimensions)
    finally:
        slide.close()


def patch_batches(path: str | Path, batch: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """HEST's patches file (`patches/<id>.h5`) in batches of (img uint8 [n, h, w, 3], barcodes str [n],
    coords int [n, 2]), one batch in memory at a time."""
    with _open_h5(path) as f:
        for key in ("img", "barcode", "coords"):
            if key not in f:
                raise SpotError(f"{path}: no '{key}' dataset; not a HEST patches file (img, barcode, coords).")
        n = len(f["img"])
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            yield (np.asarray(f["img"][start:stop], np.uint8), _strings(f["barcode"][start:stop]),
                   np.asarray(f["coords"][start:stop]))


def _open_h5(path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SpotError(f"{path}: not a readable HDF5 file ({exc}); download or write it again.") from None


def _strings(values: np.ndarray) -> np.ndarray:
    """[n] or [n, 1] bytes or str -> str [n] (HEST stores barcodes as [n, 1] bytes)."""
    flat = np.asarray(values).reshape(len(values), -1)[:, 0]
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in flat], dtype=str)


def write_embeddings(path: str | Path, embeddings: np.ndarray, barcodes: np.ndarray, coords: np.ndarray) -> Path:
    """A sample's embeddings as HEST-Benchmark writes them (`embeddings` [n, D] float32, `barcodes`
    [n, 1] bytes, `coords` [n, 2]), atomically (written aside, renamed into place)."""
    import h5py

    from hist2rna_tf.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as f:
            f.create_dataset("embeddings", data=np.asarray(embeddings, np.float32))
            f.create_dataset("barcodes", data=np.char.encode(np.asarray(barcodes, dtype=str), "utf-8")[:, None])
            f.create_dataset("coords", data=np.asarray(coords).reshape(len(coords), 2))
    return path


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings float [n, D], barcodes str [n], coords [n, 2]) of a HEST-Benchmark embeddings file,
    theirs or ours."""
    with _open_h5(path) as f:
        for key in ("embeddings", "barcodes"):
            if key not in f:
                raise SpotError(f"{path}: no '{key}' dataset; not a HEST-Benchmark embeddings file "
                                "(embeddings, barcodes, coords).")
        embeddings = np.asarray(f["embeddings"][:])
        coords = np.asarray(f["coords"][:]) if "coords" in f else np.zeros((len(embeddings), 2), int)
        return embeddings, _strings(f["barcodes"][:]), coords
