"""Benchmark of feature extraction (a benchmark, not a test): prints figures, asserts nothing.

  1. tiles/s of the backbone alone on random uint8 tensors (the ceiling);
  2. tiles/s of the full pipeline from demo slides (read -> Macenko -> preprocess -> backbone -> mean),
     on slides of ~130 tiles and on TMA-core-like slides of ~9 (where per-slide costs show);
  3. tiles/s of the TensorFlow Macenko versus staintools' Macenko on the same real tiles, and where
     the TensorFlow Macenko's time goes, stage by stage.

Targets on the 2-core development machine: pipeline >= 0.85 x backbone alone (EfficientNetV2S),
TF Macenko >= 20 x staintools. Usage:

    python experiments/bench_extract.py [--backbone efficientnetv2s] [--slides 24] [--batch-size 32]

The backbone alone runs before and after the pipeline and the ratio uses their mean: on a shared
2-core machine a single short run of either varies by ~5%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hist2rna_tf.backbones import build_backbone  # noqa: E402
from hist2rna_tf.config import ExtractConfig, StainConfig  # noqa: E402
from hist2rna_tf.demo import build_demo_cohort, real_tiles  # noqa: E402
from hist2rna_tf.features import Extractor, embedding_fn, extract_cohort  # noqa: E402
from hist2rna_tf.stain import Macenko, staintools_normaliser_numpy  # noqa: E402


def backbone_alone(name: str, batch_size: int, n_batches: int) -> float:
    backbone = build_backbone(name, "none")
    embed = embedding_fn(backbone, 224)
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (batch_size, 224, 224, 3), dtype=np.uint8))
    embed(batch).numpy()  # compile
    start = time.perf_counter()
    for _ in range(n_batches):
        embed(batch).numpy()
    return batch_size * n_batches / (time.perf_counter() - start)


def full_pipeline(name: str, n_slides: int, batch_size: int, grid: tuple[int, int] = (10, 13)) -> tuple[float, int]:
    """tiles/s of extraction over `n_slides` demo slides (`grid`: their tissue area in tiles; (5, 6)
    gives TMA-core-like slides of ~9 tiles, where the per-slide costs show) and the tile count."""
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        build_demo_cohort(cohort, n_slides=n_slides + 1, grid=grid)
        # Build and compile once, warm up on one slide: tracing and XLA compilation are one-off costs
        # per process (seconds), negligible on a real cohort of ~1000 tiles a slide.
        extractor = Extractor.build(ExtractConfig(backbone=name, weights="none", batch_size=batch_size))
        warm = cohort / "slides" / "demo-01.tiff"
        extract_cohort([warm], Path(tmp) / "warm", annotations_dir=cohort / "annotations", extractor=extractor)
        slides = sorted((cohort / "slides").glob("*.tiff"))[1:]
        start = time.perf_counter()
        results = extract_cohort(slides, Path(tmp) / "features", annotations_dir=cohort / "annotations",
                                 extractor=extractor)
        seconds = time.perf_counter() - start
        tiles = sum(r.n_tiles for r in results)
        return tiles / seconds, tiles


def macenko_speeds(batch_size: int, repeats: int) -> tuple[float, float]:
    tiles, _ = real_tiles()
    batch = np.stack([tiles[i % len(tiles)] for i in range(batch_size)])
    macenko = Macenko(StainConfig())
    macenko(batch)  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        out, _ = macenko(batch)
        out.numpy()
    tf_rate = batch_size * repeats / (time.perf_counter() - start)
    normalise_one = staintools_normaliser_numpy(StainConfig(method="staintools-macenko"))
    sample = [tiles[i % len(tiles)] for i in range(64)]
    start = time.perf_counter()
    for tile in sample:
        normalise_one(tile.copy())
    staintools_rate = len(sample) / (time.perf_counter() - start)
    return tf_rate, staintools_rate


def macenko_stages(batch_size: int, repeats: int = 10) -> dict[str, float]:
    """Microseconds per tile of each stage of `Macenko.estimate` and the recomposition, run alone."""
    tiles, _ = real_tiles()
    batch = tf.constant(np.stack([tiles[i % len(tiles)] for i in range(batch_size)]))
    m = Macenko(StainConfig())
    timings = {}

    def timed(name, fn):
        out = fn()  # compile
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        timings[name] = (time.perf_counter() - start) / repeats / batch_size * 1e6
        return out

    stained, count, cov = timed("OD and covariance", lambda: m._stats(batch))
    plane = tf.cast(tf.linalg.eigh(tf.cast(cov, tf.float64))[1][:, :, 1:3], tf.float32)
    angles = tf.function(lambda b, p: tf.math.atan2(*reversed(m._project(b, p))))
    angle_percentiles = tf.function(m.angle_percentiles)
    concentration_percentiles = tf.function(m.concentration_percentiles)
    phi = timed("projections and angles", lambda: angles(batch, plane))
    low, high = timed("angle percentiles", lambda: angle_percentiles(phi, stained, count))
    _, conc = timed("concentrations", lambda: m._concentrations(batch, plane, low, high))
    max_c = timed("concentration percentiles", lambda: concentration_percentiles(conc))
    ok = tf.ones([batch_size], tf.bool)
    timed("recomposition", lambda: m._compose(batch, conc, max_c, ok, (1.0, 1.0)))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnetv2s")
    parser.add_argument("--slides", type=int, default=24, help="demo slides for the pipeline run")
    parser.add_argument("--small-slides", type=int, default=60, help="TMA-core-like slides (~9 tiles each)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}, "
          f"TensorFlow {tf.__version__}")
    before = backbone_alone(args.backbone, args.batch_size, n_batches=10)
    pipeline, n_tiles = full_pipeline(args.backbone, args.slides, args.batch_size)
    after = backbone_alone(args.backbone, args.batch_size, n_batches=10)
    alone = (before + after) / 2
    print(f"backbone alone ({args.backbone}, batch {args.batch_size}): {alone:.1f} tiles/s "
          f"(before the pipeline {before:.1f}, after {after:.1f})")
    print(f"full pipeline ({args.slides} demo slides, {n_tiles} tiles): {pipeline:.1f} tiles/s "
          f"= {pipeline / alone:.2f} x backbone alone (target >= 0.85)")
    small, n_small = full_pipeline(args.backbone, args.small_slides, args.batch_size, grid=(5, 6))
    print(f"full pipeline, small slides ({args.small_slides} TMA-core-like slides, {n_small} tiles, "
          f"~{n_small / args.small_slides:.0f} a slide): {small:.1f} tiles/s = {small / alone:.2f} x backbone alone")
    tf_rate, staintools_rate = macenko_speeds(args.batch_size, repeats=20)  # the pipeline's batches
    print(f"Macenko: TensorFlow {tf_rate:.0f} tiles/s, staintools {staintools_rate:.1f} tiles/s "
          f"= {tf_rate / staintools_rate:.1f} x (target >= 20)")
    stages = macenko_stages(args.batch_size)
    print("TF Macenko stage by stage, us per tile: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
