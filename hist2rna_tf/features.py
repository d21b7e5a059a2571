"""Slides -> tile coordinates -> parallel reads -> stain normalisation -> backbone -> running mean.

Everything streams through one tf.data pipeline per run: slides are planned a few ahead of their
tiles, their tiles read a batch at a time by `read_threads` workers (sharing the slide's one
OpenSlide handle), normalised by TensorFlow ops (in the pipeline on a CPU machine, on the GPU with
the backbone on a GPU machine), embedded by the frozen backbone, and summed into a running mean per
slide; no slide's or cohort's tiles are ever all in memory. One TFRecord per slide is
written atomically; a run manifest lists each slide as done, skipped (already done) or failed, and
a re-run resumes. `shard_index/shard_count` split a cohort across processes or machines.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from . import __version__
from .atomic import atomic_path, remove_stale_temp_files, write_text
from .backbones import Backbone, build_backbone
from .claims import SlideClaims
from .config import (EXTRACT_CONFIG_FILE, ExtractConfig, TileConfig, current_stain_method, extract_config_from_dict,
                     to_dict, usable_cores)
from .errors import ClaimedElsewhere, DeviceError, Hist2RNAError, RecordError, SettingsError, SlideError
from .records import (SlideFeatures, feature_settings, is_record_file, read_record, record_path,
                      settings_differences, write_record)
from .regions import select_tiles, spread_sample
from .slides import (SlideRef, TileReader, find_slides, open_slide, patient_id, read_tile_file, slide_mpp,
                     tile_file_xy, tile_folder_files)
from .stain import make_normaliser, resolve_stain_config

log = logging.getLogger(__name__)

# A slide scanned more than this many times coarser than the target is refused (20x scans, ~0.5 um/px
# for 0.25 um/px tiles, are upsampled 2x with a warning).
MAX_UPSAMPLING = 4.0
# Slides planned (opened, masked, tiled) at once, ahead of their tiles: planning is most of a
# TMA core's cost, and runs beside the reading of earlier slides.
PLAN_AHEAD = 4

MANIFEST_FIELDS = ("slide_id", "patient_id", "status", "reason", "n_tiles", "n_unnormalised",
                   "candidate_tiles", "seconds", "record", "source")


@dataclass
class SlideResult:
    """One line of the run manifest."""

    slide_id: str
    patient_id: str
    status: str  # pending (not finished yet: an interrupted run's) | done | skipped | failed
    source: str
    reason: str = ""
    n_tiles: int = 0
    n_unnormalised: int = 0
    candidate_tiles: int = 0
    seconds: float = 0.0
    record: str = ""


# --- which tiles, and how to read them --------------------------------------------------------------


@dataclass
class TilePlan:
    """The tiles chosen for one slide and a thread-safe way to read tile `i` as uint8 RGB."""

    coords_px: np.ndarray  # int64 [N, 2], level-0 top-left
    mpp: float
    read: Callable[[int], np.ndarray]  # tile index -> uint8 [T, T, 3]
    candidate_tiles: int
    close: Callable[[], None] = lambda: None  # releases the slide once its tiles are read


def plan_tiles(ref: SlideRef, tiles: TileConfig, annotation_path: Path | None) -> TilePlan:
    """Select a slide's tiles (tissue x annotation, grid, cap) and build its reader (which keeps
    the slide open until the plan's `close()`)."""
    if ref.kind == "tiles":
        return _plan_tile_folder(ref, tiles)
    slide = open_slide(ref)
    try:
        mpp = slide_mpp(slide, ref, tiles.mpp_override)
        if mpp > tiles.target_mpp * MAX_UPSAMPLING:
            raise SlideError(f"{ref.path}: {mpp:.3g} um/px, more than {MAX_UPSAMPLING:g}x coarser than the "
                             f"{tiles.target_mpp:g} um/px tiles: its tiles would be blurred up from a few pixels. If the "
                             "resolution read is wrong, give the right one with --mpp; otherwise it is not a "
                             "scan at a usable magnification.")
        if mpp > tiles.target_mpp * 1.05:
            log.warning("%s: scanned at %.3f um/px, coarser than the target %.3f um/px; tiles are upsampled.",
                        ref.path, mpp, tiles.target_mpp)
        coords, summary = select_tiles(slide, mpp, tiles, annotation_path, ref.path)
        reader = TileReader(ref, mpp, tiles.target_mpp, tiles.tile_size_px, slide=slide)
    except BaseException:
        slide.close()
        raise
    return TilePlan(coords, mpp, lambda i: reader.read(*coords[i]), summary["candidate_tiles"], reader.close)


