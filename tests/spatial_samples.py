"""Synthetic spatial transcriptomics samples for the tests: a HEST-1k sample as downloaded, a Space
Ranger output folder, both over one small pyramidal H&E-coloured image, spots on Visium's hexagonal
grid (100 um apart), counts that follow the image under each spot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

GENES = ["ESR1", "PGR", "ERBB2", "MKI67", "KRT5", "FOXA1", "GATA3", "ACTB"]


def image(size=(2000, 1600), seed=0) -> np.ndarray:
    """A smooth random pink-and-purple RGB image (uint8 [height, width, 3])."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (size[1] // 100 + 2, size[0] // 100 + 2, 3))
    big = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC), float)
    pink = np.array([230, 150, 200]) * (1 - big / 400) + rng.normal(0, 6, big.shape)
    return np.clip(pink, 0, 255).astype(np.uint8)


def hex_centres(size=(2000, 1600), mpp=0.25, pitch_um=100.0, margin_px=60) -> np.ndarray:
    """Visium's grid: rows pitch * sqrt(3)/2 apart, every other row shifted half a pitch (x, y px)."""
    pitch = pitch_um / mpp
    rows = np.arange(margin_px, size[1] - margin_px, pitch * np.sqrt(3) / 2)
    return np.array([(x, y) for r, y in enumerate(rows)
                     for x in np.arange(margin_px + (pitch / 2 if r % 2 else 0), size[0] - margin_px, pitch)])


def counts_under(picture: np.ndarray, centres: np.ndarray, genes=GENES, seed=0) -> sparse.csr_matrix:
    """Poisson counts whose rates follow the mean colour under each spot (gene g on channel g % 3)."""
    rng = np.random.default_rng(seed)
    means = np.array([picture[max(0, int(y) - 50):int(y) + 50, max(0, int(x) - 50):int(x) + 50].mean((0, 1))
                      for x, y in centres])
    rates = np.stack([(255 - means[:, g % 3]) / 10 * (1 + g % 4) for g in range(len(genes))], axis=1)
    return sparse.csr_matrix(rng.poisson(rates).astype(np.float32))


