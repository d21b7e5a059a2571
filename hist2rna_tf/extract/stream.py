"""One tf.data stream over a cohort's tiles: slides planned a few ahead of their tiles, in parallel,
tiles read a batch per call by threads sharing the slide's one OpenSlide handle, batches of one
fixed shape. The extraction and the patch-based baseline's fine-tuning both read through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from hist2rna_tf.config import TileConfig
from hist2rna_tf.errors import ClaimedElsewhere
from hist2rna_tf.extract.plan import TilePlan, plan_tiles
from hist2rna_tf.extract.slides import SlideRef

# Slides planned (opened, masked, tiled) at once, ahead of their tiles: planning is most of a
# TMA core's cost, and runs beside the reading of earlier slides.
PLAN_AHEAD = 4

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
