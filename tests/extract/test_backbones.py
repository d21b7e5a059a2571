"""The backbones: the catalog is what builds, feature sizes, each family's own preprocessing, weights
from imagenet / a local file / none, and a user's own model file."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.build import build_backbone, preprocess_for
from hist2rna_tf.extract.backbones.catalog import BACKBONES

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
    assert preprocess_for(BACKBONES["resnet50"]) is apps.resnet50.preprocess_input
    assert preprocess_for(BACKBONES["inceptionv3"]) is apps.inception_v3.preprocess_input
    assert preprocess_for(BACKBONES["densenet201"]) is apps.densenet.preprocess_input
    assert preprocess_for(BACKBONES["efficientnetv2s"]) is apps.efficientnet_v2.preprocess_input
    # and what each does: caffe (BGR, mean-subtracted), tf ([-1, 1]), torch (ImageNet mean/std), in-model
    caffe = np.asarray(preprocess_for(BACKBONES["resnet50"])(x.copy()))
    np.testing.assert_allclose(caffe[..., 0], x[..., 2] - 103.939, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(preprocess_for(BACKBONES["inceptionv3"])(x.copy())), x / 127.5 - 1, rtol=1e-5)
    torch = np.asarray(preprocess_for(BACKBONES["densenet201"])(x.copy()))
    np.testing.assert_allclose(torch[..., 0], (x[..., 0] / 255 - 0.485) / 0.229, rtol=1e-4)
    for in_model in ("efficientnetv2s", "regnety320"):
        np.testing.assert_array_equal(np.asarray(preprocess_for(BACKBONES[in_model])(x.copy())), x)


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
    for garbage in ("junk.h5", "junk.weights.h5"):  # a weights file that is not one: said so, not "not found"
        (tmp_path / garbage).write_text("nope")
        with pytest.raises(BackboneError, match=f"{garbage}: not a weights file of ResNet50"):
            build_backbone("resnet50", str(tmp_path / garbage))
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

    from hist2rna_tf.extract.backbones.build import build_backbone

    tiles = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    first = np.asarray(build_backbone("resnet50", "none").features(tiles))
    np.random.seed(5)
    second = np.asarray(build_backbone("resnet50", "none").features(tiles))
    np.testing.assert_array_equal(first, second)


def test_the_catalog_is_the_one_list_of_names():
    """One list of names: the paper's CNNs, then the pathology encoders, each offered by --backbone."""
    import argparse

    from hist2rna_tf.cli import build_parser
    from hist2rna_tf.extract.backbones.catalog import BACKBONE_NAMES, ENCODERS

    assert BACKBONE_NAMES == tuple(BACKBONES) + tuple(ENCODERS) and BACKBONE_NAMES[0] == "efficientnetv2s"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    backbone_help = next(a.help for a in commands.choices["extract"]._actions if "--backbone" in a.option_strings)
    assert all(name in backbone_help for name in BACKBONE_NAMES)
    for name, spec in BACKBONES.items():
        assert spec.name == name and (spec.family is None) == (spec.constructor == "RegNetY")
    for name, spec in ENCODERS.items():
        assert spec.name == name and spec.feature_dim == spec.vit.feature_dim


def test_tile_px_trident_takes_the_size_tridents_readme_gives(capsys, tmp_path):
    """`--tile-px trident`: UNI, UNI2-h and Prov-GigaPath from 256-px tiles, CONCH v1.5 from 512, the
    others 224 (TRIDENT's README, at 20x); for the paper's CNNs it is refused, naming why."""
    from hist2rna_tf.extract.backbones.catalog import trident_tile_px

    from commandline import run

    sizes = {name: trident_tile_px(name) for name in ("uni", "uni2-h", "prov-gigapath", "conch-v1.5", "virchow2",
                                                     "h-optimus-0", "phikon-v2")}
    assert sizes == {"uni": 256, "uni2-h": 256, "prov-gigapath": 256, "conch-v1.5": 512, "virchow2": 224,
                     "h-optimus-0": 224, "phikon-v2": 224}
    status, err = run(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "out"), "--tile-px", "trident",
                       "--weights", "none"], capsys)
    assert status == 2 and "TRIDENT's tile sizes are for the pathology encoders" in err
