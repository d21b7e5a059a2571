"""Spot features in the tool's one feature store: a sample's spots embedded at HEST's patches
(patches.py; at a run's own tile size and scale when extracted like a run, for its maps to be scored
at the spots), through embed.py's normaliser and backbone, and written as one feature record
(extract/records.py) per sample, `<out>/<backbone>/<sample_id>.tfrecord`: each spot a tile (its
features, its patch's top-left in full-resolution pixels, its barcode as the tile's name), the
sample's mean as the record's feature. The folder's extract_config.json says how they were made; a
sample already there with the same settings is kept (a re-run resumes), one of other settings refused.

On Ray (`ray=`), as slides are (extract/distributed.py): one worker per GPU of the cluster, or per
`cpus_per_worker` CPUs, each building the backbone once; samples dealt to free workers; this process
alone writes the records, as results arrive. A worker that dies is restarted by Ray and its sample
embedded again, at most `max_retries` times.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import sparse

from hist2rna_tf.config import RAY_MAX_RETRIES, ExtractConfig
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.progress import bar
from hist2rna_tf.spots.patches import HEST_PATCH_MPP, HEST_PATCH_PX
from hist2rna_tf.spots.sample import SpotSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayScale:
    """Where and how widely to spread the samples: the cluster's `address` (None: a private instance on
    this machine, bound to 127.0.0.1; "auto": the one this node belongs to), CPUs a worker without a GPU
    takes, and times a sample is dealt again after its worker died."""

    address: str | None = None
    cpus_per_worker: int | None = None
    max_retries: int = RAY_MAX_RETRIES


def extract_spots(samples: Iterable[SpotSample], out_dir: str | Path, config: ExtractConfig,
                  progress: bool = False, total: int | None = None,
                  patch_files: dict[str, Path] | None = None, ray: RayScale | None = None) -> list[Path]:
    """Each sample's spot record under `out_dir` (see the module); returns their paths, in order.
    `samples` may be a generator (one sample's counts in memory at a time; `total`: how many).
    `patch_files`: sample id -> HEST's patches file, whose own patches are embedded instead of ours
    (the spots HEST kept, in its order: the benchmark's features exactly). `ray`: spread over Ray."""
    from hist2rna_tf.extract.cohort import existing_record, refuse_mixing
    from hist2rna_tf.extract.records import record_path
    from hist2rna_tf.extract.settings import write_extraction

    out_dir = Path(out_dir)
    embedder = LocalEmbedder(config) if ray is None else RayEmbedder.start(config, ray)
    try:
        extraction = embedder.extraction
        folder = out_dir / extraction.backbone
        refuse_mixing(folder, extraction)
        write_extraction(folder, extraction)
        tiles = extraction.config.tiles
        hests = (tiles.tile_size_px, tiles.target_mpp) == (HEST_PATCH_PX, HEST_PATCH_MPP)  # its patches are ours
        paths = []

        def pending() -> Iterator[tuple[SpotSample, Path | None]]:
            for sample in samples:
                path = record_path(out_dir, extraction.backbone, sample.sample_id)
                paths.append(path)
                if existing_record(path, extraction.features, need_tile_features=True) is None:
                    yield sample, (patch_files or {}).get(sample.sample_id) if hests else None

        embedded = embedder.embed_all(pending())
        for sample, parts in bar(embedded, desc="samples", unit="sample", total=total, enabled=progress):
            write_spot_record(record_path(out_dir, extraction.backbone, sample.sample_id), sample, extraction,
                              *parts)
    finally:
        embedder.close()
    return paths


def write_spot_record(path: Path, sample: SpotSample, extraction, features: np.ndarray, ok: np.ndarray,
                      names: np.ndarray, corners: np.ndarray) -> Path:
    """A sample's spots as one feature record (atomic): each spot a tile named by its barcode."""
    from hist2rna_tf import __version__
    from hist2rna_tf.extract.records import SlideFeatures, write_record

    return write_record(SlideFeatures(
        slide_id=sample.sample_id, patient_id=sample.sample_id, settings=extraction.features, version=__version__,
        mpp=sample.mpp, n_tiles=len(features), n_unnormalised=int((~ok).sum()), feature=features.mean(axis=0),
        tile_xy_px=corners.astype(np.int64), tile_features=features, tile_names=names), path)


def embed(extractor, sample: SpotSample, patch_file: Path | None):
    """(features, normalised, barcodes, corners) of a sample: HEST's patches file when given, else our crops."""
    from hist2rna_tf.spots.embed import cropped_features, patch_file_features

    batch = extractor.config.batch_size
    return patch_file_features(extractor, patch_file, batch) if patch_file else cropped_features(extractor, sample, batch)


def _extraction(config: ExtractConfig, name: str, weights_tag: str, feature_dim: int):
    from hist2rna_tf.extract.settings import Extraction

    return Extraction(config, name, weights_tag, feature_dim)


class LocalEmbedder:
    """The backbone in this process: samples embedded one after another."""

    def __init__(self, config: ExtractConfig):
        from hist2rna_tf.extract.extractor import Extractor

        self.extractor = Extractor.build(config)
        backbone = self.extractor.backbone
        self.extraction = _extraction(self.extractor.config, backbone.name, backbone.weights_tag, backbone.feature_dim)

    def embed_all(self, pending: Iterable[tuple[SpotSample, Path | None]]):
        for sample, patch_file in pending:
            yield sample, embed(self.extractor, sample, patch_file)

    def close(self) -> None:
        pass


class SpotWorker:
    """One Ray actor: an Extractor built once, embedding one sample per call."""

    def __init__(self, config: ExtractConfig, cpus: int):
        from hist2rna_tf.tfenv import start_tensorflow

        if not start_tensorflow():  # no GPU: keep to this worker's share of the node's cores
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        from hist2rna_tf.extract.extractor import Extractor

        self.extractor = Extractor.build(config)

    def info(self):
        backbone = self.extractor.backbone
        return self.extractor.config, backbone.name, backbone.weights_tag, backbone.feature_dim, os.getpid()

    def embed(self, sample: SpotSample, patch_file: Path | None):
        return embed(self.extractor, sample, patch_file)


class RayEmbedder:
    """SpotWorkers on a Ray cluster (extract/distributed.py's connection and layout)."""

    def __init__(self, actors: list, extraction, started: bool, pids: list[int]):
        self.actors, self.extraction, self.started, self.pids = actors, extraction, started, pids

    @classmethod
    def start(cls, config: ExtractConfig, scale: RayScale) -> "RayEmbedder":
        from hist2rna_tf.extract.distributed import start_actors

        actors, infos, started = start_actors(SpotWorker, config, scale.address, scale.cpus_per_worker,
                                              max_restarts=scale.max_retries, max_task_retries=scale.max_retries)
        resolved, name, tag, dim, _ = infos[0]
        return cls(actors, _extraction(resolved, name, tag, dim), started, [info[-1] for info in infos])

    def embed_all(self, pending: Iterable[tuple[SpotSample, Path | None]]):
        """Each pending sample dealt to a free worker (its counts left behind: the worker needs the spots
        and the image); yielded with its embedding as workers finish (not in order)."""
        import ray
        from ray.exceptions import RayActorError

        queue, free, flying = iter(pending), list(range(len(self.actors))), {}
        exhausted = False
        while True:
            while free and not exhausted:
                try:
                    sample, patch_file = next(queue)
                except StopIteration:
                    exhausted = True
                    break
                w = free.pop()
                shipped = replace(sample, counts=sparse.csr_matrix((sample.n_spots, 0)), genes=())
                flying[self.actors[w].embed.remote(shipped, patch_file)] = (sample, w)
            if not flying:
                return
            done, _ = ray.wait(list(flying), num_returns=1)
            sample, w = flying.pop(done[0])
            free.append(w)
            try:
                yield sample, ray.get(done[0])
            except RayActorError as exc:
                raise Hist2RNAError(f"sample {sample.sample_id}: its Ray worker died past --max-retries ({exc}); the "
                                    "samples done are written: re-run the same command to resume.") from None

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()