def _plan_tile_folder(ref: SlideRef, tiles: TileConfig) -> TilePlan:
    """Ready-made tiles (the authors' layout: one folder per patient), taken as they are: at the
    target resolution (an image file carries none), `--tile-px` square, of one patient."""
    files = tile_folder_files(ref.path)
    if tiles.mpp_override and abs(tiles.mpp_override / tiles.target_mpp - 1) > 0.05:
        raise SlideError(f"{ref.path}: pre-tiled folders are used as they are, so their tiles must already be at the "
                         f"target {tiles.target_mpp:g} um/px (--mpp {tiles.mpp_override:g} was given); re-tile the "
                         "slide, or give --target-mpp to match the tiles.")
    barcodes = sorted({patient_id(f.name) for f in files} - {f.name for f in files})
    if len(barcodes) > 1:
        raise SlideError(f"{ref.path}: tiles of {len(barcodes)} TCGA patients ({', '.join(barcodes[:4])}"
                         f"{', ...' if len(barcodes) > 4 else ''}) in one folder would be averaged into one slide; "
                         "put each slide's (or patient's) tiles in a folder of its own.")
    coords = np.array([tile_file_xy(f) for f in files], dtype=np.int64).reshape(-1, 2)
    if len(files) > tiles.max_tiles:
        if (coords >= 0).all():
            keep = spread_sample(coords, tiles.max_tiles)
            index = {tuple(c): i for i, c in enumerate(coords)}
            picks = [index[tuple(c)] for c in keep]
        else:
            picks = np.unique(np.round(np.linspace(0, len(files) - 1, tiles.max_tiles)).astype(int)).tolist()
        files, coords = [files[i] for i in picks], coords[picks]
    mpp = tiles.target_mpp
    return TilePlan(coords, mpp, lambda i: read_tile_file(files[i], tiles.tile_size_px), len(files))


# --- the streaming pipeline -------------------------------------------------------------------------
# One tf.data stream carries the tiles of all slides in order, so the backbone never waits for a
# slide to start or drain; batches may span slides and every batch has the same shape (the last
# is padded), so nothing is traced or compiled twice. Each tile carries its slide's index; the
# consumer adds its features to that slide's running sum and finalises a slide once a later
# slide's tiles arrive (the stream is ordered).


