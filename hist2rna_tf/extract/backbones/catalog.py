"""The named backbones, without TensorFlow: name -> the paper's name, feature size, and how to build
it (a keras.applications family: its constructor and its own preprocess_input; or our own module).

This table is the one list of names: `--backbone` offers them, `build.build_backbone` builds them,
and a run knows from it whether its backbone was a named one. The families disagree on
preprocessing (ResNet50: caffe-style BGR mean subtraction; InceptionV3: [-1, 1]; DenseNet201:
torch-style; EfficientNetV2 and RegNet rescale inside the model), so each name carries its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # what --backbone takes, records carry and feature folders are named after
    paper_name: str
    feature_dim: int
    # keras.applications.<constructor>, with keras.applications.<family>.preprocess_input; or, for
    # constructor "RegNetY" (family None), extract.backbones.regnet, which rescales inside the model.
    constructor: str
    family: str | None


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("efficientnetv2s", "EfficientNetV2S", 1280, "EfficientNetV2S", "efficientnet_v2"),
        BackboneSpec("regnety320", "RegNetY320", 3712, "RegNetY", None),
        BackboneSpec("densenet201", "DenseNet201", 1920, "DenseNet201", "densenet"),
        BackboneSpec("inceptionv3", "InceptionV3", 2048, "InceptionV3", "inception_v3"),
        BackboneSpec("resnet50", "ResNet50", 2048, "ResNet50", "resnet50"),
    )
}
BACKBONE_NAMES = tuple(BACKBONES)  # the paper's five, its best (the default) first

# --weights: what `weights` may be besides a path to a weights file.
NAMED_WEIGHTS = ("imagenet", "none")


def weights_tag(weights: str) -> str:
    """How the weights are recorded in outputs: 'imagenet', 'none', or the file's name."""
    from pathlib import Path

    return weights if weights in NAMED_WEIGHTS else Path(weights).name
