"""The normalisers the extraction pipeline can run, by StainConfig.method: the TensorFlow Macenko
variants (`macenko`, the authors'; `macenko-henorm`), staintools' Macenko and Vahadane (numpy, for
comparison), and `none`; targets fitted to a reference image; and one image file normalised (what
`hist2rna normalize` shows).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hist2rna_tf.atomic import atomic_path
from hist2rna_tf.config import StainConfig
from hist2rna_tf.errors import Hist2RNAError, StainError
from hist2rna_tf.extract.stain.macenko import Macenko, macenko_normalise
from hist2rna_tf.outputs import refuse_overlap, refuse_replacing_file

log = logging.getLogger(__name__)



def make_normaliser(config: StainConfig, selection: str | None = None):
    """A function [B, H, W, 3] uint8 -> (uint8 images, bool normalised [B]) for tf.data.map.

    `macenko` runs as TensorFlow ops (`selection`: see Macenko); the staintools methods run
    through tf.numpy_function (slow, CPU only, for comparison); `none` passes tiles through.
    """
    if config.method == "none":
        def passthrough(images):
            images = tf.convert_to_tensor(images, tf.uint8)
            return images, tf.ones(tf.shape(images)[:1], tf.bool)
        return passthrough
    if config.is_macenko:
        return Macenko(config, selection)
    if config.method in ("staintools-macenko", "staintools-vahadane"):
        return _staintools_normaliser(config)
    raise ValueError(f"unknown stain method {config.method!r}; choose macenko, macenko-henorm, "
                     "staintools-macenko, staintools-vahadane or none")


def staintools_normaliser_numpy(config: StainConfig):
    """A numpy function (tile uint8 [H, W, 3]) -> (uint8 tile, ok) backed by staintools."""
    import staintools

    reference = load_reference_image(config.reference_image)
    method = config.method.split("-", 1)[1]
    normaliser = staintools.StainNormalizer(method=method)
    normaliser.fit(np.array(reference))  # staintools writes into its inputs: always hand it copies

    def normalise_one(tile: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            out = normaliser.transform(np.array(tile))
        except Exception as exc:  # staintools raises bare Exceptions on tiles with no tissue
            log.debug("staintools could not normalise a tile: %s", exc)
            return tile, False
        if not np.isfinite(out).all():
            return tile, False
        return np.clip(out, 0, 255).astype(np.uint8), True

    return normalise_one


def _staintools_normaliser(config: StainConfig):
    normalise_one = staintools_normaliser_numpy(config)

    def batch_numpy(images: np.ndarray):
        outs, oks = zip(*(normalise_one(tile) for tile in images)) if len(images) else ((), ())
        return np.stack(outs) if outs else images, np.asarray(oks, dtype=bool)

    def fn(images):
        out, ok = tf.numpy_function(batch_numpy, [images], (tf.uint8, tf.bool))
        out.set_shape(images.shape)
        ok.set_shape(images.shape[:1])
        return out, ok

    return fn


def fit_macenko_targets(image: np.ndarray, config: StainConfig = StainConfig()) -> StainConfig:
    """A StainConfig whose targets (HERef, maxCRef) are fitted to a reference RGB image."""
    he, _, max_c, ok = Macenko(config).estimate(tf.convert_to_tensor(image[None], tf.uint8))
    if not bool(ok[0]):
        raise StainError(f"{config.reference_image or 'the reference image'}: too few stained pixels to fit Macenko "
                         "targets to; give a tissue-rich H&E image as --stain-reference (or leave it out for the "
                         "paper's fixed targets).")
    he_ref = tuple(tuple(float(v) for v in row) for row in he[0].numpy())
    max_c = max_c[0].numpy()
    from dataclasses import replace

    return replace(config, he_ref=he_ref, max_c_ref=(float(max_c[0]), float(max_c[1])))


def load_reference_image(path: str | None) -> np.ndarray:
    """The user's reference image, or the shipped default (a real TCGA-BRCA tile)."""
    from importlib import resources

    from PIL import Image

    if path is None:
        path = resources.files("hist2rna_tf") / "data" / "tcga_tiles" / DEFAULT_REFERENCE_TILE
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise StainError(f"{path}: not a readable image for --stain-reference ({exc}).") from None


DEFAULT_REFERENCE_TILE = "TCGA-A2-A0YG-01Z-00-DX1.89A39319-F880-47DE-B311-DA1F6A64B6F3_x41216_y30464.png"


def resolve_stain_config(config: StainConfig) -> StainConfig:
    """For a Macenko variant with a reference image, fit the targets to it; otherwise unchanged."""
    if config.is_macenko and config.reference_image is not None:
        return fit_macenko_targets(load_reference_image(config.reference_image), config)
    return config


def component_path(out: Path, tag: str) -> Path:
    """`<out>_H.png` beside `out.png` (tag "_H" or "_E")."""
    return out.with_name(out.stem + tag + out.suffix)


def normalise_image_file(image: str | Path, out: str | Path, config: StainConfig,
                         components: bool = False, overwrite: bool = True) -> tuple[list[Path], bool]:
    """Normalise one RGB image file (PNG/JPEG/TIFF) with `config` and write it to `out`; with
    `components` (Macenko variants) also the H-only and E-only images, `<out>_H`, `<out>_E`. Returns
    the files written and whether the image had enough stain to estimate (else written unchanged). An
    existing output is replaced only with `overwrite` (the command line's --overwrite)."""
    from PIL import Image

    image, out = Path(image), Path(out)
    outputs = {"OUTPUT": out}
    if components:
        outputs.update({f"OUTPUT's {tag[1:]} image": component_path(out, tag) for tag in ("_H", "_E")})
    for flag, path in outputs.items():
        refuse_overlap(path, {"INPUT": image}, flag=flag)
    for path in outputs.values():
        refuse_replacing_file(path, overwrite)
    if out.suffix.lower() not in Image.registered_extensions():
        raise Hist2RNAError(f"{out}: {out.suffix or 'no extension'} is not an image type Pillow writes; name the "
                            "output .png, .tif or .jpg (.png keeps every grey level).")
    try:
        with Image.open(image) as img:
            rgb = np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise Hist2RNAError(f"{image}: not a readable image ({exc}).") from None
    config = resolve_stain_config(config)
    if components and not config.is_macenko:
        raise Hist2RNAError("--components needs --stain macenko or macenko-henorm.")
    if config.is_macenko:
        normalised, ok, h_only, e_only = macenko_normalise(rgb[None], config, components=True)
    else:
        normalised, ok = make_normaliser(config)(rgb[None])
    images = [(out, normalised)]
    if components:
        images += [(component_path(out, tag), part) for tag, part in (("_H", h_only), ("_E", e_only))]
    for path, array in images:
        with atomic_path(path) as tmp:
            Image.fromarray(array[0].numpy()).save(tmp)
    return [path for path, _ in images], bool(ok.numpy()[0])