class CohortStream:
    """Plans slides lazily (in tf.data's generator thread) and reads their tiles thread-safely.

    A slide whose planning fails is recorded in `plans` as its exception and yields no tiles; a
    tile read that fails records the exception in `read_errors` and yields a blank tile, so one bad
    slide never stops the stream.
    """

    def __init__(self, refs: list[SlideRef], tiles: TileConfig, annotations: list[Path | None],
                 claim: Callable[[int], ClaimedElsewhere | None] | None = None):
        self.refs, self.tiles, self.annotations, self.claim = refs, tiles, annotations, claim
        self.plans: dict[int, TilePlan | BaseException] = {}
        self.read_errors: dict[int, BaseException] = {}

    def plan(self, s) -> np.int64:
        """Plan slide `s` (called lazily by tf.data, just before its tiles); returns its tile count."""
        s = int(s)
        elsewhere = self.claim(s) if self.claim is not None else None
        if elsewhere is not None:  # another run has it (or has finished it): leave it
            self.plans[s] = elsewhere
            return np.int64(0)
        self.release(s)  # planned again (a new epoch of the patch-based baseline): its earlier handle goes
        try:
            plan = plan_tiles(self.refs[s], self.tiles, self.annotations[s])
        except Exception as exc:  # noqa: BLE001 - whatever one slide raises fails that slide alone, named
            self.plans[s] = exc
            return np.int64(0)
        self.plans[s] = plan
        return np.int64(len(plan.coords_px))

    def read(self, s, i) -> np.ndarray:
        s, i = int(s), int(i)
        if s not in self.read_errors:
            try:
                return self.plans[s].read(i)
            except BaseException as exc:  # recorded per slide; the slide fails, the stream goes on
                self.read_errors[s] = exc
        return np.full((self.tiles.tile_size_px,) * 2 + (3,), 255, np.uint8)

    def read_batch(self, slides: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """uint8 [b, T, T, 3]: tile indices[k] of slide slides[k], for each k, in order."""
        return np.stack([self.read(s, i) for s, i in zip(slides, indices)])

    def release(self, s: int) -> None:
        """Close slide `s` (all its tiles have been read)."""
        plan = self.plans.get(s)
        if isinstance(plan, TilePlan):
            plan.close()

    def release_all(self) -> None:
        for s in list(self.plans):
            self.release(s)

    def batches(self, batch_size: int, read_threads: int, order: tf.data.Dataset | None = None,
                max_tiles: int | None = None, plan_ahead: int = PLAN_AHEAD) -> tf.data.Dataset:
        """Batches of (slide index [b], uint8 tiles [b, T, T, 3]) as read (the last may be short):
        the slides in `order` (a dataset of slide indices; default each in turn), at most `max_tiles`
        tiles of each.

        Slides are planned `plan_ahead` at a time in parallel, ahead of their tiles (planning is
        most of a small slide's cost); tiles are read a batch per call, `read_threads` batches
        at a time (one call per tile cost a quarter of the reading in tf.data's overhead)."""
        size = self.tiles.tile_size_px

        def planned(s):
            # (Not Dataset.from_generator: its iterator's teardown can block for seconds.)
            count = tf.reshape(tf.numpy_function(self.plan, [s], tf.int64, stateful=True), [])
            return s, count if max_tiles is None else tf.minimum(count, max_tiles)

        def slide_tiles(s, count):
            return tf.data.Dataset.range(count).map(lambda i: (s, i))

        def load(slide, index):
            tiles = tf.numpy_function(self.read_batch, [slide, index], tf.uint8, stateful=True)
            return slide, tf.ensure_shape(tiles, [None, size, size, 3])

        order = tf.data.Dataset.range(len(self.refs)) if order is None else order
        return (order.map(planned, num_parallel_calls=max(1, plan_ahead), deterministic=True)
                .flat_map(slide_tiles)
                .batch(batch_size)
                .map(load, num_parallel_calls=max(1, read_threads), deterministic=True))

    def dataset(self, batch_size: int, read_threads: int, normaliser=None,
                plan_ahead: int = PLAN_AHEAD) -> tf.data.Dataset:
        """Batches of (slide index [B] (-1: padding), uint8 tiles [B, T, T, 3], normalised [B]) of
        every slide in turn, padded to `batch_size`: normalised by `normaliser` when one is given,
        else as read (normalised all False). See `batches`."""
        size = self.tiles.tile_size_px

        def pad(slide, tiles):
            missing = batch_size - tf.shape(slide)[0]
            slide = tf.pad(slide, [[0, missing]], constant_values=-1)
            tiles = tf.pad(tiles, [[0, missing], [0, 0], [0, 0], [0, 0]], constant_values=255)
            return tf.ensure_shape(slide, [batch_size]), tf.ensure_shape(tiles, [batch_size, size, size, 3])

        def normalise(slide, tiles):
            if normaliser is None:
                return slide, tiles, tf.zeros([batch_size], tf.bool)
            tiles, normalised = normaliser(tiles)
            return slide, tiles, normalised

        # Parallelism is fixed, so tf.data's autotuner is off: its model thread made the iterator's
        # teardown block for 8-15 s, at random, at the end of a run (measured on TF 2.21).
        options = tf.data.Options()
        options.autotune.enabled = False
        return (self.batches(batch_size, read_threads, plan_ahead=plan_ahead)
                .map(pad).map(normalise).prefetch(2).with_options(options))


def embedding_fn(backbone: Backbone, tile_size_px: int, xla: bool = False):
    """A compiled uint8 tiles [B, T, T, 3] -> features [B, F] function (`xla`: XLA-compiled)."""
    spec = tf.TensorSpec([None, tile_size_px, tile_size_px, 3], tf.uint8)

    @tf.function(input_signature=[spec], jit_compile=xla)
    def embed(tiles):
        return backbone.features(tf.cast(tiles, tf.float32))

    return embed


def has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def check_device_options(config: ExtractConfig, gpu: bool) -> None:
    """A DeviceError naming each GPU-only option asked for on a machine without a GPU: both are
    slower on a CPU (measured on 2 cores, EfficientNetV2S, batch 16: float16 1.4x, XLA 3.7x)."""
    asked = []
    if config.precision != "float32":
        asked.append(f"--precision {config.precision} (float16 arithmetic: 1.4x slower than float32 on a CPU)")
    if config.xla:
        asked.append("--xla (XLA-compiled backbones run 3.7x slower on a CPU)")
    if asked and not gpu:
        raise DeviceError(f"TensorFlow sees no GPU on this machine, and {' and '.join(asked)} only help on "
                          "one; run without them here (the features are the same to float rounding).")


@dataclass
class Extractor:
    """A built feature extractor: backbone, stain normaliser and compiled step, reusable across runs
    (building and compiling take seconds; a notebook builds one and extracts many cohorts).

    Where the normaliser runs: on a CPU machine in the tf.data pipeline (beside the backbone, on
    other cores); on a GPU machine in the step, on the GPU with the backbone, so that the CPU only
    reads tiles (`normalise_on_device`). Both give the same features (tested)."""

    config: ExtractConfig
    backbone: Backbone
    normaliser: object
    embed: object
    normalise_on_device: bool = False

    @classmethod
    def build(cls, config: ExtractConfig = ExtractConfig(), normalise_on_device: bool | None = None) -> "Extractor":
        """`normalise_on_device`: None decides by the machine (True when TensorFlow sees a GPU)."""
        gpu = has_gpu()
        check_device_options(config, gpu)
        backbone = build_backbone(config.backbone, config.weights, config.tiles.tile_size_px, config.precision)
        stain = resolve_stain_config(config.stain)
        # (staintools' normalisers are numpy, and `none` has nothing to move: they stay in the pipeline)
        on_device = (gpu if normalise_on_device is None else normalise_on_device) and stain.is_macenko
        normaliser = make_normaliser(stain, selection="top_k" if on_device and gpu else "nth_element")
        return cls(replace(config, stain=stain), backbone, normaliser,
                   embedding_fn(backbone, config.tiles.tile_size_px, config.xla), on_device)

    @property
    def normaliser_tag(self) -> str:
        return self.config.stain.tag

    @property
    def read_threads(self) -> int:
        """The config's, else two per usable core (a reader waits on the GIL part of the time:
        measured 12% more tiles/s than one per core with the paper's Macenko on 2 cores)."""
        return self.config.read_threads or 2 * usable_cores()

    def dataset(self, stream: "CohortStream") -> tf.data.Dataset:
        """The stream's batches, normalised in the pipeline unless the step normalises."""
        normaliser = None if self.normalise_on_device else self.normaliser
        return stream.dataset(self.config.batch_size, self.read_threads, normaliser)

    def extract(self, refs: list[SlideRef], annotations: list[Path | None], claim=None, progress: bool = False):
        """Yield (index, SlideFeatures or SlideError or ClaimedElsewhere, candidate tiles, seconds) for
        each slide, in order (see `stream_features`); the interface `distributed.RayWorkers` shares."""
        start = time.perf_counter()
        for k, record, candidates in stream_features(refs, self, annotations, progress, claim):
            yield k, record, candidates, time.perf_counter() - start
            start = time.perf_counter()

    def features(self, tiles, normalised):
        """(features [B, F], normalised [B]) of a batch from `dataset`, as numpy."""
        if self.normalise_on_device:
            tiles, normalised = self.normaliser(tiles)
        return self.embed(tiles).numpy(), np.asarray(normalised)


class _Accumulator:
    """Running per-slide sums of tile features (and optionally the tiles' own features).

    Tiles are added one at a time in their slide's tile order, so a slide's sum (and record) is the
    same to the bit however batches split it: alone, within a cohort, in a shard, after a resume.
    (A tile's features do not depend on the rest of its batch: checked bit for bit on CPU.)"""

    def __init__(self, feature_dim: int, keep_tiles: bool):
        self.feature_dim, self.keep_tiles = feature_dim, keep_tiles
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}
        self.unnormalised: dict[int, int] = {}
        self.tiles: dict[int, list[np.ndarray]] = {}

    def add(self, slide: np.ndarray, feats: np.ndarray, normalised: np.ndarray) -> None:
        for s in np.unique(slide[slide >= 0]):
            rows = slide == s
            s = int(s)
            total = self.sums.setdefault(s, np.zeros(self.feature_dim))
            for tile in feats[rows]:
                total += tile
            self.counts[s] = self.counts.get(s, 0) + int(rows.sum())
            self.unnormalised[s] = self.unnormalised.get(s, 0) + int((~normalised[rows]).sum())
            if self.keep_tiles:
                self.tiles.setdefault(s, []).append(feats[rows].astype(np.float32))

    def pop(self, s: int) -> tuple[np.ndarray, int, int, np.ndarray | None]:
        """(mean feature [F], tile count, unnormalised count, per-tile features or None)."""
        count = self.counts.pop(s, 0)
        mean = (self.sums.pop(s, np.zeros(self.feature_dim)) / max(count, 1)).astype(np.float32)
        tiles = self.tiles.pop(s, None)
        return mean, count, self.unnormalised.pop(s, 0), (np.concatenate(tiles) if tiles else None)


