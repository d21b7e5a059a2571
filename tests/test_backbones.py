"""The five backbones: feature sizes, each family's own preprocessing, RegNetY against tf-keras,
weights from imagenet / a local file / none, and a user's own model file."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from hist2rna_tf.backbones import BACKBONES, build_backbone
from hist2rna_tf.errors import BackboneError
from hist2rna_tf.regnet import RegNetY

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("name, dim", [("efficientnetv2s", 1280), ("densenet201", 1920), ("inceptionv3", 2048),
                                       ("resnet50", 2048)])
def test_feature_sizes(name, dim):
    backbone = build_backbone(name, "none")
    tiles = RNG.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    feats = np.asarray(backbone.features(tiles))
    assert feats.shape == (2, dim) == (2, BACKBONES[name].feature_dim)
    assert not np.allclose(feats[0], feats[1])
    assert not backbone.model.trainable


def test_each_backbone_keeps_its_family_preprocessing():
    x = RNG.uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    apps = keras.applications
    assert BACKBONES["resnet50"].preprocess is apps.resnet50.preprocess_input
    assert BACKBONES["inceptionv3"].preprocess is apps.inception_v3.preprocess_input
    assert BACKBONES["densenet201"].preprocess is apps.densenet.preprocess_input
    assert BACKBONES["efficientnetv2s"].preprocess is apps.efficientnet_v2.preprocess_input
    # and what each does: caffe (BGR, mean-subtracted), tf ([-1, 1]), torch (ImageNet mean/std), in-model
    caffe = np.asarray(BACKBONES["resnet50"].preprocess(x.copy()))
    np.testing.assert_allclose(caffe[..., 0], x[..., 2] - 103.939, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(BACKBONES["inceptionv3"].preprocess(x.copy())), x / 127.5 - 1, rtol=1e-5)
    torch = np.asarray(BACKBONES["densenet201"].preprocess(x.copy()))
    np.testing.assert_allclose(torch[..., 0], (x[..., 0] / 255 - 0.485) / 0.229, rtol=1e-4)
    for in_model in ("efficientnetv2s", "regnety320"):
        np.testing.assert_array_equal(np.asarray(BACKBONES[in_model].preprocess(x.copy())), x)


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


def test_local_weights_file_is_loaded(tmp_path):
    first = build_backbone("resnet50", "none")
    path = tmp_path / "resnet50.weights.h5"
    first.model.save_weights(path)
    second = build_backbone("resnet50", str(path))
    x = RNG.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(second.features(x), first.features(x), rtol=1e-5, atol=1e-5)
    assert second.weights_tag == "resnet50.weights.h5"


def test_imagenet_offline_names_the_alternatives(tmp_path, monkeypatch):
    import keras.src.applications.resnet as resnet_module
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path))  # no cached weights
    monkeypatch.setattr(resnet_module, "BASE_WEIGHTS_PATH", "http://127.0.0.1:9/")  # unreachable
    with pytest.raises(BackboneError, match="--weights none") as info:
        build_backbone("resnet50", "imagenet")
    assert "--weights PATH" in str(info.value)


def test_bad_names_and_files(tmp_path):
    with pytest.raises(BackboneError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(BackboneError, match="not found"):
        build_backbone("resnet50", str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.keras"
    junk.write_text("nope")
    with pytest.raises(BackboneError, match="not a loadable Keras model"):
        build_backbone(str(junk))


def test_own_model_file_is_pooled(tiny_backbone_file):
    backbone = build_backbone(str(tiny_backbone_file))
    assert backbone.feature_dim == 24 and backbone.name == "tiny"
    feats = np.asarray(backbone.features(RNG.uniform(0, 255, (2, 224, 224, 3)).astype("float32")))
    assert feats.shape == (2, 24)


def test_random_weights_are_the_same_every_build():
    """--weights none is seeded: extraction, prediction from slides and export see one backbone."""
    import numpy as np

    from hist2rna_tf.backbones import build_backbone

    tiles = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    first = np.asarray(build_backbone("resnet50", "none").features(tiles))
    np.random.seed(5)
    second = np.asarray(build_backbone("resnet50", "none").features(tiles))
    np.testing.assert_array_equal(first, second)
