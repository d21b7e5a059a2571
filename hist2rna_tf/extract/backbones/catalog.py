"""The named backbones, without TensorFlow: name -> the paper's name, feature size, and how to build
it (a keras.applications family: its constructor and its own preprocess_input; or our own module).

This table is the one list of names: `--backbone` offers them, `build.build_backbone` builds them,
and a run knows from it whether its backbone was a named one. The families disagree on
preprocessing (ResNet50: caffe-style BGR mean subtraction; InceptionV3: [-1, 1]; DenseNet201:
torch-style; EfficientNetV2 and RegNet rescale inside the model), so each name carries its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from hist2rna_tf.config import TileConfig


@dataclass(frozen=True)
class ViTSpec:
    """A vision transformer as timm's VisionTransformer builds it (vit.py mirrors it layer by layer),
    and the layout of its checkpoints (a key of checkpoints.LAYOUTS: "timm", "conch" (a timm trunk +
    attentional pooler, TRIDENT's CONCHVisionTower), "dinov2-hf" (transformers' Dinov2Model))."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float  # the MLP's first layer is int(embed_dim * mlp_ratio) wide, as timm computes it
    swiglu: bool = False  # timm's SwiGLUPacked: silu(first half of fc1) * second half -> fc2
    reg_tokens: int = 0  # register tokens after CLS
    no_embed_class: bool = False  # position embeddings on the patch tokens only (not CLS or registers)
    layer_scale: bool = True
    qkv_bias: bool = True
    img_size: int = 224  # the size of the tiles it takes (its position embeddings are for this grid)
    output: str = "cls"  # "cls", "cls+mean" (CLS beside the mean of the patch tokens), "pooler"
    layout: str = "timm"
    norm_eps: float = 1e-6  # the blocks' and the final LayerNorm's
    reference_grid: int | None = None  # conch: the grid of the reference trunk's position embeddings
    pooler_dim: int = 0  # conch: the attentional pooler's width (one query, 8 heads)
    pooler_heads: int = 8
    mask_token: bool = False  # transformers' Dinov2Model holds one (counted in its parameters, unused)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def feature_dim(self) -> int:
        if self.output == "pooler":
            return self.pooler_dim
        return self.embed_dim * (2 if self.output == "cls+mean" else 1)

    @property
    def parameter_count(self) -> int:
        """Parameters of the encoder (what timm counts without a classifier head)."""
        d, h, c = self.embed_dim, self.mlp_hidden, self.pooler_dim
        patches = (self.reference_grid or self.img_size // self.patch_size) ** 2
        tokens = d * (1 + self.reg_tokens) + d * (patches + (0 if self.no_embed_class else 1 + self.reg_tokens))
        embed = 3 * self.patch_size ** 2 * d + d
        mlp_out = h // 2 if self.swiglu else h
        block = (4 * d  # two LayerNorms
                 + d * 3 * d + (3 * d if self.qkv_bias else 0) + d * d + d  # qkv, proj
                 + d * h + h + mlp_out * d + d  # fc1, fc2
                 + (2 * d if self.layer_scale else 0))
        pooler = (c + 2 * c + 2 * d + c * c + 2 * c * d + c * c + 2 * c) if self.output == "pooler" else 0
        mask_token = d if self.mask_token else 0
        return embed + tokens + self.depth * block + 2 * d + pooler + mask_token  # 2 d: the final LayerNorm


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
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """A pathology foundation model: its ViT as its reference loader builds it (TRIDENT's
    trident/patch_encoder_models/load.py, timm's vision_transformer.py), its own normalisation, the
    scale it was trained at, its reference transform (torchvision's Resize(resize, interpolation),
    then CenterCrop(vit.img_size) when `crop`, on a PIL tile: resize.py), and where a user gets its
    weights (gated or non-commercial: they accept the licence on that page and download the file
    themselves)."""

    name: str
    paper_name: str
    vit: ViTSpec
    weights_page: str  # where the licence is accepted and the file downloaded
    weights_file: str  # the file to pass as --weights
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    target_mpp: float = 0.5  # um/px of its tiles (the paper's CNNs: 0.25)
    tile_size_px: int = 224  # of its tiles by default
    trident_tile_px: int = 224  # of the tiles TRIDENT's README extracts it from (at 20x, 0.5 um/px): --tile-px trident
    resize: int = 224
    interpolation: str = "bilinear"  # torchvision's default
    crop: bool = True
    licence: str = ""

    @property
    def feature_dim(self) -> int:
        return self.vit.feature_dim


_H_OPTIMUS = ViTSpec(patch_size=14, embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2, swiglu=True,
                     reg_tokens=4, no_embed_class=True)  # timm vit_giant_patch14_reg4_dinov2
_H_OPTIMUS_NORM = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}