def stream_features(refs: list[SlideRef], extractor: Extractor, annotations: list[Path | None],
                    progress: bool = False, claim: Callable[[int], ClaimedElsewhere | None] | None = None):
    """Yield (slide index, SlideFeatures, SlideError or ClaimedElsewhere, candidate tiles) for each
    slide, in order. `claim(i)`, when given, is asked just before slide i is planned: None to go on,
    else a ClaimedElsewhere saying why not."""
    config, backbone = extractor.config, extractor.backbone
    normaliser_tag = extractor.normaliser_tag
    stream = CohortStream(refs, config.tiles, annotations, claim)
    dataset = extractor.dataset(stream)
    acc = _Accumulator(backbone.feature_dim, config.save_tile_features)
    bar = tqdm(unit="tile", desc="tiles", disable=not progress, smoothing=0.1)
    finished = 0

    def finalise_up_to(limit: int):
        nonlocal finished
        while finished < limit:
            yield finished, *_finalise(finished, stream, acc, refs[finished], config, backbone, normaliser_tag)
            finished += 1

    try:
        for slide, tiles, normalised in dataset:
            slide = slide.numpy()
            acc.add(slide, *extractor.features(tiles, normalised))
            real = slide[slide >= 0]
            bar.update(len(real))
            if len(real):
                bar.set_postfix_str(f"slide {int(real[-1]) + 1}/{len(refs)}: {refs[int(real[-1])].slide_id}")
                yield from finalise_up_to(int(real.min()))
        bar.close()
        yield from finalise_up_to(len(refs))
    finally:
        stream.release_all()  # slides an interrupted stream left open


