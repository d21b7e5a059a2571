"""Build a backbone: a catalog name (catalog.BACKBONES) or a Keras model file -> a frozen feature
extractor with its own preprocessing and weights.

Every backbone is headless (`include_top=False`) with global average pooling, takes RGB tiles in
[0, 255] of `tile_size_px`, and is frozen; each keeps the preprocessing of its keras.applications
family (catalog.py). A user's own Keras model file can serve too; it must take RGB in [0, 255] and
do its own scaling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.catalog import (BACKBONE_NAMES, BACKBONES, ENCODERS, BackboneSpec, EncoderSpec,
                                                   weights_tag)
from hist2rna_tf.extract.backbones.resize import reference_transform

log = logging.getLogger(__name__)


def constructor_for(spec: BackboneSpec) -> Callable[..., keras.Model]:
    """build(weights=..., input_shape=...) -> the headless, average-pooled model of `spec`."""
    if spec.family is None:
        from hist2rna_tf.extract.backbones.regnet import RegNetY

        variant = spec.name.removeprefix("regnet")
        return lambda weights, input_shape: RegNetY(variant, weights=weights, input_shape=input_shape, pooling="avg")
    constructor = getattr(keras.applications, spec.constructor)
    return lambda weights, input_shape: constructor(include_top=False, weights=weights, input_shape=input_shape,
                                                    pooling="avg")


def preprocess_for(spec: BackboneSpec) -> Callable:
    """The preprocess_input of `spec`'s keras.applications family (identity where the model rescales)."""
    return _identity if spec.family is None else getattr(keras.applications, spec.family).preprocess_input


def _identity(x):
    return x


@dataclass
class Backbone:
    """A built, frozen feature extractor: float RGB [B, H, W, 3] in [0, 255] -> features [B, F]."""

    name: str
    model: keras.Model
    preprocess: Callable
    feature_dim: int
    weights_tag: str

    def features(self, tiles):
        # As a tensor: keras.applications' preprocess_input edits numpy arrays in place.
        tiles = keras.ops.convert_to_tensor(tiles, "float32")
        # float32 out whatever the model computes in (mixed precision ends in float16)
        return keras.ops.cast(self.model(self.preprocess(tiles), training=False), "float32")


