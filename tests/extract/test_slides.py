"""Opening slides, MPP, pyramid levels, reading tiles at 0.25 um/px, and unreadable files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hist2rna_tf.errors import MissingMPPError, SlideError
from hist2rna_tf.extract.slides import (TileReader, find_slides, level_for_mpp, open_slide, patient_id, slide_mpp,
                                        tile_file_xy)


def test_mpp_is_read_from_svs_and_generic_tiff(reference_data):
    for name in ("CMU-1-Small-Region.svs", "CMU-1-Small-Region-pyramid.tif"):
        ref = find_slides([reference_data / "slides" / name])[0]
        assert ref.kind == "openslide"
        assert slide_mpp(open_slide(ref), ref) == pytest.approx(0.499)


def test_level_nearest_above_target():
    downsamples = (1.0, 4.0, 16.0)
    assert level_for_mpp(downsamples, 0.0625, 0.25) == 1  # read level 1 (0.25) exactly
    assert level_for_mpp(downsamples, 0.125, 0.25) == 0  # level 1 would be 0.5: too coarse
    assert level_for_mpp(downsamples, 0.5, 0.25) == 0  # coarser than the target: level 0, upsample


def test_tile_from_pyramid_equals_tile_from_full_resolution(reference_data):
    """The 3-level TIFF and the 1-level SVS hold the same pixels: same tile either way."""
    svs = find_slides([reference_data / "slides" / "CMU-1-Small-Region.svs"])[0]
    tif = find_slides([reference_data / "slides" / "CMU-1-Small-Region-pyramid.tif"])[0]
    # Target 1 um/px: the TIFF is read from level 1 (~1 um/px), the SVS from level 0 (box-averaged).
    a = TileReader(svs, 0.499, 1.0, 224).read(800, 1200).astype(int)
    b_reader = TileReader(tif, 0.499, 1.0, 224)
    assert b_reader.level == 1
    b = b_reader.read(800, 1200).astype(int)

    def coarse(tile):  # the pyramid was made with another filter: compare structure, not texture
        return tile.reshape(28, 8, 28, 8, 3).mean(axis=(1, 3))

    assert np.abs(coarse(a) - coarse(b)).mean() < 4
    shifted = TileReader(tif, 0.499, 1.0, 224).read(800 + 60, 1200).astype(int)
    assert np.abs(coarse(a) - coarse(shifted)).mean() > 3 * np.abs(coarse(a) - coarse(b)).mean()
    assert a.std() > 10  # real tissue, not background


def test_tile_covers_the_right_area(reference_data):
    """A tile at 0.25 um/px from a 0.499 um/px slide covers ~112 level-0 pixels, upsampled to 224."""
    ref = find_slides([reference_data / "slides" / "CMU-1-Small-Region.svs"])[0]
    reader = TileReader(ref, 0.499, 0.25, 224)
    assert reader.read_size_px == 112
    slide = open_slide(ref)
    region = np.asarray(slide.read_region((1000, 1000), 0, (112, 112)).convert("RGB").resize((224, 224),
                                                                                            Image.Resampling.BICUBIC))
    assert np.abs(reader.read(1000, 1000).astype(int) - region.astype(int)).max() <= 1


def test_plain_image_needs_mpp(tmp_path, reference_data):
    png = tmp_path / "core.png"
    Image.open(reference_data / "stain" / "macenko_input.png").save(png)
    ref = find_slides([png])[0]
    assert ref.kind == "image"
    with pytest.raises(MissingMPPError, match="--mpp"):
        slide_mpp(open_slide(ref), ref)
    assert slide_mpp(open_slide(ref), ref, override=0.5) == 0.5


def test_not_a_slide_and_truncated_slide_fail_with_the_file_named(tmp_path, reference_data):
    fake = tmp_path / "notes.svs"
    fake.write_text("this is not a slide")
    with pytest.raises(SlideError, match="notes.svs"):
        open_slide(find_slides([fake])[0])
    truncated = tmp_path / "cut.svs"
    data = (reference_data / "slides" / "CMU-1-Small-Region.svs").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideError, match="cut.svs"):
        ref = find_slides([truncated])[0]
        reader = TileReader(ref, 0.499, 0.25, 224)
        for y in range(0, 2900, 112):  # a truncated file may open; its later tiles cannot be read
            reader.read(1000, y)


def test_tile_folders_and_barcodes(tmp_path, tcga_tiles):
    patient = tmp_path / "tiles" / "TCGA-A2-A04R"
    patient.mkdir(parents=True)
    for tile in sorted((tcga_tiles).glob("TCGA-A2-A04R*.png")):
        shutil.copy(tile, patient)
    refs = find_slides([tmp_path / "tiles"])
    assert [(r.kind, r.slide_id, r.patient_id) for r in refs] == [("tiles", "TCGA-A2-A04R", "TCGA-A2-A04R")]
    name = Path("TCGA-A2-A04R-01Z-00-DX1.BE3661A3_x15680_y39648.png")
    assert tile_file_xy(name) == (15680, 39648)
    assert tile_file_xy(Path("slide [x=12,y=34,w=224,h=224].png")) == (12, 34)
    assert patient_id("TCGA-A2-A04R-01Z-00-DX1.BE3661A3-A2A0") == "TCGA-A2-A04R"
    assert patient_id("my-slide-7") == "my-slide-7"


def test_duplicate_slide_ids_are_refused(tmp_path, reference_data):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(reference_data / "slides" / "CMU-1-Small-Region.svs", tmp_path / sub)
    with pytest.raises(SlideError, match="share the slide id"):
        find_slides([tmp_path / "a", tmp_path / "b"])


def test_missing_input_is_named(tmp_path):
    with pytest.raises(SlideError, match="no such file"):
        find_slides([tmp_path / "nowhere"])


def test_opaque_regions_skip_compositing_with_the_same_pixels():
    """A region read as RGBA becomes RGB on white: opaque ones by dropping alpha (fast path), others by
    compositing; both equal Pillow's compositing on white."""
    from hist2rna_tf.extract.slides import opaque_rgb

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    for alpha in (np.full((32, 32), 255, np.uint8), rng.integers(0, 256, (32, 32), dtype=np.uint8)):
        pixels[..., 3] = alpha
        region = Image.fromarray(pixels, "RGBA")
        white = Image.new("RGBA", region.size, (255, 255, 255, 255))
        expected = np.asarray(Image.alpha_composite(white, region).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(opaque_rgb(region)), expected)
    assert (np.asarray(opaque_rgb(region)) != pixels[..., :3]).any()  # the transparent case really composited