def _finalise(s: int, stream: CohortStream, acc: _Accumulator, ref: SlideRef, config: ExtractConfig,
              backbone: Backbone, normaliser_tag: str):
    mean, count, unnormalised, tile_features = acc.pop(s)
    stream.release(s)  # every tile of slide s has been read
    plan = stream.plans.get(s)
    if isinstance(plan, ClaimedElsewhere):
        return plan, 0
    if isinstance(plan, BaseException):
        return _as_slide_error(ref, plan), 0
    if s in stream.read_errors:
        return _as_slide_error(ref, stream.read_errors[s], "reading tiles"), plan.candidate_tiles
    if plan is None or count != len(plan.coords_px):  # cannot happen unless the stream broke
        return SlideError(f"{ref.path}: {count} of {0 if plan is None else len(plan.coords_px)} tiles arrived."), 0
    if unnormalised:
        log.info("%s: %d of %d tiles had too little stain to normalise and passed through unchanged.",
                 ref.slide_id, unnormalised, count)
    tiles = config.tiles
    record = SlideFeatures(
        slide_id=ref.slide_id, patient_id=ref.patient_id, backbone=backbone.name, weights=backbone.weights_tag,
        normaliser=normaliser_tag, version=__version__, tile_size_px=tiles.tile_size_px,
        tile_size_um=tiles.tile_size_um, mpp=plan.mpp, n_tiles=count, n_unnormalised=unnormalised,
        feature=mean, tile_xy_px=plan.coords_px, tile_features=tile_features)
    return record, plan.candidate_tiles