_NC = "CC-BY-NC-ND-4.0, gated"
ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec("uni", "UNI (MahmoodLab)", ViTSpec(patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                                       mlp_ratio=4.0),
                    "https://huggingface.co/MahmoodLab/UNI", "pytorch_model.bin", trident_tile_px=256, licence=_NC),
        EncoderSpec("uni2-h", "UNI2-h (MahmoodLab)",
                    ViTSpec(patch_size=14, embed_dim=1536, depth=24, num_heads=24, mlp_ratio=2.66667 * 2, swiglu=True,
                            reg_tokens=8, no_embed_class=True),
                    "https://huggingface.co/MahmoodLab/UNI2-h", "pytorch_model.bin", trident_tile_px=256, licence=_NC),
        # TRIDENT's CONCHVisionTower: ViT-L/16 (layer scale, init 1.0) at 448 px, position embeddings
        # of a 224-px trunk interpolated to 448 at each forward, attentional pooler (1 query) -> 768.
        EncoderSpec("conch-v1.5", "CONCH v1.5 (MahmoodLab)",
                    ViTSpec(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, img_size=448,
                            output="pooler", layout="conch", reference_grid=14, pooler_dim=768),
                    "https://huggingface.co/MahmoodLab/conchv1_5", "pytorch_model_vision.bin", tile_size_px=448,
                    trident_tile_px=512, resize=448, licence=_NC),
        EncoderSpec("virchow2", "Virchow2 (Paige)",
                    ViTSpec(patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=5.3375, swiglu=True,
                            reg_tokens=4, output="cls+mean"),
                    "https://huggingface.co/paige-ai/Virchow2", "pytorch_model.bin", interpolation="bicubic",
                    crop=False, licence=_NC),
        EncoderSpec("h-optimus-0", "H-optimus-0 (Bioptimus)", _H_OPTIMUS, "https://huggingface.co/bioptimus/H-optimus-0",
                    "pytorch_model.bin", crop=False, licence="Apache-2.0", **_H_OPTIMUS_NORM),
        EncoderSpec("h-optimus-1", "H-optimus-1 (Bioptimus)", _H_OPTIMUS, "https://huggingface.co/bioptimus/H-optimus-1",
                    "pytorch_model.bin", crop=False, licence=_NC, **_H_OPTIMUS_NORM),
        # transformers' Dinov2Model (ViT-L/16, layer scale, GELU): the folder with config.json and model.safetensors.
        EncoderSpec("phikon-v2", "Phikon-v2 (Owkin)",
                    ViTSpec(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, layout="dinov2-hf",
                            mask_token=True),
                    "https://huggingface.co/owkin/phikon-v2", "model.safetensors (its folder, with config.json)",
                    licence="Owkin non-commercial"),
        # TRIDENT's transform: Resize(256, bicubic) then CenterCrop(224).
        EncoderSpec("prov-gigapath", "Prov-GigaPath (Microsoft, Providence)",
                    ViTSpec(patch_size=16, embed_dim=1536, depth=40, num_heads=24, mlp_ratio=5.33334, swiglu=True),
                    "https://huggingface.co/prov-gigapath/prov-gigapath", "pytorch_model.bin", resize=256,
                    interpolation="bicubic", trident_tile_px=256, licence="Apache-2.0, gated"),
    )
}
BACKBONE_NAMES = tuple(BACKBONES) + tuple(ENCODERS)  # the paper's five (its best, the default, first), the encoders

# --weights: what `weights` may be besides a path to a weights file.
NAMED_WEIGHTS = ("imagenet", "none")


def weights_tag(weights: str) -> str:
    """How the weights are recorded in outputs: 'imagenet', 'none', or the file's name."""
    from pathlib import Path

    return weights if weights in NAMED_WEIGHTS else Path(weights).name


def trident_tile_px(backbone: str) -> int:
    """The tile size (px, at 0.5 um/px) TRIDENT's README extracts an encoder's features from (its
    transform then resizes them to the model's input): `--tile-px trident`."""
    spec = ENCODERS.get(str(backbone).lower())
    if spec is None:
        from hist2rna_tf.errors import BackboneError

        raise BackboneError(f"--tile-px trident: TRIDENT's tile sizes are for the pathology encoders "
                            f"({', '.join(ENCODERS)}), not {backbone}; give a size in px.")
    return spec.trident_tile_px


def native_scale(backbone: str) -> tuple[int, float]:
    """(tile size in px, um/px) a backbone's features are made at by default: an encoder's own (the scale
    it was trained at), else the paper's (config.TileConfig's defaults: 224 px at 0.25 um/px)."""
    spec = ENCODERS.get(str(backbone).lower())
    paper = TileConfig()
    return (spec.tile_size_px, spec.target_mpp) if spec else (paper.tile_size_px, paper.target_mpp)
