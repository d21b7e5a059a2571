"""Benchmark of feature extraction (a benchmark, not a test): prints figures, asserts nothing.

  1. tiles/s of the backbone alone on random uint8 tensors (the ceiling);
  2. tiles/s of the full pipeline from demo slides (read -> Macenko -> preprocess -> backbone -> mean),
     on slides of ~130 tiles and on TMA-core-like slides of ~9 (where per-slide costs show);
  3. the FEED RATE: tiles/s the CPU side delivers (plan, read, Macenko, batch, mean, write) with a
     backbone that costs nothing (a Keras model that only pools), on large slides of real JPEG
     pixels (~1000 tiles at 0.25 um/px), differential over slide counts so start-up cancels; with
     `--stain none` (what the CPU does on a GPU machine, where Macenko runs on the GPU) and the
     parts beside it in the same run: OpenSlide reading alone (one thread), Macenko alone; then the
     per-slide cost on TMA-core-like slides, and a cost model (slides/hour for N cores and a GPU);
  4. tiles/s of the TensorFlow Macenko versus staintools' Macenko on the same real tiles, and where
     the TensorFlow Macenko's time goes, stage by stage;
  5. the Ray path (a private local instance) with 1 and 2 workers against one process, on the same
     demo slides and backbone (`--only ray`; needs `pip install 'hist2rna-tf[ray]'`);
  6. the pathology encoders (`--only encoders`), each in a fresh process: tiles/s of the full-size
     model alone (random weights, its own tile size and transform, `--precision` as given), the
     time to build it, and the process's memory peak; then, for a ViT-g (H-optimus-0, 1.1 B
     parameters), the memory peak of converting a checkpoint file of its exact layout (float16, as
     the hub's) and of the next process, which loads the cached conversion.

Targets on the 2-core development machine: pipeline >= 0.85 x backbone alone (EfficientNetV2S),
feed >= 125 tiles/s per core with Macenko (<= 8 core-ms a tile), TF Macenko >= 20 x staintools,
Ray >= 0.85 x one process.
Usage:

    python -m experiments.bench_extract [--backbone efficientnetv2s] [--slides 24] [--batch-size 32]
                                        [--only feed]

The backbone alone runs before and after the pipeline and the ratio uses their mean: on a shared
2-core machine a single short run of either varies by ~5%.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hist2rna_tf.tfenv import start_tensorflow

start_tensorflow()  # TensorFlow's C++ start-up lines kept off the output, as the CLI does

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hist2rna_tf.config import ExtractConfig, StainConfig, TileConfig, usable_cores  # noqa: E402
from hist2rna_tf.demo.cohort import build_demo_cohort, real_tiles  # noqa: E402
from hist2rna_tf.extract.backbones.build import build_backbone  # noqa: E402
from hist2rna_tf.extract.cohort import extract_cohort  # noqa: E402
from hist2rna_tf.extract.extractor import Extractor, embedding_fn, has_gpu  # noqa: E402
from hist2rna_tf.extract.plan import plan_tiles  # noqa: E402
from hist2rna_tf.extract.slides import find_slides  # noqa: E402
from hist2rna_tf.extract.stain.macenko import Macenko  # noqa: E402
from hist2rna_tf.extract.stain.normalisers import staintools_normaliser_numpy  # noqa: E402

# The feed's large slides: 46 x 50 cells of 224 px, tiled over the whole tissue (no annotation), so
# that each gives about the paper's cap of 1000 tiles (the cap's spread sample where it has more).
LARGE_GRID = (46, 50)


def backbone_alone(name: str, batch_size: int, n_batches: int) -> float:
    backbone = build_backbone(name, "none")
    return model_rate(backbone, 224, batch_size, n_batches)


def model_rate(backbone, tile_px: int, batch_size: int, n_batches: int) -> float:
    """tiles/s of `backbone`'s compiled step on random uint8 tiles (after one call that traces it)."""
    embed = embedding_fn(backbone, tile_px)
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (batch_size, tile_px, tile_px, 3), dtype=np.uint8))
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


def pooling_backbone(folder: Path) -> Path:
    """A Keras model file that only pools: the backbone of the feed rate, costing (almost) nothing."""
    import keras

    inputs = keras.Input((224, 224, 3))
    path = folder / "pool.keras"
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(path)
    return path