def _as_slide_error(ref: SlideRef, exc: BaseException, while_doing: str = "opening") -> SlideError:
    """One clear line for a library error (OpenSlide, Pillow, OS) raised while handling a slide."""
    if isinstance(exc, SlideError):
        return exc
    return SlideError(f"{ref.path}: {while_doing} failed ({type(exc).__name__}: {exc}). The file (or its "
                      "annotation) may be truncated or corrupt; re-download or re-export it.")


# --- a cohort ---------------------------------------------------------------------------------------


def shard(refs: list[SlideRef], shard_index: int, shard_count: int) -> list[SlideRef]:
    """This process's share of the (sorted) slides: every shard_count-th, from shard_index."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise Hist2RNAError(f"--shard {shard_index}/{shard_count}: expected i/n with 0 <= i < n.")
    return refs[shard_index::shard_count]


def annotation_for(ref: SlideRef, annotations_dir: Path | None) -> Path | None:
    """`<dir>/<slide_id>.geojson` (or .json); a SlideError when the folder lacks it."""
    if annotations_dir is None:
        return None
    for suffix in (".geojson", ".json"):
        candidate = annotations_dir / f"{ref.slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise SlideError(f"{ref.path}: no annotation {annotations_dir / (ref.slide_id + '.geojson')}. Export it "
                     "from QuPath under that name, or run without --annotations to use the whole tissue.")


def manifest_path(out_dir: Path, backbone: str, shard_index: int, shard_count: int) -> Path:
    name = "manifest.csv" if shard_count == 1 else f"manifest.shard-{shard_index}-of-{shard_count}.csv"
    return Path(out_dir) / backbone / name


def write_manifest(results: list[SlideResult], path: Path) -> None:
    """Write this run's rows into the manifest at `path`, keeping the rows of slides this run did not
    touch (earlier runs into the folder, or other runs at the same time: the read-merge-write holds
    an exclusive lock on `.manifest.lock` beside it), sorted by slide id, atomically."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".manifest.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some cluster mounts): merge unlocked
            log.warning("%s: cannot lock the manifest (%s); concurrent runs may drop each other's rows.", path, exc)
        rows = {row["slide_id"]: row for row in _manifest_rows(path)}
        for result in results:
            row = {key: getattr(result, key) for key in MANIFEST_FIELDS}
            row["seconds"] = f"{result.seconds:.2f}"
            if result.status == "pending" and rows.get(result.slide_id, {}).get("status", "pending") != "pending":
                continue  # another run's finished row stands until this run finishes the slide itself
            rows[result.slide_id] = row
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows[slide_id] for slide_id in sorted(rows))


