"""The demo's spatial transcriptomics (issue 37), SYNTHETIC: sections made as the demo's slides are (the
25 real TCGA tiles, four source tumours), each with a Visium-like grid of spots (55 um across, 100 um
apart, hexagonal) over its tissue, and each spot's counts drawn from the tumours under it: the same
made-up gene "biology" as the demo's bulk RNA-seq (cohort.gene_model), at the spot's own mix of source
tumours rather than the slide's. Written in HEST-1k's layout (st/, wsis/, metadata/), then:

- the bulk-trained run's map scored against the measured spots (`spatial --truth`: Pearson, Spearman,
  the spin test), beside the map of a bulk control trained on shuffled expression;
- a spot run (`train-spots`) trained on some sections and scored on a held-out one, beside HEST's ridge,
  the untrained head and a shuffled-spot control (each section's counts dealt to its other spots).

The spots are embedded as the run's features were made (`extract-spots --like RUN`: 224 px at 0.25 um/px,
56 um around each spot, about its size), once, for both. These numbers show the pipeline at work; they say
nothing about biology.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from hist2rna_tf.atomic import write_text
from hist2rna_tf.config import TrainConfig
from hist2rna_tf.demo.cohort import DEMO_MPP, SOURCES, gene_model, real_tiles, render_slide, write_pyramid_tiff

PREFIX, FIRST_INDEX = "visium", 1000  # the sections' names and their render seeds' offset (apart from the slides')
GRID = (14, 18)  # cells of 224 px: 3.4 x 4.3 mm of tissue area
PITCH_UM, SPOT_UM = 100.0, 55.0
DEPTH = 0.02  # a spot's counts: 2^(log2 expression) x DEPTH x its own depth factor (lognormal)


def visium_centres(width_px: int, height_px: int, mpp: float = DEMO_MPP, pitch_um: float = PITCH_UM) -> np.ndarray:
    """Spot centres (x, y level-0 px) on Visium's hexagonal grid: rows pitch x sqrt(3)/2 apart, every
    other row shifted half a pitch, a spot's radius clear of the edges."""
    pitch, margin = pitch_um / mpp, SPOT_UM / mpp
    rows = np.arange(margin, height_px - margin, pitch * np.sqrt(3) / 2)
    return np.array([(x, y) for r, y in enumerate(rows)
                     for x in np.arange(margin + (pitch / 2 if r % 2 else 0), width_px - margin, pitch)])


def spot_shares(layout, centres: np.ndarray, mpp: float = DEMO_MPP, points: int = 9) -> np.ndarray:
    """[spots, sources]: the share of each source tumour under each spot's disc (a grid of points in it;
    glass counts for none)."""
    radius = SPOT_UM / mpp / 2
    grid = np.linspace(-radius, radius, points)
    offsets = np.array([(dx, dy) for dx in grid for dy in grid if dx * dx + dy * dy <= radius * radius])
    shares = np.zeros((len(centres), len(SOURCES)))
    for i, centre in enumerate(centres):
        under = layout.sources_at(centre + offsets)
        shares[i] = [(under == k).mean() for k in range(len(SOURCES))]
    return shares