RANDOM_WEIGHTS_SEED = 0  # --weights none: Keras' initialisers under this global seed
# --precision: the Keras dtype policy the backbone is built under (weights stay float32); bfloat16 as
# TRIDENT runs UNI2-h (the others in float16).
PRECISIONS = {"float32": "float32", "mixed": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def build_backbone(name: str, weights: str = "imagenet", tile_size_px: int = 224,
                   precision: str = "float32") -> Backbone:
    """The named backbone (a key of BACKBONES, or a path to a .keras/.h5 model file), computing in
    `precision` (a key of PRECISIONS: `mixed` is float16 arithmetic on float32 weights, `bfloat16`
    bfloat16 arithmetic; for GPUs)."""
    check_backbone_arguments(name, weights, precision)
    key = name.lower()
    if key in ENCODERS:
        return _encoder_backbone(ENCODERS[key], weights, precision)
    if key not in BACKBONES:
        return _model_file_backbone(Path(name), tile_size_px)
    spec = BACKBONES[key]
    keras_weights = None if weights == "none" else weights
    if keras_weights is None:
        # Seeded, so that extraction, prediction from slides and export build the SAME random backbone.
        keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(PRECISIONS[precision])
        model = constructor_for(spec)(weights=keras_weights, input_shape=(tile_size_px, tile_size_px, 3))
    except Exception as exc:  # Keras raises bare Exceptions for failed downloads and bad files
        if weights == "imagenet":
            raise BackboneError(
                f"could not get the ImageNet weights of {spec.paper_name} ({type(exc).__name__}: {exc}). "
                "Without internet, download them elsewhere and pass --weights PATH, or use --weights none "
                "(random weights, for testing only)."
            ) from None
        raise BackboneError(f"{weights}: not a weights file of {spec.paper_name} ({type(exc).__name__}: {exc}); give "
                            "the .h5 (or .weights.h5) file Keras saves for it, e.g. the one keras.applications "
                            "downloads, or --weights imagenet / none.") from None
    finally:
        keras.config.set_dtype_policy(policy)
    model.trainable = False
    return Backbone(spec.name, model, preprocess_for(spec), spec.feature_dim, weights_tag(weights))


def _model_file_backbone(path: Path, tile_size_px: int) -> Backbone:
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # any unreadable file: keras raises several unrelated types
        raise BackboneError(f"{path}: not a loadable Keras model ({exc}).") from None
    side = tuple(model.input_shape[1:3])
    if any(d is not None and d != tile_size_px for d in side):
        raise BackboneError(f"{path}: the model takes {side[0]}x{side[1]}-px tiles, not {tile_size_px}-px ones; give "
                            f"--tile-px {side[0]}, or a model whose input size is free (None).")
    if len(model.output_shape) == 4:  # a feature map: pool it like the built-in backbones
        pooled = keras.layers.GlobalAveragePooling2D()(model.output)
        model = keras.Model(model.input, pooled, name=f"{model.name}_avg")
    if len(model.output_shape) != 2:
        raise BackboneError(f"{path}: output shape {model.output_shape} is not [batch, features] or a "
                            "[batch, h, w, channels] feature map.")
    model.trainable = False
    return Backbone(path.stem, model, _identity, int(model.output_shape[-1]), path.name)


@dataclass(frozen=True)
class Normalise:
    """An encoder's own preprocessing, as its reference transform: Resize (and CenterCrop) exactly as
    torchvision does them to a PIL tile (resize.py; nothing when the tile is already that size), then
    ToTensor and Normalize: RGB in [0, 255] -> [0, 1] -> (x - mean) / std per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None = None  # torchvision's Resize(resize, interpolation)
    interpolation: str = "bilinear"
    crop: int | None = None  # then CenterCrop(crop)

    def __call__(self, tiles):
        if self.resize is not None:
            tiles = reference_transform(tiles, self.resize, self.interpolation, self.crop)
        mean = keras.ops.convert_to_tensor(self.mean, "float32")
        std = keras.ops.convert_to_tensor(self.std, "float32")
        return (keras.ops.cast(tiles, "float32") / 255.0 - mean) / std


def check_backbone_arguments(name: str, weights: str, precision: str = "float32") -> None:
    """What `build_backbone` checks before it builds anything, cheap enough to run before a command
    writes anything: a known backbone or a model file that is there, weights it can take (ImageNet,
    none, or a file that is there; an encoder's file or folder as its page offers it), a precision."""
    from hist2rna_tf.extract.backbones.weights import checked_weights_file

    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    key = str(name).lower()
    if key in ENCODERS:
        spec = ENCODERS[key]
        if weights == "imagenet":
            raise BackboneError(f"{spec.paper_name} has no ImageNet weights: its own are gated. Accept its licence at "
                                f"{spec.weights_page}, download {spec.weights_file} and pass --weights PATH to it (or "
                                "--weights none: random, for tests).")
        if weights != "none":
            checked_weights_file(spec, weights)  # a missing, empty or another model's file, a folder without config.json
        return
    if key not in BACKBONES:
        if Path(name).suffix not in (".keras", ".h5") and not Path(name).exists():
            raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}, a pathology "
                                f"encoder ({', '.join(ENCODERS)}) or give a path to a Keras model file (.keras).")
        if not Path(name).is_file():
            raise BackboneError(f"backbone model file {name} not found.")
        if precision != "float32":
            raise BackboneError(f"{name}: a model file computes in the dtypes it was saved with; --precision "
                                f"{precision} applies to the built-in backbones ({', '.join(BACKBONE_NAMES)}).")
        return
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise BackboneError(f"weights file {weights} not found; use --weights imagenet, none, or a path "
                            "to an existing weights file.")


def _encoder_backbone(spec: EncoderSpec, weights: str, precision: str) -> Backbone:
    """A pathology encoder (vit.py) with the weights its user downloaded (weights.py), or random ones."""
    from hist2rna_tf.extract.backbones.vit import build_vit
    from hist2rna_tf.extract.backbones.weights import load_encoder_weights, weights_file

    if weights == "none":
        keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)  # the same random encoder in every process
    else:
        path = weights_file(spec, weights)  # a missing file, a folder without config.json: said before the build
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(PRECISIONS[precision])
        model = build_vit(spec.vit, spec.vit.img_size, name=spec.name.replace("-", "_").replace(".", "_"))
    finally:
        keras.config.set_dtype_policy(policy)
    if weights != "none":
        load_encoder_weights(model, spec, path)
    model.trainable = False
    # Tiles of any size reach the model as its reference transform makes them (TRIDENT's on the same tiles).
    preprocess = Normalise(spec.mean, spec.std, spec.resize, spec.interpolation, spec.vit.img_size if spec.crop else None)
    return Backbone(spec.name, model, preprocess, spec.feature_dim, weights_tag(weights))