def _manifest_rows(path: Path) -> list[dict]:
    """The rows of an existing manifest (none when there is none or it is unreadable)."""
    try:
        with open(path, newline="") as handle:
            return [row for row in csv.DictReader(handle) if row.get("slide_id")]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _existing(path: Path, backbone: Backbone, normaliser_tag: str, tiles: TileConfig,
              need_tile_features: bool = False) -> SlideFeatures | None:
    """The stored record when it was made with the same settings; None when there is none (or when
    per-tile features are wanted and it has none: it is extracted again, with them)."""
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except RecordError:
        log.warning("%s is unreadable (an interrupted run?); extracting again.", path)
        return None
    wanted = feature_settings(backbone.name, backbone.weights_tag, normaliser_tag, tiles.tile_size_px,
                              tiles.tile_size_um)
    changes = settings_differences(wanted, record.settings)
    if changes:
        raise SlideError(f"{path} exists with other settings (this run -> the record: {'; '.join(changes)}); "
                         "use another --out or --overwrite.")
    if need_tile_features and record.tile_features is None:
        log.info("%s has no per-tile features; extracting again with them.", path)
        return None
    return record


def extract_cohort(inputs: list[str | Path], out_dir: str | Path, config: ExtractConfig = ExtractConfig(),
                   annotations_dir: str | Path | None = None, progress: bool = False,
                   extractor: Extractor | None = None) -> list[SlideResult]:
    """Extract and store features for every slide under `inputs` (this shard's share).

    Failed slides are recorded and the others go on; returns the manifest rows (also written to
    `<out_dir>/<backbone>/manifest.csv`, with the run's config beside it as extract_config.json).
    Pass a built `extractor` to reuse it (its config then wins over `config`): an Extractor (this
    process) or a `distributed.RayWorkers` (a Ray cluster; this process still writes every record
    and the manifest, as results arrive).
    """
    out_dir = Path(out_dir)
    extractor = extractor or Extractor.build(config)
    config, backbone, stain = extractor.config, extractor.backbone, extractor.config.stain
    refs = shard(find_slides(inputs, config.tiles.tile_size_px), config.shard_index, config.shard_count)
    config_path = out_dir / backbone.name / EXTRACT_CONFIG_FILE
    changes = [] if config.overwrite else settings_changes(config_path, config, backbone)
    if changes and any(is_record_file(f) for f in config_path.parent.glob("*.tfrecord")):
        raise SettingsError(f"{config_path.parent} holds features made with other settings ({'; '.join(changes)}); "
                            "adding to them would mix the two. Use another --out, or --overwrite to replace them.")
    _write_config(config_path, config, backbone)
    stale = remove_stale_temp_files(config_path.parent)
    if stale:
        log.info("removed %d temp files an interrupted run left in %s.", len(stale), config_path.parent)
    manifests = {manifest_path(out_dir, backbone.name, config.shard_index, config.shard_count),
                 manifest_path(out_dir, backbone.name, 0, 1)}  # a shard's own, and the folder's combined view
    annotations_dir = Path(annotations_dir) if annotations_dir else None

    results: dict[int, SlideResult] = {}
    todo: list[int] = []
    annotations: list[Path | None] = []
    for s, ref in enumerate(refs):
        result = SlideResult(ref.slide_id, ref.patient_id, "pending", str(ref.path))
        path = record_path(out_dir, backbone.name, ref.slide_id)
        try:
            existing = None if config.overwrite else _existing(path, backbone, stain.tag, config.tiles,
                                                               config.save_tile_features)
            if existing is not None:
                result.status, result.record = "skipped", str(path)
                result.n_tiles, result.n_unnormalised = existing.n_tiles, existing.n_unnormalised
            else:
                annotations.append(annotation_for(ref, annotations_dir))
                todo.append(s)
        except SlideError as exc:
            result.status, result.reason = "failed", str(exc)
            log.debug("failed: %s", exc)  # reported once, in the manifest and the CLI summary
        results[s] = result
    ordered = lambda: [results[s] for s in sorted(results)]  # noqa: E731
    for manifest in manifests:
        write_manifest(ordered(), manifest)
    claims = SlideClaims(config_path.parent)

    def claim(k: int) -> ClaimedElsewhere | None:
        """Hold slide todo[k] for this run: None, or why not (another run has it, or has done it)."""
        ref = refs[todo[k]]
        holder = claims.acquire(ref.slide_id)
        if holder is not None:
            return ClaimedElsewhere(f"being extracted by another run ({holder})")
        path = record_path(out_dir, backbone.name, ref.slide_id)
        try:
            done = not config.overwrite and _existing(path, backbone, stain.tag, config.tiles,
                                                      config.save_tile_features) is not None
        except SlideError:
            done = False  # another run wrote other settings meanwhile: this run's settings win
        if done:
            claims.release(ref.slide_id)
            return ClaimedElsewhere("done by another run", done=True)
        return None

    try:
        if todo:
            for k, record, candidates, seconds in extractor.extract([refs[s] for s in todo], annotations, claim,
                                                                    progress):
                result = results[todo[k]]
                result.seconds, result.candidate_tiles = seconds, candidates
                _record_outcome(result, record, out_dir, backbone)
                claims.release(result.slide_id)
                for manifest in manifests:
                    write_manifest(ordered(), manifest)
    finally:
        claims.release_all()
    return ordered()


