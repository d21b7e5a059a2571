"""The paper's five ImageNet backbones: name -> (constructor, its own preprocess_input, feature size).

Every backbone is headless (`include_top=False`) with global average pooling, takes RGB tiles in
[0, 255] of `tile_size_px`, and is frozen. Each keeps the preprocessing of its keras.applications
family (they disagree: ResNet50 is caffe-style BGR mean subtraction, InceptionV3 scales to [-1, 1],
DenseNet201 is torch-style, EfficientNetV2 and RegNet rescale inside the model).
A user's own Keras model file can serve too; it must take RGB in [0, 255] and do its own scaling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from .errors import BackboneError
from .regnet import RegNetY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[..., keras.Model]  # build(weights=..., input_shape=...) -> pooled model
    preprocess: Callable  # preprocess_input of the same keras.applications family
    feature_dim: int
    paper_name: str


def _app(constructor):
    def build(weights, input_shape):
        return constructor(include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
    return build


def _regnety320(weights, input_shape):
    return RegNetY("y320", weights=weights, input_shape=input_shape, pooling="avg")


def _identity(x):
    return x


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("efficientnetv2s", _app(keras.applications.EfficientNetV2S),
                     keras.applications.efficientnet_v2.preprocess_input, 1280, "EfficientNetV2S"),
        BackboneSpec("regnety320", _regnety320, _identity, 3712, "RegNetY320"),
        BackboneSpec("densenet201", _app(keras.applications.DenseNet201),
                     keras.applications.densenet.preprocess_input, 1920, "DenseNet201"),
        BackboneSpec("inceptionv3", _app(keras.applications.InceptionV3),
                     keras.applications.inception_v3.preprocess_input, 2048, "InceptionV3"),
        BackboneSpec("resnet50", _app(keras.applications.ResNet50),
                     keras.applications.resnet50.preprocess_input, 2048, "ResNet50"),
    )
}


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
# --precision: the Keras dtype policy the backbone is built under (weights stay float32).
PRECISIONS = {"float32": "float32", "mixed": "mixed_float16"}


def weights_tag(weights: str) -> str:
    """How the weights are recorded in outputs: 'imagenet', 'none', or the file's name."""
    return weights if weights in ("imagenet", "none") else Path(weights).name


def build_backbone(name: str, weights: str = "imagenet", tile_size_px: int = 224,
                   precision: str = "float32") -> Backbone:
    """The named backbone (a key of BACKBONES, or a path to a .keras/.h5 model file), computing in
    `precision` (a key of PRECISIONS: `mixed` is float16 arithmetic on float32 weights, for GPUs)."""
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    key = name.lower()
    if key not in BACKBONES:
        if Path(name).suffix in (".keras", ".h5") or Path(name).exists():
            if precision != "float32":
                raise BackboneError(f"{name}: a model file computes in the dtypes it was saved with; --precision "
                                    f"{precision} applies to the built-in backbones ({', '.join(BACKBONES)}).")
            return _model_file_backbone(Path(name))
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} "
                            "or give a path to a Keras model file (.keras).")
    spec = BACKBONES[key]
    keras_weights = None if weights == "none" else weights
    if keras_weights not in (None, "imagenet") and not Path(keras_weights).is_file():
        raise BackboneError(f"weights file {weights} not found; use --weights imagenet, none, or a path "
                            "to an existing weights file.")
    if keras_weights is None:
        # Seeded, so that extraction, prediction from slides and export build the SAME random backbone.
        keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(PRECISIONS[precision])
        model = spec.build(weights=keras_weights, input_shape=(tile_size_px, tile_size_px, 3))
    except Exception as exc:  # Keras raises bare Exceptions for failed downloads and bad files
        if weights == "imagenet":
            raise BackboneError(
                f"could not get the ImageNet weights of {spec.paper_name} ({type(exc).__name__}: {exc}). "
                "Without internet, download them elsewhere and pass --weights PATH, or use --weights none "
                "(random weights, for testing only)."
            ) from None
        raise BackboneError(f"could not load weights {weights} into {spec.paper_name}: {exc}") from None
    finally:
        keras.config.set_dtype_policy(policy)
    model.trainable = False
    return Backbone(spec.name, model, spec.preprocess, spec.feature_dim, weights_tag(weights))


def _model_file_backbone(path: Path) -> Backbone:
    if not path.is_file():
        raise BackboneError(f"backbone model file {path} not found.")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # any unreadable file: keras raises several unrelated types
        raise BackboneError(f"{path}: not a loadable Keras model ({exc}).") from None
    if len(model.output_shape) == 4:  # a feature map: pool it like the built-in backbones
        pooled = keras.layers.GlobalAveragePooling2D()(model.output)
        model = keras.Model(model.input, pooled, name=f"{model.name}_avg")
    if len(model.output_shape) != 2:
        raise BackboneError(f"{path}: output shape {model.output_shape} is not [batch, features] or a "
                            "[batch, h, w, channels] feature map.")
    model.trainable = False
    return Backbone(path.stem, model, _identity, int(model.output_shape[-1]), path.name)
