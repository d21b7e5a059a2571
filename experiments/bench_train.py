"""Benchmark of the head and the end-to-end export (a benchmark, not a test): prints figures.

  1. training time of the paper's head on 335 patients x F features (random data, 138 genes) for
     each backbone's F: seconds per epoch, and the time for the paper's maximum of 150 epochs;
  2. inference time of the end-to-end SavedModel (tiles of one slide -> genes), EfficientNetV2S.

Target on the 2-core development machine: the head trains in under a minute. Usage:

    python experiments/bench_train.py [--epochs 20] [--tiles 128]
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

from hist2rna_tf.backbones import BACKBONES, build_backbone  # noqa: E402
from hist2rna_tf.config import StainConfig  # noqa: E402
from hist2rna_tf.demo import real_tiles  # noqa: E402
from hist2rna_tf.export import export_end_to_end  # noqa: E402
from hist2rna_tf.head import build_head  # noqa: E402
from hist2rna_tf.train import TrainConfig, fit_head  # noqa: E402

N_PATIENTS, N_GENES = 335, 138


def head_seconds_per_epoch(feature_dim: int, epochs: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_PATIENTS, feature_dim)).astype(np.float32)
    y = rng.normal(8, 2, size=(N_PATIENTS, N_GENES)).astype(np.float32)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs timed per backbone")
    parser.add_argument("--tiles", type=int, default=128, help="tiles for the end-to-end timing")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}, "
          f"TensorFlow {tf.__version__}")
    for spec in BACKBONES.values():
        per_epoch = head_seconds_per_epoch(spec.feature_dim, args.epochs)
        print(f"head, {spec.paper_name} (F={spec.feature_dim}), {N_PATIENTS} patients, batch 12: "
              f"{per_epoch:.2f} s/epoch; 150 epochs (the paper's maximum) = {150 * per_epoch:.0f} s")
    per_tile = export_seconds_per_tile(args.tiles)
    print(f"end-to-end export (EfficientNetV2S, Macenko, head): {1000 * per_tile:.1f} ms/tile = "
          f"{1000 * per_tile:.0f} s for a 1000-tile slide")


if __name__ == "__main__":
    main()