def _record_outcome(result: SlideResult, record, out_dir: Path, backbone: Backbone) -> None:
    """Write a finished slide's record and fill in its manifest row (done, failed, or another run's)."""
    path = record_path(out_dir, backbone.name, result.slide_id)
    if isinstance(record, ClaimedElsewhere):
        if record.done:
            result.status, result.record, result.reason = "skipped", str(path), str(record)
        else:
            result.reason = str(record)  # still pending: its row is the other run's to write
    elif isinstance(record, SlideError):
        result.status, result.reason = "failed", str(record)
        log.debug("failed: %s", record)
    else:
        write_record(record, path)
        result.status, result.record = "done", str(path)
        result.n_tiles, result.n_unnormalised = record.n_tiles, record.n_unnormalised


# Settings that change what a feature is; the others (batch size, threads, shards, ...) do not.
_FEATURE_SETTINGS = ("backbone", "weights", "tiles", "stain")


def read_extract_config(path: Path) -> dict:
    """A folder's extract_config.json, its stain method in today's names (before 0.2.0 `macenko`
    was HEnorm's natural-log variant). Raises OSError, ValueError or KeyError when unreadable."""
    saved = json.loads(Path(path).read_text())
    stain = saved["config"]["stain"]
    stain["method"] = current_stain_method(stain["method"], saved.get("version"))
    return saved


def extraction_settings(saved: dict) -> dict:
    """The FEATURE_SETTINGS (records.py) of an extract_config.json's run, as its records carry them."""
    config = extract_config_from_dict(saved["config"])
    return feature_settings(saved["backbone"], saved["weights"], config.stain.tag, config.tiles.tile_size_px,
                            config.tiles.tile_size_um)


def settings_changes(path: Path, config: ExtractConfig, backbone: Backbone) -> list[str]:
    """'field: before -> now' for each feature-shaping setting that differs from the run recorded in
    `path` (an extract_config.json); [] when there is none or nothing differs."""
    if not path.exists():
        return []
    try:
        saved = read_extract_config(path)
        before = {"backbone": saved["backbone"], "weights": saved["weights"],
                  "tiles": saved["config"]["tiles"], "stain": saved["config"]["stain"]}
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{path.name}: unreadable"]
    now = json.loads(json.dumps({"backbone": backbone.name, "weights": backbone.weights_tag,
                                 "tiles": to_dict(config.tiles), "stain": to_dict(config.stain)}))
    return settings_differences(before, now, _FEATURE_SETTINGS)


def _write_config(path: Path, config: ExtractConfig, backbone: Backbone) -> None:
    payload = {"version": __version__, "backbone": backbone.name, "feature_dim": backbone.feature_dim,
               "weights": backbone.weights_tag, "config": to_dict(config)}
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))
