"""Spot embeddings with any backbone the tool has (exact, as for slides): each spot's patch (HEST's own
from its patches file, or cut from the sample's image as HEST cuts it, patches.py) through the stain
normaliser and the frozen backbone, written as HEST-Benchmark writes a sample's embeddings
(hest.write_embeddings: `embeddings`, `barcodes`, `coords`), a batch in memory at a time.

A folder of one backbone's embeddings records how they were made (`settings.json`: the FeatureSettings
of extract/settings.py); a sample already embedded with the same settings is kept (a re-run resumes),
one of other settings refused, named.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hist2rna_tf.config import ExtractConfig, StainConfig, changed_fields
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.spots.hest import patch_batches, write_embeddings
from hist2rna_tf.spots.patches import HEST_PATCH_MPP, HEST_PATCH_PX

SETTINGS = "settings.json"


def spot_extraction(backbone: str, weights: str, stain: str = "none", **fields) -> ExtractConfig:
    """The extraction of spot patches: HEST's 224 px at 0.5 um/px (a backbone of another input size
    resizes them to it, as for slides), `stain` normalisation (none, as HEST, by default)."""
    from hist2rna_tf.extract.settings import for_backbone

    return for_backbone(backbone, weights, tile_size_px=HEST_PATCH_PX, target_mpp=HEST_PATCH_MPP,
                        stain=StainConfig(method=stain), **fields)


def backbone_label(backbone: str) -> str:
    """A backbone's folder name, as extraction names its features folder: a catalog name, or a model
    file's stem."""
    from hist2rna_tf.extract.backbones.catalog import BACKBONES, ENCODERS

    key = backbone.lower()
    return key if key in BACKBONES or key in ENCODERS else Path(backbone).stem


def claim_folder(folder: Path, config: ExtractConfig) -> None:
    """Record the settings in `folder`, or check them against those recorded (SettingsError, named)."""
    from hist2rna_tf.atomic import atomic_path
    from hist2rna_tf.extract.settings import settings_of

    settings = settings_of(config).to_dict()
    path = folder / SETTINGS
    if path.is_file():
        changed = changed_fields(json.loads(path.read_text()), settings)
        if changed:
            raise SettingsError(f"{folder}: its embeddings were made with other settings ({'; '.join(changed)}); give "
                                "another --out, or remove the folder to embed again.")
        return
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(settings, indent=2) + "\n")


def embedded(extractor, batches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features [n, D] float32, normalised [n] bool) of each uint8 batch [n, size, size, 3], normalised
    as configured (a patch with too little stain to estimate passes unchanged: False)."""
    for batch in batches:
        tiles, normalised = extractor.normaliser(batch)
        yield extractor.embed(tiles).numpy().astype(np.float32), np.asarray(normalised, bool)


def patch_file_features(extractor, path: Path, batch: int):
    """(features, normalised, barcodes, top-left corners) of HEST's patches file: its own patches, in its order."""
    features, ok, names, corners = [], [], [], []
    for images, codes, xy in patch_batches(path, batch):
        f, o = next(embedded(extractor, [images]))
        features.append(f), ok.append(o), names.append(codes), corners.append(xy)
    return tuple(np.concatenate(part) for part in (features, ok, names, corners))


def cropped_features(extractor, sample, batch: int, scale: tuple[int, float] | None = None):
    """The same of a SpotSample's spots cut from its image as HEST cuts them (patches.py), at `scale`
    (tile px, um/px; default the extraction's own: HEST's 224 px at 0.5 um/px, or a run's)."""
    from hist2rna_tf.spots.hest import open_image
    from hist2rna_tf.spots.patches import read_patches, slide_grid

    size_px, target_mpp = scale or (extractor.config.tiles.tile_size_px, extractor.config.tiles.target_mpp)
    slide = open_image(sample.image)
    try:
        grid = slide_grid(slide, sample.centres_px, sample.mpp, size_px, target_mpp)
        batches = list(embedded(extractor, read_patches(slide, grid, batch)))
    finally:
        slide.close()
    return (np.concatenate([f for f, _ in batches]), np.concatenate([o for _, o in batches]),
            sample.barcodes[grid.kept], grid.top_left_px)


def embed_patch_file(extractor, patches: Path, out: Path) -> Path:
    """HEST's patches file of a sample embedded to `out` (HEST-Benchmark's embeddings file); kept when
    there (a re-run resumes)."""
    if out.is_file():
        return out
    features, _, barcodes, coords = patch_file_features(extractor, patches, extractor.config.batch_size)
    return write_embeddings(out, features, barcodes, coords)


def embed_sample(extractor, sample, out: Path) -> Path:
    """A SpotSample's spots embedded from its image, each at HEST's patch (patches.py), to `out`."""
    if out.is_file():
        return out
    features, _, barcodes, corners = cropped_features(extractor, sample, extractor.config.batch_size,
                                                      (HEST_PATCH_PX, HEST_PATCH_MPP))
    return write_embeddings(out, features, barcodes, corners)