def barcodes(n: int) -> np.ndarray:
    bases = np.array(list("ACGT"))
    return np.array(["".join(bases[(i // 4 ** np.arange(16)) % 4]) + "-1" for i in range(n)])


def write_hest_sample(root: Path, sample_id: str = "SYN1", mpp: float = 0.25, size=(2000, 1600), seed=0,
                      genes=GENES, metadata: dict | None = None) -> dict:
    """A HEST-1k download folder's files of one sample (st/, wsis/, metadata/); returns what it holds."""
    import anndata

    from hist2rna_tf.demo.cohort import write_pyramid_tiff

    root = Path(root)
    for folder in ("st", "wsis", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    picture, centres = image(size, seed), hex_centres(size, mpp)
    counts, codes = counts_under(picture, centres, genes, seed), barcodes(len(centres))
    write_pyramid_tiff(picture, root / "wsis" / f"{sample_id}.tif", mpp)
    adata = anndata.AnnData(counts, obs=pd.DataFrame(index=codes), var=pd.DataFrame(index=list(genes)))
    adata.obsm["spatial"] = centres
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    meta = {"pixel_size_um_estimated": mpp, "spot_diameter": 55.0, "inter_spot_dist": 100.0,
            **(metadata or {})}
    (root / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))
    return {"image": picture, "centres": centres, "counts": counts, "barcodes": codes, "genes": list(genes)}


def write_spaceranger(folder: Path, image_path: Path, sample: dict, mpp: float = 0.25, old_positions=False,
                      extra_positions: int = 0) -> Path:
    """A Space Ranger output folder of `sample` (write_hest_sample's): the 10x HDF5 counts, the tissue
    positions (Space Ranger 2's CSV, or 1.x's headerless list), the scale factors and a hires image."""
    import h5py

    folder = Path(folder)
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    by_barcode = sparse.csc_matrix(sample["counts"].T.astype(np.int32))
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["data"], m["indices"], m["indptr"] = by_barcode.data, by_barcode.indices, by_barcode.indptr
        m["shape"] = np.array(by_barcode.shape)
        m["barcodes"] = np.char.encode(sample["barcodes"].astype(str), "ascii")
        features = m.create_group("features")
        features["name"] = np.char.encode(np.array(sample["genes"]), "ascii")
        features["id"] = np.char.encode(np.array([f"ENSG{i:011d}" for i in range(len(sample["genes"]))]), "ascii")
        features["feature_type"] = np.char.encode(np.array(["Gene Expression"] * len(sample["genes"])), "ascii")
    x, y = sample["centres"][:, 0], sample["centres"][:, 1]
    rows = pd.DataFrame({"barcode": sample["barcodes"], "in_tissue": 1, "array_row": 0, "array_col": 0,
                         "pxl_row_in_fullres": np.round(y).astype(int), "pxl_col_in_fullres": np.round(x).astype(int)})
    outside = pd.DataFrame({"barcode": [f"OUT{i:013d}-1" for i in range(extra_positions)], "in_tissue": 0,
                            "array_row": 0, "array_col": 0, "pxl_row_in_fullres": 5, "pxl_col_in_fullres": 5})
    rows = pd.concat([rows, outside], ignore_index=True)
    if old_positions:
        rows.to_csv(folder / "spatial" / "tissue_positions_list.csv", header=False, index=False)
    else:
        rows.to_csv(folder / "spatial" / "tissue_positions.csv", index=False)
    hires = 0.1
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
        {"spot_diameter_fullres": 55.0 / mpp, "tissue_hires_scalef": hires, "tissue_lowres_scalef": hires / 4,
         "fiducial_diameter_fullres": 89.5 / mpp}))
    picture = sample["image"]
    Image.fromarray(picture).resize((round(picture.shape[1] * hires), round(picture.shape[0] * hires))).save(
        folder / "spatial" / "tissue_hires_image.png")
    return folder


def write_visium_hd(outs: Path, image_path: Path, picture: np.ndarray, mpp: float = 0.25, bins_um=(8, 16),
                    genes=GENES, seed: int = 0) -> dict:
    """A Visium HD output folder: `binned_outputs/square_<N>um/` for each of `bins_um` (its 10x HDF5 counts,
    spatial/tissue_positions.parquet, spatial/scalefactors_json.json with bin_size_um and microns_per_pixel)
    tiling `picture` (at `mpp`) with square bins, counts following the image under each. Returns, per bin
    size, what its folder holds."""
    written = {}
    for size in bins_um:
        pitch = size / mpp
        xs = np.arange(pitch / 2, picture.shape[1] - pitch / 2, pitch)
        ys = np.arange(pitch / 2, picture.shape[0] - pitch / 2, pitch)
        centres = np.array([(x, y) for y in ys for x in xs])
        codes = np.array([f"s_{size:03d}um_{int(y // pitch):05d}_{int(x // pitch):05d}-1" for x, y in centres])
        sample = {"counts": counts_under(picture, centres, genes, seed), "barcodes": codes, "genes": list(genes),
                  "centres": centres, "image": picture}
        folder = Path(outs) / "binned_outputs" / f"square_{size:03d}um"
        write_spaceranger(folder, image_path, sample, mpp=mpp)
        positions = pd.read_csv(folder / "spatial" / "tissue_positions.csv")
        positions.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
        (folder / "spatial" / "tissue_positions.csv").unlink()
        factors = json.loads((folder / "spatial" / "scalefactors_json.json").read_text())
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(
            {**factors, "spot_diameter_fullres": pitch, "bin_size_um": float(size), "microns_per_pixel": mpp}))
        written[size] = sample
    return written


def write_bench_task(folder: Path, n_samples: int = 4, spots: int = 120, dim: int = 300, genes=GENES[:6],
                     seed: int = 0) -> Path:
    """A HEST-Bench task folder (splits/, var_50genes.json, adata/) and its embeddings folder
    (`<folder>/embeddings/<id>.h5`, as HEST-Benchmark writes them): each spot's embedding carries its
    expression through a random linear map plus noise, so a probe predicts it. Splits leave one
    sample out each (the first two)."""
    import anndata

    from hist2rna_tf.spots.hest import write_embeddings

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    for sub in ("splits", "adata", "patches", "embeddings"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    mix = rng.normal(size=(len(genes), dim))
    ids = [f"SYN{i}" for i in range(n_samples)]
    for k, sample_id in enumerate(ids):
        rates = np.exp(rng.normal(1.0, 0.8, (spots, len(genes))))
        counts = rng.poisson(rates).astype(np.float32)
        features = np.log1p(counts) @ mix + rng.normal(0, 5.0, (spots, dim))
        codes = barcodes(spots + k * 1000)[k * 1000:]
        adata = anndata.AnnData(sparse.csr_matrix(counts), obs=pd.DataFrame(index=codes),
                                var=pd.DataFrame(index=list(genes)))
        adata.write_h5ad(folder / "adata" / f"{sample_id}.h5ad")
        coords = rng.integers(0, 5000, (spots, 2))
        write_embeddings(folder / "embeddings" / f"{sample_id}.h5", features[::-1].astype(np.float32),
                         codes[::-1], coords)  # another order than the counts': read by barcode
    (folder / "var_50genes.json").write_text(json.dumps({"genes": list(genes)[::-1]}))
    for i, held in enumerate(ids[:2]):
        rows = lambda chosen: pd.DataFrame({"sample_id": chosen, "patches_path": [f"patches/{s}.h5" for s in chosen],
                                            "expr_path": [f"adata/{s}.h5ad" for s in chosen]})
        rows([s for s in ids if s != held]).to_csv(folder / "splits" / f"train_{i}.csv", index=False)
        rows([held]).to_csv(folder / "splits" / f"test_{i}.csv", index=False)
    return folder


def write_spot_study(root: Path, n_samples: int = 5, dim: int = 12, seed: int = 0, shuffled: bool = False,
                     size=(2400, 2000), extraction=None) -> dict:
    """A spot run's inputs: `n_samples` HEST samples (<root>/hest: SP0.., 0.5 um/px, ~130 spots each; SP3
    and SP4 one patient, P3) and their spot records (<root>/features/tiny, as `extract-spots` writes
    them, each spot a tile at its patch's top-left) whose features carry each spot's log1p counts
    through a random linear map plus noise, so a head can learn them; `shuffled`: the features dealt
    to other spots of the same sample (a control that must learn nothing). `extraction` (an
    extract.settings.Extraction of `dim` features): written as the folder's extract_config.json, its
    settings the records'. Returns the paths and ids."""
    from hist2rna_tf.extract.records import SlideFeatures, record_path, write_record
    from hist2rna_tf.extract.settings import FeatureSettings, write_extraction

    root, rng = Path(root), np.random.default_rng(seed)
    settings = extraction.features if extraction else FeatureSettings("tiny", "none", "none", 224, 112.0)
    if extraction:
        write_extraction(root / "features" / "tiny", extraction)
    mix = rng.normal(size=(len(GENES), dim))
    ids = [f"SP{i}" for i in range(n_samples)]
    for i, sample_id in enumerate(ids):
        patient = "P3" if i == 4 else f"P{i}"
        written = write_hest_sample(root / "hest", sample_id, mpp=0.5, size=size, seed=seed + i,
                                    metadata={"patient": patient})
        logged = np.log1p(written["counts"].toarray())
        features = ((logged - logged.mean(0)) @ mix + rng.normal(0, 0.5, (len(logged), dim))).astype(np.float32)
        if shuffled:
            features = features[rng.permutation(len(features))]
        corners = (written["centres"] - 112).astype(np.int64)
        write_record(SlideFeatures(
            slide_id=sample_id, patient_id=sample_id, settings=settings,
            version="test", mpp=0.5, n_tiles=len(features), n_unnormalised=0, feature=features.mean(0),
            tile_xy_px=corners, tile_features=features, tile_names=written["barcodes"]),
            record_path(root / "features", "tiny", sample_id))
    return {"hest": root / "hest", "features": root / "features" / "tiny", "samples": ids}
