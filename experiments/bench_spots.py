"""Benchmark of the spatial transcriptomics path (a benchmark, not a test): prints figures, asserts nothing.

1. Patches: HEST's patch of each spot (spots/patches.py: OpenSlide read, OpenCV bilinear resize) against
   the slide path's tile at the same place and scale (extract/slides.py's TileReader: area averaging when
   shrinking), in patches/s on one core, and how much their pixels differ (mean and 99th percentile of
   |a - b| over RGB levels 0-255). On the synthetic HEST samples of tests/data (0.3 and 0.12 um/px: a patch
   read at level 0 and at the pyramid's level 1) and on a real slide when given (--slide, with its um/px).
2. HEST-Benchmark's probe (spots/bench.py) on `--samples` synthetic samples x `--spots` spots x
   `--dim` features (default 10 x 5,000 x 1,536, an H-optimus-0-sized task): seconds for the PCA and
   ridge of one split (9 samples train, 1 test).

Usage: python -m experiments.bench_spots [--slide PATH --slide-mpp UM] [--samples N --spots N --dim D]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "spots" / "hest_samples"


def patches_against_tiles(image: Path, centres: np.ndarray, mpp: float, label: str) -> None:
    from hist2rna_tf.extract.slides import SlideRef, TileReader
    from hist2rna_tf.spots.hest import image_size, open_image
    from hist2rna_tf.spots.patches import read_patches, slide_grid

    slide = open_image(image)
    grid = slide_grid(slide, centres, mpp)
    start = time.process_time()
    patches = np.concatenate(list(read_patches(slide, grid, batch=64)))
    hest_s = time.process_time() - start
    reader = TileReader(SlideRef(image, "openslide"), mpp, 0.5, 224)
    start = time.process_time()
    tiles = np.stack([reader.read(x, y) for x, y in grid.top_left_px])
    tile_s = time.process_time() - start
    reader.close()
    slide.close()
    width, height = image_size(image)
    inside = ((grid.top_left_px >= 0).all(axis=1) & (grid.top_left_px[:, 0] + grid.span_px <= width)
              & (grid.top_left_px[:, 1] + grid.span_px <= height))  # outside the scan HEST reads black, we white
    diff = np.abs(patches[inside].astype(int) - tiles[inside].astype(int))
    n = len(patches)
    said = (f"pixels of the {int(inside.sum())} patches inside the image differ by {diff.mean():.2f} on average "
            f"(99th percentile {np.percentile(diff, 99):.0f}) of 255" if inside.any() else "no patch lies inside")
    print(f"{label}: {n} patches, span {grid.span_px} px read as {grid.read_px} px at level {grid.level}; "
          f"HEST's {n / hest_s:.0f} patches/s a core, the slide path's {n / tile_s:.0f}; {said}")


def real_tissue(folder: Path, mpp: float = 0.25) -> Path:
    """A pyramidal TIFF of the shipped real TCGA tiles (224 px at ~0.25 um/px), 16 x 12 of them."""
    from hist2rna_tf.demo.cohort import real_tiles, write_pyramid_tiff

    tiles, _ = real_tiles()
    rows = [np.concatenate([tiles[(r * 16 + c) % len(tiles)] for c in range(16)], axis=1) for r in range(12)]
    path = folder / "tcga_mosaic.tif"
    write_pyramid_tiff(np.concatenate(rows, axis=0), path, mpp)
    return path


def _grid_over(image: Path, mpp: float) -> np.ndarray:
    """Visium's 100 um grid of spot centres over an image, a patch's span from its edges."""
    from hist2rna_tf.spots.hest import image_size

    width, height = image_size(image)
    pitch, span = 100 / mpp, 112 / mpp
    xs, ys = np.arange(span, width - span, pitch), np.arange(span, height - span, pitch)
    return np.array([(x, y) for x in xs for y in ys])


def probe_time(samples: int, spots: int, dim: int) -> None:
    from hist2rna_tf.spots.bench import probe

    rng = np.random.default_rng(0)
    genes = [f"G{g}" for g in range(50)]
    x = rng.normal(size=(samples * spots, dim)).astype(np.float32)
    y = np.log1p(rng.poisson(3, size=(samples * spots, len(genes))).astype(np.float64))
    train = slice(0, (samples - 1) * spots)
    test = slice((samples - 1) * spots, None)
    start = time.perf_counter()
    probe(x[train], y[train], x[test], y[test], genes)
    print(f"probe: {samples - 1} samples x {spots} spots x {dim} features to train, {spots} to test, 50 genes: "
          f"{time.perf_counter() - start:.1f} s wall on {len(os.sched_getaffinity(0))} cores")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_spots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, help="a real slide to cut patches from, on a grid of spots")
    parser.add_argument("--slide-mpp", type=float, help="its um/px (default: the file's own)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--spots", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1536)
    args = parser.parse_args()

    from hist2rna_tf.spots.hest import open_image, read_hest_sample

    for sample_id in ("SYN1", "SYN2"):
        sample = read_hest_sample(SAMPLES, sample_id)
        patches_against_tiles(sample.image, sample.centres_px, sample.mpp, f"{sample_id} ({sample.mpp} um/px)")
    with tempfile.TemporaryDirectory() as tmp:  # real H&E at the paper's 0.25 um/px: a patch shrinks 448 -> 224
        mosaic = real_tissue(Path(tmp))
        patches_against_tiles(mosaic, _grid_over(mosaic, 0.25), 0.25, "TCGA tiles (0.25 um/px)")
    if args.slide:
        slide = open_image(args.slide)
        mpp = args.slide_mpp or float(slide.properties.get("openslide.mpp-x"))
        slide.close()
        patches_against_tiles(args.slide, _grid_over(args.slide, mpp), mpp, f"{args.slide.name} ({mpp:.3f} um/px)")
    probe_time(args.samples, args.spots, args.dim)


if __name__ == "__main__":
    main()
