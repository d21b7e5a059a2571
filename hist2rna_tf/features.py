"""Slides -> tile coordinates -> parallel reads -> stain normalisation -> backbone -> running mean.

Everything streams through tf.data: a slide's tiles are read by `read_threads` workers (each with its
own OpenSlide handle), batched, normalised by TensorFlow ops, embedded by the frozen backbone, and
summed into a running mean; no slide's tiles are ever all in memory. One TFRecord per slide is
written atomically; a run manifest lists each slide as done, skipped (already done) or failed, and
a re-run resumes. `shard_index/shard_count` split a cohort across processes or machines.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import openslide
import tensorflow as tf
from tqdm.auto import tqdm

from . import __version__
from .backbones import Backbone, build_backbone
from .config import ExtractConfig, TileConfig, to_dict
from .errors import Hist2RNAError, RecordError, SlideError
from .records import SlideFeatures, read_record, record_path, write_record
from .regions import select_tiles, spread_sample
from .slides import (SlideRef, TileReader, find_slides, open_slide, read_tile_file, slide_mpp,
                     tile_file_xy, tile_folder_files)
from .stain import make_normaliser, resolve_stain_config

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("slide_id", "patient_id", "status", "reason", "n_tiles", "n_unnormalised",
                   "candidate_tiles", "seconds", "record", "source")


@dataclass
class SlideResult:
    """One line of the run manifest."""

    slide_id: str
    patient_id: str
    status: str  # done | skipped | failed
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
    read: callable
    candidate_tiles: int


def plan_tiles(ref: SlideRef, tiles: TileConfig, annotation_path: Path | None) -> TilePlan:
    """Select a slide's tiles (tissue x annotation, grid, cap) and build its reader."""
    if ref.kind == "tiles":
        return _plan_tile_folder(ref, tiles)
    slide = open_slide(ref)
    try:
        mpp = slide_mpp(slide, ref, tiles.mpp_override)
        if mpp > tiles.target_mpp * 1.05:
            log.warning("%s: scanned at %.3f um/px, coarser than the target %.3f um/px; tiles are upsampled.",
                        ref.path, mpp, tiles.target_mpp)
        coords, summary = select_tiles(slide, mpp, tiles, annotation_path, ref.path)
    finally:
        slide.close()
    reader = TileReader(ref, mpp, tiles.target_mpp, tiles.tile_size_px)
    return TilePlan(coords, mpp, lambda i: reader.read(*coords[i]), summary["candidate_tiles"])


def _plan_tile_folder(ref: SlideRef, tiles: TileConfig) -> TilePlan:
    files = tile_folder_files(ref.path)
    coords = np.array([tile_file_xy(f) for f in files], dtype=np.int64).reshape(-1, 2)
    if len(files) > tiles.max_tiles:
        if (coords >= 0).all():
            keep = spread_sample(coords, tiles.max_tiles)
            index = {tuple(c): i for i, c in enumerate(coords)}
            picks = [index[tuple(c)] for c in keep]
        else:
            picks = np.unique(np.round(np.linspace(0, len(files) - 1, tiles.max_tiles)).astype(int)).tolist()
        files, coords = [files[i] for i in picks], coords[picks]
    # Ready-made tiles are taken to be at the target resolution already (the authors' layout).
    mpp = tiles.mpp_override or tiles.target_mpp
    return TilePlan(coords, mpp, lambda i: read_tile_file(files[i], tiles.tile_size_px), len(files))


# --- the streaming pipeline -------------------------------------------------------------------------


class _FirstError:
    """Keeps the first Python exception raised inside tf.numpy_function, which TF would flatten."""

    def __init__(self):
        self.error: BaseException | None = None

    def wrap(self, fn):
        def guarded(i):
            try:
                return fn(int(i))
            except BaseException as exc:
                self.error = self.error or exc
                raise
        return guarded


