"""RegNetY (Radosavovic et al. 2020) for Keras 3, weight-compatible with the official Keras files.

Keras 3 no longer ships RegNet; the paper's RegNetY320 came from `tf.keras.applications`. This is a
port of tf-keras's `applications/regnet.py` (Apache 2.0) with the same layer names, layer order and
weight shapes, so the official `regnety320_notop.h5` ImageNet file loads into it by topological
order (`model.load_weights`). `tests/extract/test_regnet.py` proves it against tf-keras itself.
Only the Y blocks (squeeze-and-excite) are ported: the paper used no other.
"""

from __future__ import annotations

import keras
from keras import layers

BASE_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/regnet/"

# depths and widths per stage, group width: tf-keras's MODEL_CONFIGS for the Y family.
REGNETY_CONFIGS = {
    "y002": {"depths": [1, 1, 4, 7], "widths": [24, 56, 152, 368], "group_width": 8},
    "y320": {"depths": [2, 5, 12, 1], "widths": [232, 696, 1392, 3712], "group_width": 232},
}
# sha256 of the official files (with top, without top), from tf-keras.
WEIGHTS_HASHES = {
    "y320": ("b05e173e4ae635cfa22d06392ee3741284d17dadfee68f2aa6fd8cb2b7561112",
             "cad78f74a586e24c61d38be17f3ae53bb9674380174d2585da1a526b8c20e1fd"),
}


def _conv_bn(x, filters, kernel, name, conv_name, bn_name, strides=1, groups=1):
    x = layers.Conv2D(filters, kernel, strides=strides, groups=groups, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_{conv_name}")(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_{bn_name}")(x)


def _squeeze_excite(inputs, filters_in, se_filters, name):
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze_and_excite_gap")(inputs)
    x = layers.Conv2D(se_filters, 1, activation="relu", kernel_initializer="he_normal",
                      name=f"{name}_squeeze_and_excite_squeeze")(x)
    x = layers.Conv2D(filters_in, 1, activation="sigmoid", kernel_initializer="he_normal",
                      name=f"{name}_squeeze_and_excite_excite")(x)
    return layers.Multiply(name=f"{name}_squeeze_and_excite_multiply")([x, inputs])


def y_block(inputs, filters_in: int, filters_out: int, group_width: int, stride: int, name: str,
            squeeze_excite_ratio: float = 0.25):
    """One Y block: 1x1 -> grouped 3x3 (stride) -> squeeze-excite -> 1x1, plus the (projected) skip."""
    if filters_in != filters_out and stride == 1:
        raise ValueError(f"{name}: filters_in ({filters_in}) must equal filters_out ({filters_out}) "
                         "when stride is 1")
    groups = filters_out // group_width
    se_filters = int(filters_in * squeeze_excite_ratio)
    if stride != 1:
        skip = _conv_bn(inputs, filters_out, 1, name, "skip_1x1", "skip_bn", strides=stride)
    else:
        skip = inputs
    x = _conv_bn(inputs, filters_out, 1, name, "conv_1x1_1", "conv_1x1_1_bn")
    x = layers.ReLU(name=f"{name}_conv_1x1_1_relu")(x)
    x = _conv_bn(x, filters_out, 3, name, "conv_3x3", "conv_3x3_bn", strides=stride, groups=groups)
    x = layers.ReLU(name=f"{name}_conv_3x3_relu")(x)
    x = _squeeze_excite(x, filters_out, se_filters, name)
    x = _conv_bn(x, filters_out, 1, name, "conv_1x1_2", "conv_1x1_2_bn")
    x = layers.Add(name=f"{name}_add")([x, skip])
    return layers.ReLU(name=f"{name}_exit_relu")(x)


def RegNetY(variant: str = "y320", include_preprocessing: bool = True, weights: str | None = None,
            input_shape=(224, 224, 3), pooling: str | None = "avg") -> keras.Model:
    """A headless RegNetY (`variant` in REGNETY_CONFIGS), optionally global-pooled.

    Inputs are RGB in [0, 255]; with `include_preprocessing` the model rescales them itself, like
    tf-keras (so `preprocess_input` is the identity). `weights`: None, "imagenet" (downloads the
    official no-top file, RegNetY320 only) or a path to a weights file.
    """
    if variant not in REGNETY_CONFIGS:
        raise ValueError(f"unknown RegNetY variant {variant!r}; expected one of {sorted(REGNETY_CONFIGS)}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    config = REGNETY_CONFIGS[variant]
    model_name = f"regnet{variant}"

    # --- layers ---
    inputs = keras.Input(shape=input_shape)
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(scale=1.0 / 255.0, name=f"{model_name}_prestem_rescaling")(x)
    x = _conv_bn(x, 32, 3, model_name, "stem_conv", "stem_bn", strides=2)
    x = layers.ReLU(name=f"{model_name}_stem_relu")(x)
    filters_in = 32
    for stage, (depth, width) in enumerate(zip(config["depths"], config["widths"])):
        stage_name = f"{model_name}_Stage_{stage}"
        x = y_block(x, filters_in, width, config["group_width"], 2, f"{stage_name}_YBlock_0")
        for i in range(1, depth):
            x = y_block(x, width, width, config["group_width"], 1, f"{stage_name}_YBlock_{i}")
        filters_in = width
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    # --- functional model ---
    model = keras.Model(inputs, x, name=model_name)

    # --- weights ---
    if weights == "imagenet":
        if variant not in WEIGHTS_HASHES:
            raise ValueError(f"no official ImageNet weights are registered for RegNet{variant.upper()}")
        file_name = f"{model_name}_notop.h5"
        weights = keras.utils.get_file(file_name, BASE_WEIGHTS_URL + file_name, cache_subdir="models",
                                       file_hash=WEIGHTS_HASHES[variant][1])
    if weights is not None:
        model.load_weights(weights)
    return model
