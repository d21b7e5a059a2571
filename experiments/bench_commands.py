"""Where each command's time goes on small jobs (a benchmark, not a test): prints figures, asserts nothing.

Every `hist2rna` command is timed end to end in its own process, as a user runs it, on small inputs
built here (a one-tile pre-tiled folder, 8 TMA-core-like demo slides, one 1024-px image, a small
synthetic run). Then one extraction is taken apart in this process: importing TensorFlow, building
the backbone, the stain normaliser's first (compiling) call, the backbone's first (tracing) call,
and the work itself; what is left of the command's wall time is ours (planning, thumbnails, the
tf.data pipeline, writing).

Usage: python -m experiments.bench_commands [--backbone efficientnetv2s]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIST2RNA = [sys.executable, "-m", "hist2rna_tf.cli"]  # the commands keep TensorFlow's start-up lines quiet


def _timed(args: list[str]) -> float:
    """Wall seconds of `hist2rna ARGS` in a fresh process (its output discarded; a failure raises)."""
    start = time.perf_counter()
    done = subprocess.run([*HIST2RNA, *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"hist2rna {' '.join(args)} failed: {done.stderr[-800:]}")
    return time.perf_counter() - start


def _inputs(root: Path, tiles: Path) -> dict[str, Path]:
    """A one-tile pre-tiled folder, 8 small demo slides, a 1024-px image, a synthetic run's inputs."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from hist2rna_tf.demo.cohort import build_demo_cohort, real_tiles, write_demo_expression

    one = root / "one" / "TCGA-A2-A04R"
    one.mkdir(parents=True)
    shutil.copy(sorted(tiles.glob("TCGA-A2-A04R*.png"))[0], one)
    build_demo_cohort(root / "small", n_slides=8, seed=1, prefix="tma", grid=(5, 6))
    build_demo_cohort(root / "cohort", n_slides=12, seed=0)
    write_demo_expression(root / "cohort")
    tile = real_tiles()[0][0]
    Image.fromarray(np.tile(tile, (5, 5, 1))[:1024, :1024]).save(root / "image.png")
    rng = np.random.default_rng(0)
    from hist2rna_tf.expression import load_panel

    table = pd.DataFrame(rng.uniform(1, 500, (40, 50)), columns=load_panel("pam50")).rename_axis("sample")
    table.to_csv(root / "pam50.csv")
    return {"one": one.parent, "small": root / "small", "cohort": root / "cohort", "image": root / "image.png",
            "pam50": root / "pam50.csv"}


def command_times(root: Path, paths: dict[str, Path], backbone: str) -> list[tuple[str, float]]:
    """(command, wall seconds) for each command on its small input."""
    cohort, out = paths["cohort"], root / "out"
    extract = ["--backbone", backbone, "--weights", "none", "--no-progress"]
    rows = [("hist2rna --help", _timed(["--help"]))]
    rows.append(("extract: 1 tile", _timed(["extract", "--slides", str(paths["one"]), "--out", str(out / "one"),
                                            *extract])))
    rows.append(("extract: 8 TMA-core-like slides", _timed(["extract", "--slides", str(paths["small"] / "slides"),
                                                            "--out", str(out / "small"), *extract])))
    rows.append(("normalize: one 1024-px image", _timed(["normalize", str(paths["image"]), str(out / "n.png")])))
    rows.append(("extract: 12 demo slides (for the run below)", _timed([
        "extract", "--slides", str(cohort / "slides"), "--annotations", str(cohort / "annotations"), "--out",
        str(out / "features"), "--save-tile-features", *extract])))
    features = out / "features" / backbone
    rows.append(("train: 12 patients, 3 epochs", _timed([
        "train", "--features", str(features), "--expression", str(cohort / "expression.csv"), "--labels",
        str(cohort / "clinical.csv"), "--out", str(out / "run"), "--max-epochs", "3"])))
    rows.append(("predict: from features", _timed(["predict", str(out / "run"), "--features", str(features), "--out",
                                                   str(out / "p.csv")])))
    rows.append(("predict: 1 slide", _timed(["predict", str(out / "run"), "--slides",
                                             str(cohort / "slides" / "demo-01.tiff"), "--out", str(out / "q.csv"),
                                             "--no-progress"])))
    rows.append(("export: head and end to end", _timed(["export", str(out / "run"), "--out", str(out / "saved")])))
    rows.append(("spatial: 1 slide, 1 gene", _timed(["spatial", str(out / "run"), "--features", str(features),
                                                     "--slides", str(cohort / "slides" / "demo-01.tiff"), "--genes",
                                                     "ESR1", "--no-subtypes", "--out", str(out / "maps")])))
    rows.append(("report: the run alone", _timed(["report", str(out / "run"), "--n-boot", "100"])))
    rows.append(("subtype: 40 samples, nearest centroid", _timed(["subtype", "--expression", str(paths["pam50"]),
                                                                  "--out", str(out / "calls.csv")])))
    return rows