def tile_dataset(plan: TilePlan, tile_size_px: int, batch_size: int, read_threads: int, normaliser,
                 errors: _FirstError) -> tf.data.Dataset:
    """Batches of (normalised uint8 tiles [B, T, T, 3], normalised flags [B]) in coordinate order."""
    read = errors.wrap(plan.read)

    def load(i):
        tile = tf.numpy_function(read, [i], tf.uint8, stateful=False)
        return tf.ensure_shape(tile, [tile_size_px, tile_size_px, 3])

    return (tf.data.Dataset.range(len(plan.coords_px))
            .map(load, num_parallel_calls=max(1, read_threads), deterministic=True)
            .batch(batch_size)
            .map(normaliser, num_parallel_calls=1)
            .prefetch(2))


def embedding_fn(backbone: Backbone, tile_size_px: int):
    """A compiled uint8 tiles [B, T, T, 3] -> features [B, F] function."""
    spec = tf.TensorSpec([None, tile_size_px, tile_size_px, 3], tf.uint8)

    @tf.function(input_signature=[spec])
    def embed(tiles):
        return backbone.features(tf.cast(tiles, tf.float32))

    return embed


def extract_slide(ref: SlideRef, config: ExtractConfig, backbone: Backbone, embed, normaliser,
                  normaliser_tag: str, annotation_path: Path | None = None, progress: bool = False
                  ) -> tuple[SlideFeatures, int]:
    """The mean feature vector of one slide (and its candidate tile count). Raises SlideError."""
    tiles = config.tiles
    plan = plan_tiles(ref, tiles, annotation_path)
    errors = _FirstError()
    dataset = tile_dataset(plan, tiles.tile_size_px, config.batch_size, config.read_threads, normaliser, errors)
    total = np.zeros(backbone.feature_dim, dtype=np.float64)
    n_tiles = n_unnormalised = 0
    per_tile = [] if config.save_tile_features else None
    bar = tqdm(total=len(plan.coords_px), desc=ref.slide_id, unit="tile", leave=False, disable=not progress)
    try:
        for images, normalised in dataset:
            feats = embed(images).numpy()
            total += feats.sum(axis=0, dtype=np.float64)
            n_tiles += len(feats)
            n_unnormalised += int((~normalised.numpy()).sum())
            if per_tile is not None:
                per_tile.append(feats.astype(np.float32))
            bar.update(len(feats))
    except tf.errors.OpError as exc:
        raise _read_failure(ref, errors.error, exc) from None
    finally:
        bar.close()
    if n_unnormalised:
        log.info("%s: %d of %d tiles had too little stain to normalise and passed through unchanged.",
                 ref.slide_id, n_unnormalised, n_tiles)
    record = SlideFeatures(
        slide_id=ref.slide_id, patient_id=ref.patient_id, backbone=backbone.name, weights=backbone.weights_tag,
        normaliser=normaliser_tag, version=__version__, tile_size_px=tiles.tile_size_px,
        tile_size_um=tiles.tile_size_um, mpp=plan.mpp, n_tiles=n_tiles, n_unnormalised=n_unnormalised,
        feature=(total / max(n_tiles, 1)).astype(np.float32), tile_xy_px=plan.coords_px,
        tile_features=np.concatenate(per_tile) if per_tile else None)
    return record, plan.candidate_tiles


def _read_failure(ref: SlideRef, error: BaseException | None, exc: Exception) -> SlideError:
    if isinstance(error, SlideError):
        return error
    detail = f"{type(error).__name__}: {error}" if error is not None else exc.message.splitlines()[0]
    return SlideError(f"{ref.path}: reading tiles failed ({detail}). The file may be truncated or corrupt; "
                      "re-download or re-export it.")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for result in results:
            row = {key: getattr(result, key) for key in MANIFEST_FIELDS}
            row["seconds"] = f"{result.seconds:.2f}"
            writer.writerow(row)
    os.replace(tmp, path)