def timed_extraction(slides: list[Path], annotations: Path | None, extractor: Extractor,
                     out: Path) -> tuple[float, int]:
    """(seconds, tiles) of extracting `slides` into a fresh folder."""
    start = time.perf_counter()
    results = extract_cohort(slides, out, annotations_dir=annotations, extractor=extractor)
    return time.perf_counter() - start, sum(r.n_tiles for r in results)


def feed_rate(slides: list[Path], annotations: Path | None, extractor: Extractor, out: Path,
              counts: tuple[int, int]) -> tuple[float, float, int]:
    """(tiles/s, seconds per slide beyond its tiles' share, tiles a slide): the differential rate
    between extracting counts[0] and counts[1] of `slides` (after a warm-up on the first), so that
    start-up and compilation cancel."""
    timed_extraction(slides[:1], annotations, extractor, out / "warm")
    t0, n0 = timed_extraction(slides[1:1 + counts[0]], annotations, extractor, out / "few")
    t1, n1 = timed_extraction(slides[1:1 + counts[1]], annotations, extractor, out / "many")
    rate = (n1 - n0) / (t1 - t0)
    return rate, (t1 - t0) / (counts[1] - counts[0]), round((n1 - n0) / (counts[1] - counts[0]))


def read_alone(slide: Path, annotation: Path) -> tuple[float, list[np.ndarray]]:
    """tiles/s of one thread reading a slide's planned tiles (OpenSlide read_region -> RGB), and the tiles."""
    ref = find_slides([slide])[0]
    plan = plan_tiles(ref, TileConfig(), annotation)
    start = time.perf_counter()
    tiles = [plan.read(i) for i in range(len(plan.coords_px))]
    rate = len(tiles) / (time.perf_counter() - start)
    plan.close()
    return rate, tiles


def macenko_alone(tiles: list[np.ndarray], batch_size: int) -> float:
    """tiles/s of the TF Macenko on batches of real slide tiles (TensorFlow's threads: every core)."""
    macenko = Macenko(StainConfig())
    batches = [tf.constant(np.stack(tiles[k:k + batch_size])) for k in range(0, len(tiles) - batch_size + 1, batch_size)]
    macenko(batches[0])
    start = time.perf_counter()
    for batch in batches:
        macenko(batch)[0].numpy()
    return len(batches) * batch_size / (time.perf_counter() - start)


