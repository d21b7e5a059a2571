"""Spot features in the tool's one feature store: a sample's spots embedded at HEST's patches
(patches.py; at a run's own tile size and scale when extracted like a run, for its maps to be scored
at the spots), through embed.py's normaliser and backbone, and written as one feature record
(extract/records.py) per sample, `<out>/<backbone>/<sample_id>.tfrecord`: each spot a tile (its
features, its patch's top-left in full-resolution pixels, its barcode as the tile's name), the
sample's mean as the record's feature. The folder's extract_config.json says how they were made; a
sample already there with the same settings is kept (a re-run resumes), one of other settings refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hist2rna_tf.config import ExtractConfig
from hist2rna_tf.progress import bar
from hist2rna_tf.spots.patches import HEST_PATCH_MPP, HEST_PATCH_PX
from hist2rna_tf.spots.sample import SpotSample


def extract_spots(samples: Iterable[SpotSample], out_dir: str | Path, config: ExtractConfig,
                  progress: bool = False, total: int | None = None,
                  patch_files: dict[str, Path] | None = None) -> list[Path]:
    """Each sample's spot record under `out_dir` (see the module); returns their paths, in order.
    `samples` may be a generator (one sample's counts in memory at a time; `total`: how many).
    `patch_files`: sample id -> HEST's patches file, whose own patches are embedded instead of ours
    (the spots HEST kept, in its order: the benchmark's features exactly)."""
    from hist2rna_tf import __version__
    from hist2rna_tf.extract.cohort import existing_record, refuse_mixing
    from hist2rna_tf.extract.extractor import Extractor
    from hist2rna_tf.extract.records import SlideFeatures, record_path, write_record
    from hist2rna_tf.extract.settings import Extraction, write_extraction
    from hist2rna_tf.spots.embed import cropped_features, patch_file_features

    out_dir = Path(out_dir)
    extractor = Extractor.build(config)
    backbone = extractor.backbone
    extraction = Extraction(extractor.config, backbone.name, backbone.weights_tag, backbone.feature_dim)
    folder = out_dir / backbone.name
    refuse_mixing(folder, extraction)
    write_extraction(folder, extraction)
    paths = []
    for sample in bar(samples, desc="samples", unit="sample", total=total, enabled=progress):
        path = record_path(out_dir, backbone.name, sample.sample_id)
        paths.append(path)
        if existing_record(path, extraction.features, need_tile_features=True) is not None:
            continue
        tiles = extractor.config.tiles
        hests = (tiles.tile_size_px, tiles.target_mpp) == (HEST_PATCH_PX, HEST_PATCH_MPP)  # its patches are ours
        given = (patch_files or {}).get(sample.sample_id) if hests else None
        features, ok, names, corners = (patch_file_features(extractor, given, config.batch_size) if given else
                                        cropped_features(extractor, sample, config.batch_size))
        write_record(SlideFeatures(
            slide_id=sample.sample_id, patient_id=sample.sample_id, settings=extraction.features, version=__version__,
            mpp=sample.mpp, n_tiles=len(features), n_unnormalised=int((~ok).sum()), feature=features.mean(axis=0),
            tile_xy_px=corners.astype(np.int64), tile_features=features, tile_names=names), path)
    return paths