def _existing(path: Path, backbone: Backbone, normaliser_tag: str, tiles: TileConfig) -> SlideFeatures | None:
    """The stored record when it was made with the same settings; None when there is none."""
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except RecordError:
        log.warning("%s is unreadable (an interrupted run?); extracting again.", path)
        return None
    wanted = (backbone.weights_tag, normaliser_tag, tiles.tile_size_px, round(tiles.tile_size_um, 4))
    found = (record.weights, record.normaliser, record.tile_size_px, round(record.tile_size_um, 4))
    if wanted != found:
        raise SlideError(f"{path} exists with other settings (weights, normaliser, tile px, tile um = {found}, "
                         f"this run: {wanted}); use another --out or --overwrite.")
    return record


def extract_cohort(inputs: list[str | Path], out_dir: str | Path, config: ExtractConfig = ExtractConfig(),
                   annotations_dir: str | Path | None = None, progress: bool = False) -> list[SlideResult]:
    """Extract and store features for every slide under `inputs` (this shard's share).

    Failed slides are recorded and the others go on; returns the manifest rows (also written to
    `<out_dir>/<backbone>/manifest.csv`, with the run's config beside it as extract_config.json).
    """
    out_dir = Path(out_dir)
    refs = shard(find_slides(inputs, config.tiles.tile_size_px), config.shard_index, config.shard_count)
    backbone = build_backbone(config.backbone, config.weights, config.tiles.tile_size_px)
    stain = resolve_stain_config(config.stain)
    normaliser = make_normaliser(stain)
    embed = embedding_fn(backbone, config.tiles.tile_size_px)
    config = replace(config, stain=stain)
    _write_config(out_dir / backbone.name / "extract_config.json", config, backbone)
    manifest = manifest_path(out_dir, backbone.name, config.shard_index, config.shard_count)
    annotations_dir = Path(annotations_dir) if annotations_dir else None
    results: list[SlideResult] = []
    slides_bar = tqdm(refs, desc="slides", unit="slide", disable=not progress)
    for ref in slides_bar:
        results.append(_extract_one(ref, out_dir, config, backbone, embed, normaliser, stain.tag,
                                    annotations_dir, progress))
        write_manifest(results, manifest)
    write_manifest(results, manifest)
    return results


def _extract_one(ref, out_dir, config, backbone, embed, normaliser, normaliser_tag, annotations_dir,
                 progress) -> SlideResult:
    start = time.perf_counter()
    path = record_path(out_dir, backbone.name, ref.slide_id)
    result = SlideResult(ref.slide_id, ref.patient_id, "failed", str(ref.path), record=str(path))
    try:
        existing = None if config.overwrite else _existing(path, backbone, normaliser_tag, config.tiles)
        if existing is not None:
            result.status, result.n_tiles, result.n_unnormalised = "skipped", existing.n_tiles, existing.n_unnormalised
            return result
        annotation = annotation_for(ref, annotations_dir)
        record, candidates = extract_slide(ref, config, backbone, embed, normaliser, normaliser_tag,
                                           annotation, progress)
        write_record(record, path)
        result.status, result.n_tiles, result.n_unnormalised = "done", record.n_tiles, record.n_unnormalised
        result.candidate_tiles = candidates
    except SlideError as exc:
        result.reason, result.record = str(exc), ""
        log.error("%s", exc)
    except (OSError, ValueError, openslide.OpenSlideError) as exc:  # raw library errors: still one line
        result.reason, result.record = (f"{ref.path}: {type(exc).__name__}: {exc}. The file may be truncated "
                                        "or corrupt; re-download or re-export it."), ""
        log.error("%s", result.reason)
    finally:
        result.seconds = time.perf_counter() - start
    return result


def _write_config(path: Path, config: ExtractConfig, backbone: Backbone) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": __version__, "backbone": backbone.name, "feature_dim": backbone.feature_dim,
               "weights": backbone.weights_tag, "config": to_dict(config)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)