def extraction_parts(one: Path, backbone: str) -> list[tuple[str, float]]:
    """One extraction of one tile taken apart, in this process."""
    parts = []
    start = time.perf_counter()
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    parts.append(("import TensorFlow and list its devices", time.perf_counter() - start))
    start = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    from hist2rna_tf.config import ExtractConfig
    from hist2rna_tf.extract.cohort import extract_cohort
    from hist2rna_tf.extract.extractor import Extractor
    parts.append(("import Keras and the extraction's modules", time.perf_counter() - start))

    start = time.perf_counter()
    extractor = Extractor.build(ExtractConfig(backbone=backbone, weights="none"))
    parts.append(("build the backbone and the normaliser", time.perf_counter() - start))
    tiles = tf.constant(np.full((32, 224, 224, 3), 200, np.uint8))
    start = time.perf_counter()
    extractor.normaliser(tiles)
    parts.append(("the normaliser's first call (XLA compiles its stages)", time.perf_counter() - start))
    start = time.perf_counter()
    extractor.embed(tiles)
    first = time.perf_counter() - start
    start = time.perf_counter()
    extractor.embed(tiles)
    batch = time.perf_counter() - start
    parts.append(("the backbone's first call (Keras traces it), less one batch", first - batch))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        extract_cohort([one], out, extractor=extractor)
        parts.append(("the extraction itself, all compiled (plan, read, normalise, embed, write)",
                      time.perf_counter() - start))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_commands", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnetv2s")
    parser.add_argument("--only", choices=("commands", "parts"), help="one half (default: both)")
    args = parser.parse_args()
    tiles = Path(__file__).resolve().parents[1] / "hist2rna_tf" / "data" / "tcga_tiles"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = _inputs(root, tiles)
        one = [*HIST2RNA, "extract", "--slides", str(paths["one"]), "--out", str(root / "one"), "--backbone",
               args.backbone, "--weights", "none", "--no-progress"]
        if args.only != "parts":
            rows = command_times(root, paths, args.backbone)
            width = max(len(name) for name, _ in rows)
            print(f"each command in a fresh process ({os.cpu_count()} CPUs, backbone {args.backbone}, random weights):")
            for name, seconds in rows:
                print(f"  {name:<{width}}  {seconds:6.1f} s")
        if args.only != "commands":
            total = _timed(one[len(HIST2RNA):])
            parts = extraction_parts(paths["one"], args.backbone)
            print(f"extract: 1 tile ({total:.1f} s in a fresh process), taken apart in this one:")
            for name, seconds in parts:
                print(f"  {name:<72} {seconds:5.1f} s")
            print(f"  {'left: starting Python, importing the command line, writing the manifest':<72} "
                  f"{max(0.0, total - sum(s for _, s in parts)):5.1f} s")


if __name__ == "__main__":
    main()