def write_section(root: Path, index: int, seed: int, tiles, source, model_seed: int = 0) -> str:
    """One section in HEST's layout under `root`; returns its sample id."""
    import anndata
    import pandas as pd
    from scipy import sparse

    sample_id = f"{PREFIX}-{index + 1:02d}"
    image, _, _, layout = render_slide(FIRST_INDEX + index, seed, tiles, source, *GRID)
    centres = visium_centres(image.shape[1], image.shape[0])
    shares = spot_shares(layout, centres)
    keep = shares.sum(axis=1) > 0.5  # spots mostly over tissue, as Space Ranger keeps those under tissue
    centres, shares = centres[keep], shares[keep] / shares[keep].sum(axis=1, keepdims=True)
    genes, baseline, loadings = gene_model(model_seed)
    rng = np.random.default_rng([seed, 11, index])
    depth = DEPTH * rng.lognormal(0.0, 0.3, (len(centres), 1))
    counts = rng.poisson(2.0 ** (baseline + (shares - 1.0 / len(SOURCES)) @ loadings) * depth)
    barcodes = [f"{PREFIX}{index + 1:02d}-{i:05d}-1" for i in range(len(centres))]
    write_pyramid_tiff(image, root / "wsis" / f"{sample_id}.tif")
    adata = anndata.AnnData(sparse.csr_matrix(counts.astype(np.float32)), obs=pd.DataFrame(index=barcodes),
                            var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = centres
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    write_text(root / "metadata" / f"{sample_id}.json", json.dumps(
        {"pixel_size_um_estimated": DEMO_MPP, "spot_diameter": SPOT_UM, "inter_spot_dist": PITCH_UM,
         "patient": sample_id, "note": "SYNTHETIC demo section (hist2rna_tf/demo/spots.py)"}))
    return sample_id


def write_sections(root: str | Path, n: int, seed: int = 0) -> list[str]:
    """`n` sections under `root` (HEST's layout); an earlier demo's are kept. Returns their ids."""
    from concurrent.futures import ThreadPoolExecutor

    from hist2rna_tf.config import usable_cores

    root, tiles, source = Path(root), *real_tiles()
    ids = [f"{PREFIX}-{k + 1:02d}" for k in range(n)]
    missing = [k for k, sample_id in enumerate(ids)
               if not all((root / d / f"{sample_id}{e}").is_file()
                          for d, e in (("st", ".h5ad"), ("wsis", ".tif"), ("metadata", ".json")))]
    for folder in ("st", "wsis", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:  # JPEG encoding and resizing release the GIL
        list(pool.map(lambda k: write_section(root, k, seed, tiles, source), missing))
    return ids


def shuffled_spots(sample, seed: int):
    """The sample with its counts dealt to its other spots (a control: the features no longer say them)."""
    order = np.random.default_rng(seed).permutation(sample.n_spots)
    return replace(sample, counts=sample.counts[order])


def spot_demo(run_dir: Path, control_dir: Path | None, out: Path, n_sections: int, seed: int = 0) -> dict:
    """The module's chain under `out` (sections/, spot_features/, truth/, spot_run/, spot_control/): the
    figures the demo prints (bulk map against spots, spot run held out) and the paths."""
    from hist2rna_tf.model import runs
    from hist2rna_tf.spot_run.cohort import SpotRunConfig
    from hist2rna_tf.spot_run.train import train_spot_run
    from hist2rna_tf.report.spot_truth import spot_scores, write_truth
    from hist2rna_tf.spots.features import extract_spots
    from hist2rna_tf.spots.hest import read_hest_sample

    ids = write_sections(out / "sections", n_sections, seed)
    samples = [read_hest_sample(out / "sections", s) for s in ids]
    records = extract_spots(samples, out / "spot_features", runs.extraction(run_dir).for_new_slides())
    gene = runs.metrics(run_dir)["across_genes"]["rho"].idxmax()  # the bulk run's best gene, drawn
    truth = [write_truth(run_dir, r, s, out / "truth", [gene], seed=seed)[0]
             for r, s in zip(records, samples)]
    control = [spot_scores(control_dir, r, s, n_spins=9) for r, s in zip(records, samples)] if control_dir else []
    config = SpotRunConfig(genes="hvg:50", test_samples=(ids[-1],))
    train = TrainConfig(seed=seed, standardize=True)
    features = records[0].parent
    for folder in ("spot_run", "spot_control"):  # trained again from scratch, as the demo's bulk runs
        if (out / folder).exists():
            shutil.rmtree(out / folder)
    spot_run = train_spot_run(features, samples, out / "spot_run", config, train)
    shuffled = [shuffled_spots(s, seed + k) for k, s in enumerate(samples)]
    spot_control = train_spot_run(features, shuffled, out / "spot_control", config, train)
    return {"map_median_pearson": float(np.median([t["pearson"].median() for t in truth])),
            "map_genes_fdr": int(sum((t["fdr_spin"] < 0.05).sum() for t in truth)),
            "map_genes": int(sum(len(t) for t in truth)),
            "map_control_median_pearson": float(np.median([t["pearson"].median() for t in control]))
            if control else None,
            "spots": int(sum(s.n_spots for s in samples)), "sections": ids, "held_out": ids[-1],
            "spot_head": spot_run.metrics["per_sample"]["head"], "spot_ridge": spot_run.metrics["per_sample"]["ridge"],
            "spot_untrained": spot_run.metrics["per_sample"]["untrained"],
            "spot_control": spot_control.metrics["per_sample"]["head"],
            "paths": {"sections": out / "sections", "truth": out / "truth", "spot_run": out / "spot_run",
                      "truth_map": out / "truth" / f"{ids[0]}_{gene}_truth.png"}}
