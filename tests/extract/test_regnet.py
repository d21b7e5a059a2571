"""RegNetY for Keras 3 against tf-keras itself: the same weight layout, the same features."""

from __future__ import annotations

import numpy as np

from hist2rna_tf.extract.backbones.regnet import RegNetY

RNG = np.random.default_rng(0)


def _tf_keras_regnety(variant: str, input_shape):
    from tf_keras.applications import regnet

    constructor = {"y002": regnet.RegNetY002, "y320": regnet.RegNetY320}[variant]
    return constructor(weights=None, include_top=False, pooling="avg", input_shape=input_shape)


def test_regnety_equals_tf_keras_given_its_weight_file(tmp_path):
    """tf-keras's RegNetY002 saved as an .h5 weight file (the official files' format) loads into ours
    by topological order, and both give the same features."""
    reference = _tf_keras_regnety("y002", (64, 64, 3))
    weights = [w + RNG.normal(0, 0.05, w.shape).astype(w.dtype) for w in reference.get_weights()]
    weights = [np.abs(w) + 0.5 if "moving_variance" in v.name else w for w, v in zip(weights, reference.weights)]
    reference.set_weights(weights)
    path = tmp_path / "regnety002_notop.h5"
    reference.save_weights(str(path))
    ours = RegNetY("y002", weights=str(path), input_shape=(64, 64, 3))
    assert [(v.name.split(":")[0], tuple(v.shape)) for v in reference.weights] == \
        [(v.path, tuple(v.shape)) for v in ours.weights]
    x = RNG.uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ours(x, training=False), reference(x, training=False), atol=1e-5, rtol=1e-5)


def test_regnety320_has_the_official_weight_layout():
    """Same weight names, shapes and order as tf-keras's RegNetY320, so regnety320_notop.h5 loads."""
    ours = RegNetY("y320", input_shape=(64, 64, 3))
    reference = _tf_keras_regnety("y320", (64, 64, 3))
    assert [(v.name.split(":")[0], tuple(v.shape)) for v in reference.weights] == \
        [(v.path, tuple(v.shape)) for v in ours.weights]
    assert ours.output_shape == (None, 3712)
