"""How features were made, in one place (no TensorFlow): the schema, `extract_config.json`, and the one
comparison behind every "made with other settings" refusal.

Two levels, one idea:
- `FeatureSettings`: what every record carries and what makes two slides' features comparable
  (backbone, weights, normaliser, tile size in px and um). A head trained on features made one
  way applies to others only when these agree; the tile count, the MPP read and the package
  version may differ.
- `Extraction`: a features folder's `extract_config.json`, everything needed to extract more slides
  alike (the full ExtractConfig, stain targets included, and the backbone's name, weights and
  feature size). A run folder keeps a copy, so it never needs the folder it was trained on.

Names of earlier versions are read in today's terms: before 0.2.0 `macenko` was HEnorm's
natural-log variant, today `macenko-henorm`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from hist2rna_tf import __version__
from hist2rna_tf.atomic import write_text
from hist2rna_tf.config import ExtractConfig, StainConfig, TileConfig, changed_fields, known_fields
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.extract.backbones.catalog import (BACKBONE_NAMES, ENCODERS, NAMED_WEIGHTS, native_scale,
                                                   trident_tile_px, weights_tag)

# A features folder's record of how its features were made (`<out>/<backbone>/extract_config.json`).
EXTRACT_CONFIG_FILE = "extract_config.json"

# Feature folders and records written before 0.2.0 called HEnorm's natural-log variant "macenko".
_NATURAL_LOG_MACENKO_UNTIL = (0, 2, 0)


def for_backbone(backbone: str, weights: str = ExtractConfig.weights, *, tile_size_px: int | str | None = None,
                 target_mpp: float | None = None, tiles: TileConfig = TileConfig(), **fields) -> ExtractConfig:
    """An ExtractConfig for `backbone` at its own scale: the paper's 224 px at 0.25 um/px for its CNNs,
    an encoder's training scale (0.5 um/px; 224 px, CONCH v1.5 448) for a pathology encoder, unless
    `tile_size_px` / `target_mpp` say otherwise (`tile_size_px="trident"`: the size TRIDENT's README
    extracts the encoder from). `tiles`: the other tile settings; `fields`: ExtractConfig's others.
    The one place a backbone's scale is applied (the command line, the demo, the notebook calls and the
    experiments all come here)."""
    native_px, native_mpp = native_scale(backbone)
    if tile_size_px == "trident":
        tile_size_px = trident_tile_px(backbone)
    tiles = replace(tiles, tile_size_px=tile_size_px or native_px, target_mpp=target_mpp or native_mpp)
    return ExtractConfig(backbone=backbone, weights=weights, tiles=tiles, **fields)


def sequoia_extraction(weights: str = "pytorch_model.bin", **fields) -> ExtractConfig:
    """What SEQUOIA's published models read (gevaertlab/sequoia-pub `pre_processing/patch_gen_hdf5.py`,
    `compute_features_hdf5.py`): UNI's features (`weights`: the file of its hub page) of 256 px tiles at
    20x (0.5 um/px, 128 um) resized to 224, ImageNet-normalised, no stain normalisation, every tile of the
    tissue (their max_patches_per_slide=None), every tile's features kept (the head clusters them);
    `fields`: ExtractConfig's others (`tiles`: the other tile settings, every tile by default). The one home of that recipe:
    import-run records its FeatureSettings (`settings_of`), its help and errors print it
    (`extract_command`), experiments/sequoia_folds.py extracts with it."""
    tiles = fields.pop("tiles", TileConfig(max_tiles=SEQUOIA_EVERY_TILE))
    return for_backbone("uni", weights, tile_size_px=256, target_mpp=0.5, tiles=tiles, stain=StainConfig(method="none"),
                        save_tile_features=True, **fields)


# SEQUOIA clusters every tile of the tissue (their max_patches_per_slide=None): a cap no slide reaches.
SEQUOIA_EVERY_TILE = 1_000_000


def settings_of(config: ExtractConfig) -> "FeatureSettings":
    """The FeatureSettings the records of `config` carry (its backbone's catalog name as given)."""
    tiles = config.tiles
    return FeatureSettings(config.backbone, weights_tag(config.weights), config.stain.tag, tiles.tile_size_px,
                           tiles.tile_size_um)


def extract_command(config: ExtractConfig) -> str:
    """`hist2rna extract` with the options that make features as `config` does (its backbone, weights, tile
    size and scale, stain, tile features)."""
    tiles = config.tiles
    capped = f" --max-tiles {tiles.max_tiles}" if tiles.max_tiles != TileConfig().max_tiles else ""
    return (f"hist2rna extract --backbone {config.backbone} --weights {weights_tag(config.weights)} --tile-px "
            f"{tiles.tile_size_px} --target-mpp {tiles.target_mpp:g} --stain {config.stain.method}{capped}"
            + (" --save-tile-features" if config.save_tile_features else ""))


def off_scale(config: ExtractConfig) -> str | None:
    """Why a pathology encoder's tiles are not at the scale it was trained at (nor TRIDENT's size for
    it), or None."""
    spec = ENCODERS.get(config.backbone.lower())
    if spec is None:
        return None
    native = native_scale(config.backbone)
    tiles = (config.tiles.tile_size_px, config.tiles.target_mpp)
    if tiles in (native, (spec.trident_tile_px, native[1])):
        return None
    return (f"{config.backbone} was trained on {native[0]}-px tiles at {native[1]:g} um/px; these are {tiles[0]} px at "
            f"{tiles[1]:g} um/px (--tile-px, --target-mpp).")


def current_stain_method(method: str, version: str | None) -> str:
    """A stain method as recorded by package `version` (None: this one), in today's names."""
    if version is None or method != "macenko":
        return method
    try:
        old = tuple(int(part) for part in version.split(".")[:3]) < _NATURAL_LOG_MACENKO_UNTIL
    except ValueError:  # not a release number: take it as today's
        old = False
    return "macenko-henorm" if old else method


def current_normaliser_tag(tag: str, version: str | None) -> str:
    """A stored normaliser tag (`method` or `method:reference`) in today's method names."""
    method, sep, reference = tag.partition(":")
    return current_stain_method(method, version) + sep + reference


# --- what makes features comparable ---------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSettings:
    """The settings every feature record carries (records.py) and every run and head export keeps."""

    backbone: str  # the backbone's name (a model file's: its stem)
    weights: str  # 'imagenet', 'none', or the weights file's name
    normaliser: str  # the stain tag: `method`, or `method:reference image`
    tile_size_px: int
    tile_size_um: float  # rounded to 1e-4, so that float32 records compare equal

    def __post_init__(self):
        object.__setattr__(self, "tile_size_px", int(self.tile_size_px))
        object.__setattr__(self, "tile_size_um", round(float(self.tile_size_um), 4))

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSettings":
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_metadata(self) -> dict[str, np.generic]:
        """As a SavedModel's metadata carries them (numpy scalars: bytes, int64, float32)."""
        return {"backbone": np.bytes_(self.backbone), "weights": np.bytes_(self.weights),
                "normaliser": np.bytes_(self.normaliser), "tile_size_px": np.int64(self.tile_size_px),
                "tile_size_um": np.float32(self.tile_size_um)}

    @classmethod
    def from_metadata(cls, meta: dict) -> "FeatureSettings | None":
        """Back from a SavedModel's metadata (values with `.numpy()`, or numpy); None when it carries none
        (exports made before 0.2.0)."""
        names = [f.name for f in fields(cls)]
        if not all(name in meta for name in names):
            return None
        values = {}
        for name in names:
            value = meta[name].numpy() if hasattr(meta[name], "numpy") else meta[name]
            value = value.item() if hasattr(value, "item") else value  # a numpy scalar as Python's
            values[name] = value.decode() if isinstance(value, bytes) else value
        return cls(**values)

    @property
    def named_backbone_with_random_weights(self) -> bool:
        """Made by a catalog backbone with random weights (the offline demo's): no biology in them."""
        return self.weights == "none" and self.backbone in BACKBONE_NAMES


# --- a features folder's extract_config.json -------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """How a folder's features were made: its extract_config.json."""

    config: ExtractConfig  # as run: stain targets fitted, model and weights files as absolute paths
    backbone: str  # the backbone's name
    weights: str  # the weights' tag
    feature_dim: int
    version: str = field(default=__version__)  # the package version that extracted them

    @property
    def features(self) -> FeatureSettings:
        """The settings its records carry."""
        tiles = self.config.tiles
        return FeatureSettings(self.backbone, self.weights, self.config.stain.tag, tiles.tile_size_px,
                               tiles.tile_size_um)

    def for_new_slides(self) -> ExtractConfig:
        """The config to extract other slides alike: the whole cohort (no shard), resuming."""
        return replace(self.config, shard_index=0, shard_count=1, overwrite=False)

    def to_json(self) -> dict:
        return {"version": self.version, "backbone": self.backbone, "weights": self.weights,
                "feature_dim": self.feature_dim, "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_json(cls, data: dict) -> "Extraction":
        """The inverse of `to_json`, for any version's file: stain methods in today's names, fields
        added since filled with their defaults, fields since removed ignored. KeyError or TypeError
        when it is not an extract_config.json."""
        version = str(data.get("version", "0"))
        config = dict(data["config"])
        tiles = known_fields(TileConfig, config.pop("tiles"))
        stain = known_fields(StainConfig, config.pop("stain"))
        stain["method"] = current_stain_method(stain["method"], version)
        if "he_ref" in stain:
            stain["he_ref"] = tuple(tuple(row) for row in stain["he_ref"])
        extract = ExtractConfig(**known_fields(ExtractConfig, config), tiles=TileConfig(**tiles),
                                stain=StainConfig(**stain))
        return cls(extract, str(data["backbone"]), str(data["weights"]), int(data["feature_dim"]), version)


def extraction_path(folder: str | Path) -> Path:
    return Path(folder) / EXTRACT_CONFIG_FILE


def read_extraction(path: str | Path) -> Extraction:
    """A folder's extract_config.json (`path`: the file or its folder); a SettingsError naming the
    file when it is missing or unreadable."""
    path = Path(path)
    path = path if path.suffix == ".json" else extraction_path(path)
    try:
        return Extraction.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(f"{path}: not a readable {EXTRACT_CONFIG_FILE} ({type(exc).__name__}: {exc}); "
                            "it records how the folder's features were made. Extract the folder again (or "
                            "restore the file).") from None


def write_extraction(folder: str | Path, extraction: Extraction) -> Path:
    return write_text(extraction_path(folder), json.dumps(extraction.to_json(), indent=2, sort_keys=True))


def with_absolute_files(config: ExtractConfig) -> ExtractConfig:
    """`config` with a model-file backbone and a weights file as absolute paths, so that what records
    them (extract_config.json, a run) can find them again from any working folder."""
    backbone = config.backbone
    if backbone.lower() not in BACKBONE_NAMES and Path(backbone).exists():
        backbone = str(Path(backbone).resolve())
    weights = config.weights
    if weights not in NAMED_WEIGHTS and Path(weights).exists():
        weights = str(Path(weights).resolve())
    return replace(config, backbone=backbone, weights=weights)


# --- the one comparison ------------------------------------------------------------------------------


def _compared(settings: FeatureSettings | Extraction) -> dict[str, Any]:
    """The settings that shape a feature, by name. For an Extraction: backbone, weights and every
    tile and stain setting (not batch size, threads, shards, precision: they do not change it)."""
    if isinstance(settings, FeatureSettings):
        return settings.to_dict()
    return {"backbone": settings.backbone, "weights": settings.weights,
            **{f"tiles.{k}": v for k, v in dataclasses.asdict(settings.config.tiles).items()},
            **{f"stain.{k}": v for k, v in dataclasses.asdict(settings.config.stain).items()}}


def differences(expected: FeatureSettings | Extraction, found: FeatureSettings | Extraction) -> list[str]:
    """"name: expected -> found" for each setting that differs (both of one kind)."""
    if type(expected) is not type(found):
        raise TypeError(f"cannot compare {type(expected).__name__} with {type(found).__name__}")
    return changed_fields(_compared(expected), _compared(found))


def require_same(expected: FeatureSettings | Extraction, found: FeatureSettings | Extraction, subject: object,
                 reference: str, fix: str, error: type[Exception] = SettingsError) -> None:
    """Raise `error` when `found` (the settings of `subject`) differs from `expected` (those of
    `reference`), in the one format every refusal shares:
    `<subject>: made with other settings than <reference> (<name>: <expected> -> <found>; ...); <fix>`."""
    changes = differences(expected, found)
    if changes:
        raise error(f"{subject}: made with other settings than {reference} ({'; '.join(changes)}); {fix}")