def feed(batch_size: int, n_large: int, n_small: int) -> dict[str, float]:
    """The feed-rate section: prints its figures and returns them (for the cost model)."""
    cores = usable_cores()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        large = build_demo_cohort(tmp / "large", n_slides=n_large + 1, grid=LARGE_GRID, prefix="large")
        small = build_demo_cohort(tmp / "small", n_slides=n_small + 1, grid=(5, 6), prefix="small")
        print(f"(built {n_large + 1} large and {n_small + 1} small slides in {time.perf_counter() - start:.0f} s)")
        pool = pooling_backbone(tmp)
        for method in ("macenko", "none"):
            extractor = Extractor.build(ExtractConfig(backbone=str(pool), weights="none", batch_size=batch_size,
                                                      stain=StainConfig(method=method)))
            rate, _, per_slide = feed_rate([s.slide_path for s in large], None, extractor, tmp / f"feed-{method}",
                                           (1, n_large))
            figures[method] = rate
            print(f"feed rate, stain {method} ({n_large - 1} large slides of ~{per_slide} tiles, differential, "
                  f"{extractor.read_threads} reader threads): {rate:.0f} tiles/s = {rate / cores:.0f} tiles/s per core "
                  f"= {1000 * cores / rate:.2f} core-ms a tile")
            if method == "macenko":
                small_rate, per_small, tiles_small = feed_rate(
                    [s.slide_path for s in small], tmp / "small" / "annotations", extractor, tmp / "feed-small",
                    (n_small // 4, n_small))
                beyond = per_small - tiles_small / rate
                figures["slide_ms"] = 1000 * beyond
                print(f"feed rate, stain macenko, TMA-core-like slides (~{tiles_small} tiles each): "
                      f"{small_rate:.0f} tiles/s; {1000 * per_small:.1f} ms a slide, of which {1000 * beyond:.1f} ms "
                      f"beyond its tiles' share ({1000 * beyond * cores:.0f} core-ms if every core works on it)")
        reading, tiles = read_alone(large[1].slide_path, None)
        normalising = macenko_alone(tiles, batch_size)
    figures["read"], figures["macenko_alone"] = reading, normalising
    print(f"parts, same slides: OpenSlide read -> RGB alone, one thread {reading:.0f} tiles/s "
          f"({1000 / reading:.2f} core-ms a tile); TF Macenko alone, batch {batch_size}, all {cores} cores: "
          f"{normalising:.0f} tiles/s ({1000 * cores / normalising:.2f} core-ms a tile at most)")
    return figures


def cost_model(figures: dict[str, float], cores: int, tiles_per_slide: int = 1000) -> None:
    """Slides/hour from the measured per-tile costs: the CPU side (core-ms a tile, with Macenko on a
    CPU machine, read-only on a GPU machine) against the backbone's throughput on a GPU."""
    cpu_macenko, cpu_read = 1000 * cores / figures["macenko"], 1000 * cores / figures["none"]
    slide_ms = max(figures["slide_ms"], 0.0) * cores  # core-ms a slide beyond its tiles
    print(f"cost model ({tiles_per_slide} tiles a slide; per-tile CPU cost {cpu_macenko:.2f} core-ms with Macenko, "
          f"{cpu_read:.2f} reading only; {slide_ms:.0f} core-ms a slide): slides/hour")
    print("  cores | CPU feed, Macenko on CPU | CPU feed, Macenko on GPU | GPU at 1000 / 2000 / 4000 tiles/s")
    for n in (4, 8, 16, 32, 64):
        feeds = [3600 * 1000 * n / (tiles_per_slide * cpu + slide_ms) for cpu in (cpu_macenko, cpu_read)]
        gpus = " / ".join(f"{3600 * g / tiles_per_slide:.0f}" for g in (1000, 2000, 4000))
        print(f"  {n:5d} | {feeds[0]:24.0f} | {feeds[1]:24.0f} | {gpus}")
    print("  (a run goes at the smaller of the CPU feed and the GPU; on a GPU machine the GPU also runs Macenko)")


def ray_against_one_process(name: str, n_slides: int, batch_size: int) -> None:
    """tiles/s of one process and of Ray with 1 worker (every core) and 2 workers (half each), on
    the same demo slides, each after a warm-up that builds and compiles every worker."""
    from hist2rna_tf.extract.distributed import RayWorkers

    cores = usable_cores()
    config = ExtractConfig(backbone=name, weights="none", batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_demo_cohort(tmp / "cohort", n_slides=n_slides + 2)
        annotations = tmp / "cohort" / "annotations"
        slides = sorted((tmp / "cohort" / "slides").glob("*.tiff"))
        warm, timed = slides[:2], slides[2:]
        one = Extractor.build(config)
        timed_extraction(warm, annotations, one, tmp / "warm-1")
        seconds, tiles = timed_extraction(timed, annotations, one, tmp / "one")
        single = tiles / seconds
        print(f"one process ({name}, {n_slides} demo slides, {tiles} tiles): {single:.1f} tiles/s")
        for workers in (1, 2):
            with RayWorkers.start(config, cpus_per_worker=max(1, cores // workers), num_cpus=cores) as pool:
                timed_extraction(warm, annotations, pool, tmp / f"warm-ray-{workers}")
                seconds, tiles = timed_extraction(timed, annotations, pool, tmp / f"ray-{workers}")
            print(f"Ray, {workers} worker{'s' if workers > 1 else ''} of {max(1, cores // workers)} CPUs: "
                  f"{tiles / seconds:.1f} tiles/s = {tiles / seconds / single:.2f} x one process (target >= 0.85)")


def encoder_figures(name: str, batch_size: int, n_batches: int, precision: str, weights: str = "none") -> dict:
    """One encoder in this process: build time, tiles/s of the model alone at its own tile size, and the
    process's memory peak (GiB)."""
    import resource

    from hist2rna_tf.extract.backbones.catalog import ENCODERS

    spec = ENCODERS[name]
    start = time.perf_counter()
    backbone = build_backbone(name, weights, spec.tile_size_px, precision)
    built = time.perf_counter() - start
    rate = model_rate(backbone, spec.tile_size_px, batch_size, n_batches)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"name": name, "built_s": built, "tiles_per_s": rate, "peak_gib": peak,
            "parameters_m": spec.vit.parameter_count / 1e6}


def vit_g_checkpoint(path: Path) -> None:
    """A random checkpoint of H-optimus-0's exact layout (timm's names and shapes), float16."""
    from safetensors.numpy import save_file

    from hist2rna_tf.extract.backbones.catalog import ENCODERS
    from hist2rna_tf.extract.backbones.checkpoints import layout_of

    vit = ENCODERS["h-optimus-0"].vit
    rng = np.random.default_rng(0)
    tensors = {name: (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)
               for _, sources in layout_of(vit).entries(vit, None) for source in sources
               for name, shape in zip(source.names, source.shapes)}
    save_file(tensors, str(path))


def _child(*args: str) -> dict:
    """This script's figures of one encoder (`--encoder NAME`) from a fresh process, so that each memory
    peak is its own."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def encoders(batch_size: int, n_batches: int, precision: str) -> None:
    from hist2rna_tf.extract.backbones.catalog import ENCODERS

    print(f"encoders, full size, random weights, batch {batch_size}, {precision}:")
    for name in ENCODERS:
        if name == "h-optimus-1":  # h-optimus-0's architecture
            continue
        f = _child("--encoder", name, "--batch-size", str(batch_size), "--batches", str(n_batches),
                   "--precision", precision)
        print(f"  {name:14s} {f['parameters_m']:7.0f} M parameters: {f['tiles_per_s']:6.2f} tiles/s, built in "
              f"{f['built_s']:5.1f} s, memory peak {f['peak_gib']:.1f} GiB")
    vit_g_memory()


def vit_g_memory() -> None:
    """A ViT-g (H-optimus-0) given a checkpoint file: the memory peak of the process converting it, and
    of the next, which loads the cached conversion."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.safetensors"
        vit_g_checkpoint(checkpoint)
        for label in ("converting the file", "from the cache"):
            f = _child("--encoder", "h-optimus-0", "--weights", str(checkpoint), "--batch-size", "1", "--batches", "1",
                       "--cache", str(Path(tmp) / "cache"))
            print(f"  h-optimus-0 with a {checkpoint.stat().st_size / 2 ** 30:.1f} GiB float16 checkpoint, {label}: "
                  f"built in {f['built_s']:.1f} s, memory peak {f['peak_gib']:.1f} GiB")


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

    for name, step in m.stages(batch):
        timed(name, step)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_extract", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnetv2s")
    parser.add_argument("--slides", type=int, default=24, help="demo slides for the pipeline run")
    parser.add_argument("--small-slides", type=int, default=60, help="TMA-core-like slides (~9 tiles each)")
    parser.add_argument("--large-slides", type=int, default=3, help="large slides (~1000 tiles) for the feed rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", choices=("pipeline", "feed", "macenko", "ray", "encoders"),
                        help="run one section (default: all but ray and encoders)")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed"), help="for --only encoders")
    parser.add_argument("--batches", type=int, default=2, help="timed batches an encoder (--only encoders)")
    parser.add_argument("--encoder", help=argparse.SUPPRESS)  # one encoder's figures as JSON (a child process)
    parser.add_argument("--weights", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)  # where the child caches converted weights
    args = parser.parse_args()
    if args.encoder:
        import json

        if args.cache:
            import hist2rna_tf.extract.backbones.weights as weights

            weights.cache_folder = lambda: Path(args.cache)

        print(json.dumps(encoder_figures(args.encoder, args.batch_size, args.batches, args.precision, args.weights)))
        return
    cores = usable_cores()
    print(f"machine: {cores} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}, "
          f"TensorFlow {tf.__version__}")
    if args.only in (None, "pipeline"):
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
    if args.only in (None, "feed"):
        figures = feed(args.batch_size, args.large_slides, args.small_slides)
        print(f"feed target: >= 125 tiles/s per core with Macenko: {figures['macenko'] / cores:.0f} "
              f"({'met' if figures['macenko'] / cores >= 125 else 'NOT met'})"
              f"{'; on this GPU machine Macenko runs on the GPU' if has_gpu() else ''}")
        cost_model(figures, cores)
    if args.only in (None, "macenko"):
        tf_rate, staintools_rate = macenko_speeds(args.batch_size, repeats=20)  # the pipeline's batches
        print(f"Macenko: TensorFlow {tf_rate:.0f} tiles/s, staintools {staintools_rate:.1f} tiles/s "
              f"= {tf_rate / staintools_rate:.1f} x (target >= 20)")
        stages = macenko_stages(args.batch_size)
        print("TF Macenko stage by stage, us per tile: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    if args.only == "ray":
        ray_against_one_process(args.backbone, args.slides, args.batch_size)
    if args.only == "encoders":
        encoders(args.batch_size, args.batches, args.precision)


if __name__ == "__main__":
    main()
