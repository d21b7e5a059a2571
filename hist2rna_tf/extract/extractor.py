"""The extraction step: the backbone and the normaliser built once (`Extractor`), a cohort's tile
stream through them, and a running mean per slide that becomes its record as soon as its last tile
has passed (`stream_features`). No slide's tiles are ever all in memory.

Where the normaliser runs: on a CPU machine inside the tf.data pipeline (beside the backbone, on
other cores); on a GPU machine in the step, on the GPU with the backbone, so that the CPU only reads
tiles. Both give the same features (tested).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from hist2rna_tf import __version__
from hist2rna_tf.config import ExtractConfig, usable_cores
from hist2rna_tf.errors import ClaimedElsewhere, DeviceError, SlideError
from hist2rna_tf.extract.backbones.build import Backbone, build_backbone
from hist2rna_tf.extract.records import SlideFeatures
from hist2rna_tf.extract.settings import FeatureSettings, off_scale, with_absolute_files
from hist2rna_tf.extract.slides import SlideRef
from hist2rna_tf.extract.stain.normalisers import make_normaliser, resolve_stain_config
from hist2rna_tf.extract.stream import CohortStream
from hist2rna_tf.progress import bar as progress_bar

log = logging.getLogger(__name__)


def embedding_fn(backbone: Backbone, tile_size_px: int, xla: bool = False):
    """A compiled uint8 tiles [B, T, T, 3] -> features [B, F] function (`xla`: XLA-compiled)."""
    spec = tf.TensorSpec([None, tile_size_px, tile_size_px, 3], tf.uint8)

    @tf.function(input_signature=[spec], jit_compile=xla)
    def embed(tiles):
        return backbone.features(tf.cast(tiles, tf.float32))

    return embed


def _warn_off_scale(config: ExtractConfig) -> None:
    """Say when a pathology encoder is given tiles at another scale than it was trained at."""
    why = off_scale(config)
    if why:
        log.warning("%s", why)


def has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def check_device_options(config: ExtractConfig, gpu: bool) -> None:
    """A DeviceError naming each GPU-only option asked for on a machine without a GPU: both are
    slower on a CPU (measured on 2 cores, EfficientNetV2S, batch 16: float16 1.4x, XLA 3.7x)."""
    asked = []
    if config.precision != "float32":
        asked.append(f"--precision {config.precision} (half-precision arithmetic: float16 is 1.4x slower than float32 "
                     "on a CPU)")
    if config.xla:
        asked.append("--xla (XLA-compiled backbones run 3.7x slower on a CPU)")
    if asked and not gpu:
        raise DeviceError(f"TensorFlow sees no GPU on this machine, and {' and '.join(asked)} only help on "
                          "one; run without them here (the features are the same to float rounding).")


@dataclass
class Extractor:
    """A built feature extractor: backbone, stain normaliser and compiled step, reusable across runs
    (building and compiling take seconds; a notebook builds one and extracts many cohorts). Its
    `config` is the one run: stain targets fitted, model and weights files as absolute paths.
    `normalise_on_device`: the normaliser runs in the step (GPU machines; see the module docstring)."""

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
        _warn_off_scale(config)
        backbone = build_backbone(config.backbone, config.weights, config.tiles.tile_size_px, config.precision)
        stain = resolve_stain_config(config.stain)
        # (staintools' normalisers are numpy, and `none` has nothing to move: they stay in the pipeline)
        on_device = (gpu if normalise_on_device is None else normalise_on_device) and stain.is_macenko
        normaliser = make_normaliser(stain, selection="top_k" if on_device and gpu else "nth_element")
        return cls(replace(with_absolute_files(config), stain=stain), backbone, normaliser,
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
    bar = progress_bar(unit="tile", desc="tiles", enabled=progress, smoothing=0.1)
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
            if len(real):  # drawn by the update, as often as the bar redraws (off a terminal: every few seconds)
                bar.set_postfix_str(f"slide {int(real[-1]) + 1}/{len(refs)}: {refs[int(real[-1])].slide_id}",
                                    refresh=False)
            bar.update(len(real))
            if len(real):
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
    settings = FeatureSettings(backbone.name, backbone.weights_tag, normaliser_tag, tiles.tile_size_px,
                               tiles.tile_size_um)
    record = SlideFeatures(
        slide_id=ref.slide_id, patient_id=ref.patient_id, settings=settings, version=__version__, mpp=plan.mpp,
        n_tiles=count, n_unnormalised=unnormalised, feature=mean, tile_xy_px=plan.coords_px,
        tile_features=tile_features)
    return record, plan.candidate_tiles


def _as_slide_error(ref: SlideRef, exc: BaseException, while_doing: str = "opening") -> SlideError:
    """One clear line for a library error (OpenSlide, Pillow, OS) raised while handling a slide."""
    if isinstance(exc, SlideError):
        return exc
    return SlideError(f"{ref.path}: {while_doing} failed ({type(exc).__name__}: {exc}). The file (or its "
                      "annotation) may be truncated or corrupt; re-download or re-export it.")
