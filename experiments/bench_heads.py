"""Benchmark of the heads at the scale of the field (a benchmark, not a test): prints figures.

  1. the paper's head (`--head hist2rna`) on 1,000 slide means x 20,531 genes (`--genes all` on TCGA's
     RSEM table), F = 1,536 (UNI2-h's): seconds per epoch, and the process's memory peak;
  2. ABMIL (`--head abmil`) on bags of 1,000 tiles x 1,536 features, streamed from feature records as
     `hist2rna train` streams them (model/inputs/bag.py): seconds per epoch of `--bags` bags, extrapolated to
     1,000 slides, and the memory peak (which a whole cohort's tiles, 6 GB here, never reach);
  3. SEQUOIA's (`--head sequoia`) on the same bags: each slide's 100 k-means cluster means computed once
     (seconds a slide; cached beside the records as `hist2rna train` caches them), then ViS trained on
     them for 20,531 genes (it predicts the transcriptome): seconds per epoch, extrapolated to 1,000
     slides, and the memory peak.

Each case runs in its own process, so that its memory peak (ru_maxrss) is its own. Random data (the
figures are of time and memory, not of learning). Usage:

    python -m experiments.bench_heads [--epochs 2] [--bags 48]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

N_SLIDES, ALL_GENES, FEATURES, TILES = 1000, 20531, 1536, 1000


def mean_case(epochs: int) -> dict:
    from experiments.bench_train import head_seconds_per_epoch  # starts TensorFlow quietly

    return {"seconds_per_epoch": head_seconds_per_epoch(FEATURES, epochs, N_SLIDES, ALL_GENES)}


def write_bags(folder: str, n_bags: int) -> list[list[str]]:
    """`n_bags` feature records of TILES random tile features each (one slide a patient)."""
    import numpy as np

    from hist2rna_tf.extract.records import SlideFeatures, record_path, write_record
    from hist2rna_tf.extract.settings import FeatureSettings

    rng = np.random.default_rng(0)
    settings = FeatureSettings("uni2-h", "none", "macenko", 224, 56.0)
    groups = []
    for s in range(n_bags):
        slide = f"TCGA-BH-{s:04d}-01Z-00-DX1"
        tiles = rng.normal(size=(TILES, FEATURES)).astype(np.float32)
        path = write_record(SlideFeatures(slide, slide[:12], settings, "bench", 0.25, TILES, 0, tiles.mean(0),
                                          np.zeros((TILES, 2), np.int64), tiles), record_path(folder, "uni2-h", slide))
        groups.append([str(path)])
    return groups


def bag_case(head: str, epochs: int, n_bags: int) -> dict:
    """ABMIL on the bags, or SEQUOIA's on their cluster means (computed first, timed apart)."""
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    import numpy as np

    from hist2rna_tf.model.heads import head_settings, with_head_training
    from hist2rna_tf.model.inputs import input_kind
    from hist2rna_tf.model.inputs.clusters import cluster_groups
    from hist2rna_tf.model.train import TrainConfig, fit

    settings = head_settings(head)
    n_genes = ALL_GENES if head == "sequoia" else 138
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        groups = write_bags(tmp, n_bags)
        if head == "sequoia":
            start = time.perf_counter()
            groups = cluster_groups(groups, settings.clusters)
            figures["kmeans_seconds_per_slide"] = (time.perf_counter() - start) / n_bags
        y = np.random.default_rng(1).normal(8, 2, size=(n_bags, n_genes)).astype(np.float32)
        config = with_head_training(TrainConfig(head=head, validation_fraction=0.1))

        def fit_seconds(n_epochs: int) -> float:
            start = time.perf_counter()
            _, history = fit(input_kind(head, settings, FEATURES), groups, y,
                             replace(config, max_epochs=n_epochs, patience=n_epochs))
            assert len(history) == n_epochs
            return time.perf_counter() - start

        fit_seconds(1)  # warm-up: the process's first model
        # a new model traces its steps in its first epoch: the epochs after it, timed as the difference
        one = fit_seconds(1)
        per_epoch = (fit_seconds(1 + epochs) - one) / epochs
    return {**figures, "seconds_per_epoch": per_epoch, "bags": n_bags, "batch": config.batch_size,
            "genes": n_genes, "seconds_per_epoch_1000": per_epoch * N_SLIDES / n_bags}


def run_case(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "experiments.bench_heads", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])  # the repository's folder: experiments.*
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_heads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per case")
    parser.add_argument("--bags", type=int, default=48, help="bags of 1,000 tiles written and trained on (ABMIL)")
    parser.add_argument("--case", choices=["mean", "abmil", "sequoia"], help=argparse.SUPPRESS)  # a case in its process
    args = parser.parse_args()
    if args.case:
        figures = mean_case(args.epochs) if args.case == "mean" else bag_case(args.case, args.epochs, args.bags)
        figures["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(json.dumps(figures))
        return
    print(f"machine: {os.cpu_count()} CPU cores")
    mean = run_case(["--case", "mean", "--epochs", str(args.epochs)])
    print(f"paper's head, {N_SLIDES} slide means x {ALL_GENES} genes (F={FEATURES}, batch 12): "
          f"{mean['seconds_per_epoch']:.1f} s/epoch, memory peak {mean['peak_gib']:.2f} GiB")
    bags = run_case(["--case", "abmil", "--epochs", str(args.epochs), "--bags", str(args.bags)])
    print(f"ABMIL, bags of {TILES} tiles x {FEATURES} features streamed from records (batch {bags['batch']}), "
          f"{bags['bags']} bags: {bags['seconds_per_epoch']:.1f} s/epoch -> {bags['seconds_per_epoch_1000']:.0f} "
          f"s/epoch for {N_SLIDES} slides; memory peak {bags['peak_gib']:.2f} GiB")
    seq = run_case(["--case", "sequoia", "--epochs", str(args.epochs), "--bags", str(args.bags)])
    print(f"SEQUOIA, the same bags as 100 k-means cluster means ({seq['kmeans_seconds_per_slide']:.2f} s a slide, "
          f"once, cached), {seq['genes']} genes (batch {seq['batch']}), {seq['bags']} bags: "
          f"{seq['seconds_per_epoch']:.1f} s/epoch -> {seq['seconds_per_epoch_1000']:.0f} s/epoch for {N_SLIDES} "
          f"slides; memory peak {seq['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
