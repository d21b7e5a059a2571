"""The encoders' reference resize (extract/backbones/resize.py) is Pillow's, to the last bit: what
torchvision's Resize does to a PIL tile before TRIDENT's encoders see it, here inside the model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hist2rna_tf.extract.backbones.resize import center_crop_offset, pil_resize, reference_transform

PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@pytest.fixture(scope="module")
def tiles(tcga_tiles) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((tcga_tiles).glob("*.png"))[:3]])


@pytest.mark.parametrize("size", [256, 160, 300, 448, 97])
@pytest.mark.parametrize("interpolation", sorted(PIL_FILTERS))
def test_resizing_is_pillows_to_the_last_bit(tiles, size, interpolation):
    expected = np.stack([np.asarray(Image.fromarray(t).resize((size, size), PIL_FILTERS[interpolation])) for t in tiles])
    ours = np.asarray(pil_resize(tiles.astype(np.float32), size, interpolation))
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected.astype(np.float32))


def test_a_tile_of_the_size_asked_is_left_as_it_is(tiles):
    np.testing.assert_array_equal(np.asarray(pil_resize(tiles, 224, "bicubic")), tiles.astype(np.float32))


def test_resize_then_center_crop_is_torchvisions(tiles):
    """Resize(256, bicubic) then CenterCrop(224) (Prov-GigaPath's): the crop starts at 16, as torchvision's."""
    assert center_crop_offset(256, 224) == 16 and center_crop_offset(225, 224) == 0
    resized = np.stack([np.asarray(Image.fromarray(t).resize((256, 256), Image.Resampling.BICUBIC)) for t in tiles])
    ours = np.asarray(reference_transform(tiles, 256, "bicubic", 224))
    np.testing.assert_array_equal(ours, resized[:, 16:240, 16:240].astype(np.float32))
