"""Benchmark of the head and the end-to-end export (a benchmark, not a test): prints figures.

  1. training time of the paper's head on 335 patients x F features (random data, 138 genes) for
     each backbone's F: seconds per epoch, and the time for the paper's maximum of 150 epochs;
  2. inference time of the end-to-end SavedModel (tiles of one slide -> genes), EfficientNetV2S;
  3. the patch-based baseline (frozen) at the paper's scale: one epoch over 335 patients x 1000
     tiles of EfficientNetV2S features (F=1280), extrapolated from `--bench-slides` stored slides of
     1000 tiles each, streamed from TFRecords like `hist2rna baseline`; against the head's epoch.

Target on the 2-core development machine: the head trains in under a minute. Usage:

    python -m experiments.bench_train [--epochs 20] [--tiles 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hist2rna_tf.tfenv import start_tensorflow

start_tensorflow()  # TensorFlow's C++ start-up lines kept off the output, as the CLI does

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hist2rna_tf.config import StainConfig  # noqa: E402
from hist2rna_tf.demo.cohort import real_tiles  # noqa: E402
from hist2rna_tf.extract.backbones.build import build_backbone  # noqa: E402
from hist2rna_tf.extract.backbones.catalog import BACKBONES  # noqa: E402
from hist2rna_tf.extract.records import SlideFeatures, record_path, write_record  # noqa: E402
from hist2rna_tf.extract.settings import FeatureSettings  # noqa: E402
from hist2rna_tf.model.baseline import tile_dataset  # noqa: E402
from hist2rna_tf.model.export import export_end_to_end  # noqa: E402
from hist2rna_tf.model.heads.paper import build as build_head  # noqa: E402
from hist2rna_tf.model.train import TrainConfig, fit_head  # noqa: E402

N_PATIENTS, N_GENES = 335, 138


def head_seconds_per_epoch(feature_dim: int, epochs: int, n_patients: int = N_PATIENTS, n_genes: int = N_GENES
                           ) -> float:
    """The paper's head's seconds per epoch on random patients x features and targets (batch 12)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_patients, feature_dim)).astype(np.float32)
    y = rng.normal(8, 2, size=(n_patients, n_genes)).astype(np.float32)
    fit_head(x[:24], y[:24], TrainConfig(max_epochs=1))  # warm-up: tracing
    start = time.perf_counter()
    # patience = epochs: run every epoch (random targets would stop early and flatter the figure)
    _, history = fit_head(x, y, TrainConfig(max_epochs=epochs, patience=epochs))
    return (time.perf_counter() - start) / len(history)


def export_seconds_per_tile(n_tiles: int) -> float:
    backbone = build_backbone("efficientnetv2s", "none")
    head = build_head(backbone.feature_dim, N_GENES)
    tiles, _ = real_tiles()
    batch = tf.constant(np.stack([tiles[i % len(tiles)] for i in range(n_tiles)]))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_end_to_end(backbone, head, [f"g{i}" for i in range(N_GENES)], StainConfig(), Path(tmp) / "1")
        model = tf.saved_model.load(str(path))
        model.serve(batch[:32])  # warm-up
        start = time.perf_counter()
        model.serve(batch)["log2_expression"].numpy()
        return (time.perf_counter() - start) / n_tiles


def patch_seconds_per_tile(n_slides: int, n_tiles: int = 1000, feature_dim: int = 1280) -> float:
    """Seconds per training tile of the frozen patch-based baseline (batch 12, tf.data from TFRecords)."""
    import keras
    import pandas as pd

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for s in range(n_slides):
            slide = f"TCGA-BB-{s:04d}-01Z-00-DX1"
            tiles = rng.normal(size=(n_tiles, feature_dim)).astype(np.float32)
            settings = FeatureSettings("efficientnetv2s", "none", "macenko", 224, 56.0)
            path = write_record(SlideFeatures(slide, slide[:12], settings, "bench", 0.25, n_tiles, 0, tiles.mean(0),
                                              np.zeros((n_tiles, 2), np.int64), tiles),
                                record_path(tmp, "efficientnetv2s", slide))
            rows.append({"slide_id": slide, "patient_id": slide[:12], "path": str(path), "n_tiles": n_tiles})
        slides = pd.DataFrame(rows).set_index("slide_id")
        targets = pd.DataFrame(rng.normal(8, 2, size=(n_slides, N_GENES)), index=slides["patient_id"])
        model = build_head(feature_dim, N_GENES)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        data = tile_dataset(slides, targets, 12, 8192, 0)
        model.fit(data.take(20), verbose=0, shuffle=False)  # warm-up: tracing; tf.data shuffles
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return (time.perf_counter() - start) / (n_slides * n_tiles)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs timed per backbone")
    parser.add_argument("--tiles", type=int, default=128, help="tiles for the end-to-end timing")
    parser.add_argument("--bench-slides", type=int, default=12, help="slides of 1000 tiles for the patch-based timing")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}, "
          f"TensorFlow {tf.__version__}")
    head_epoch = {}
    for spec in BACKBONES.values():
        per_epoch = head_epoch[spec.name] = head_seconds_per_epoch(spec.feature_dim, args.epochs)
        print(f"head, {spec.paper_name} (F={spec.feature_dim}), {N_PATIENTS} patients, batch 12: "
              f"{per_epoch:.2f} s/epoch; 150 epochs (the paper's maximum) = {150 * per_epoch:.0f} s")
    per_tile = export_seconds_per_tile(args.tiles)
    print(f"end-to-end export (EfficientNetV2S, Macenko, head): {1000 * per_tile:.1f} ms/tile = "
          f"{1000 * per_tile:.0f} s for a 1000-tile slide")
    per_tile = patch_seconds_per_tile(args.bench_slides)
    epoch = per_tile * N_PATIENTS * 1000
    print(f"patch-based baseline (frozen EfficientNetV2S features, batch 12): {1e6 * per_tile:.0f} us/tile = "
          f"{epoch:.0f} s per epoch of {N_PATIENTS} x 1000 tiles, {epoch / head_epoch['efficientnetv2s']:.0f}x the "
          "head's epoch on slide means")


if __name__ == "__main__":
    main()
