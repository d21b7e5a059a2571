"""Benchmark of the spatial maps (a benchmark, not a test): prints figures, asserts nothing.

On the demo (its run, its features with tile features) and one large slide of ~1000 tiles (the
paper's cap) extracted alike, times `write_spatial_maps` (the maps of the default genes, the PAM50
map, the tiles' CSV and, from 0.6.0, their QuPath objects) in this process, wall and CPU time
(all threads, and a child process's; CPU above wall means both cores worked):

  1. one small demo slide: the call's fixed costs (the head, the classifier, TensorFlow's first
     call) and one slide;
  2. the large slide: subtract (1) for what a 1,000-tile slide costs once its tile features exist
     (target: under 5 s on 2 cores);
  3. the whole demo cohort (36 slides) in one call;
  4. `hist2rna spatial` on the whole cohort in a fresh process (TensorFlow's start-up included).

Usage: python -m experiments.bench_spatial [--demo DIR]  (DIR: an existing `hist2rna demo --out DIR`;
default: a minimal demo is built in a temporary folder, ~2 minutes here)
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hist2rna_tf.tfenv import start_tensorflow

start_tensorflow()

from hist2rna_tf.config import SPATIAL_GENES, DemoConfig  # noqa: E402
from hist2rna_tf.demo.chain import run_demo  # noqa: E402
from hist2rna_tf.demo.cohort import build_demo_cohort  # noqa: E402
from hist2rna_tf.extract.cohort import extract_cohort  # noqa: E402
from hist2rna_tf.extract.records import read_record  # noqa: E402
from hist2rna_tf.extract.settings import read_extraction  # noqa: E402
from hist2rna_tf.report.spatial import write_spatial_maps  # noqa: E402

LARGE_GRID = (46, 50)  # 224-px cells of tissue: ~2,300 tiles, capped at the paper's 1,000


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(label: str, fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"{label}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_spatial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="an existing demo output folder (default: build one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = args.demo
        if demo is None:
            demo = tmp / "demo"
            run_demo(DemoConfig(out=demo, n_controls=0, n_external=0, export=False, baseline=False, progress=False))
        features = next(p for p in (demo / "features").iterdir() if (p / "extract_config.json").is_file())
        run, slides = demo / "run", sorted((demo / "cohort" / "slides").glob("*.tiff"))
        large = build_demo_cohort(tmp / "large", n_slides=1, prefix="large", grid=LARGE_GRID)
        large_slide = sorted((tmp / "large" / "slides").glob("*.tiff"))[0]
        extract_cohort([large_slide], features.parent, read_extraction(features).config)
        n_tiles = read_record(features / f"{large_slide.stem}.tfrecord").n_tiles
        print(f"demo: {demo} ({len(slides)} slides), a large slide of {n_tiles} tiles ({len(large)} built); "
              f"genes mapped: {' '.join(SPATIAL_GENES)} and the PAM50 call")
        genes = list(SPATIAL_GENES)
        small = timed("1. one small demo slide (the call's fixed costs + a slide)",
                      lambda: write_spatial_maps(run, features, [slides[0]], tmp / "one", genes))
        big = timed(f"2. the large slide ({n_tiles} tiles)",
                    lambda: write_spatial_maps(run, features, [large_slide], tmp / "large-maps", genes))
        print(f"   the large slide's own cost (2 - 1): {big[0] - small[0]:.2f} s wall, {big[1] - small[1]:.2f} s CPU")
        timed(f"3. the whole demo cohort ({len(slides)} slides) in one call",
              lambda: write_spatial_maps(run, features, slides, tmp / "cohort-maps", genes))
        command = [sys.executable, "-m", "hist2rna_tf.cli", "spatial", str(run), "--features", str(features),
                   "--slides", str(demo / "cohort" / "slides"), "--out", str(tmp / "cli-maps")]
        timed("4. `hist2rna spatial` on the whole cohort in a fresh process",
              lambda: subprocess.run(command, check=True, capture_output=True))


if __name__ == "__main__":
    main()
