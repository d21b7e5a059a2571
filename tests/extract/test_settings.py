"""How features were made (extract/settings.py): extract_config.json round trip, older files in today's
names, the one comparison and its one message format."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hist2rna_tf.config import ExtractConfig, StainConfig, TileConfig
from hist2rna_tf.errors import SettingsError, SlideError
from hist2rna_tf.extract.settings import (EXTRACT_CONFIG_FILE, Extraction, FeatureSettings, differences,
                                          extraction_path, read_extraction, require_same, with_absolute_files,
                                          write_extraction)


def _extraction(**stain) -> Extraction:
    config = ExtractConfig(weights="none", tiles=TileConfig(tumour_classes=("Tumor",)), stain=StainConfig(**stain))
    return Extraction(config, "efficientnetv2s", "none", 1280)


def test_extract_config_round_trip(tmp_path):
    fitted = _extraction(he_ref=((0.6, 0.2), (0.7, 0.8), (0.4, 0.5)), max_c_ref=(1.5, 1.1), reference_image="/r.png")
    write_extraction(tmp_path, fitted)
    assert read_extraction(tmp_path) == fitted == read_extraction(extraction_path(tmp_path))
    saved = json.loads(extraction_path(tmp_path).read_text())
    assert saved["backbone"] == "efficientnetv2s" and saved["config"]["stain"]["he_ref"][0] == [0.6, 0.2]
    assert fitted.features == FeatureSettings("efficientnetv2s", "none", "macenko:/r.png", 224, 56.0)


def test_older_files_are_read_in_todays_names_with_todays_defaults(tmp_path):
    """A folder of 0.1.x: `macenko` was HEnorm's variant; a field it lacked takes its default, one since
    removed is ignored."""
    data = _extraction().to_json()
    data["version"] = "0.1.0"
    del data["config"]["tiles"]["mask_mpp"]
    data["config"]["stain"]["retired_option"] = 3
    extraction_path(tmp_path).write_text(json.dumps(data))
    old = read_extraction(tmp_path)
    assert old.config.stain.method == "macenko-henorm" and old.features.normaliser == "macenko-henorm"
    assert old.config.tiles.mask_mpp == TileConfig().mask_mpp and old.version == "0.1.0"


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"version": "0.4.0"}'])
def test_an_unreadable_file_is_named(tmp_path, content):
    extraction_path(tmp_path).write_text(content)
    with pytest.raises(SettingsError, match=f"{EXTRACT_CONFIG_FILE}: not a readable {EXTRACT_CONFIG_FILE}"):
        read_extraction(tmp_path)
    with pytest.raises(SettingsError, match=f"missing/{EXTRACT_CONFIG_FILE}: not a readable"):
        read_extraction(tmp_path / "missing")


def test_one_comparison_names_each_difference():
    settings = FeatureSettings("resnet50", "imagenet", "macenko", 224, 56.00001)
    assert differences(settings, FeatureSettings("resnet50", "imagenet", "macenko", 224, 56.0)) == []  # float32
    assert differences(settings, replace(settings, normaliser="none", tile_size_px=256)) == [
        "normaliser: 'macenko' -> 'none'", "tile_size_px: 224 -> 256"]
    folder = _extraction()
    changed = replace(folder, config=replace(folder.config, tiles=replace(folder.config.tiles, max_tiles=50),
                                             stain=replace(folder.config.stain, beta=0.2), batch_size=8))
    assert differences(folder, changed) == ["tiles.max_tiles: 1000 -> 50", "stain.beta: 0.15 -> 0.2"]  # not batch_size
    with pytest.raises(TypeError):
        differences(settings, folder)


def test_every_refusal_has_one_format():
    settings = FeatureSettings("resnet50", "imagenet", "macenko", 224, 56.0)
    require_same(settings, settings, "x", "y", "fix")  # the same: nothing said
    with pytest.raises(SettingsError) as error:
        require_same(settings, replace(settings, weights="none"), "feat/b.tfrecord", "the features run/ was trained on",
                     "extract them again.")
    assert str(error.value) == ("feat/b.tfrecord: made with other settings than the features run/ was trained on "
                                "(weights: 'imagenet' -> 'none'); extract them again.")
    with pytest.raises(SlideError):  # a slide's own refusal fails that slide alone
        require_same(settings, replace(settings, weights="none"), "s", "r", "f", error=SlideError)


def test_model_and_weights_files_are_recorded_by_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "tiny.keras").write_bytes(b"")
    (tmp_path / "w.h5").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    config = with_absolute_files(ExtractConfig(backbone="tiny.keras", weights="w.h5"))
    assert (config.backbone, config.weights) == (str(tmp_path / "tiny.keras"), str(tmp_path / "w.h5"))
    named = with_absolute_files(ExtractConfig(backbone="resnet50", weights="imagenet"))
    assert (named.backbone, named.weights) == ("resnet50", "imagenet")


def test_a_backbone_is_extracted_at_its_own_scale_unless_told():
    """`for_backbone`, the one place a backbone's scale is applied (command line, demo, notebook, experiments):
    the paper's CNNs at 224 px and 0.25 um/px, an encoder at its training scale, TRIDENT's size on request,
    what is given otherwise; an encoder off its scale is said."""
    from hist2rna_tf.extract.settings import for_backbone, off_scale

    cnn, uni, conch = for_backbone("efficientnetv2s"), for_backbone("uni", "none"), for_backbone("conch-v1.5")
    assert (cnn.tiles.tile_size_px, cnn.tiles.target_mpp) == (224, 0.25)
    assert (uni.tiles.tile_size_px, uni.tiles.target_mpp, uni.weights) == (224, 0.5, "none")
    assert (conch.tiles.tile_size_px, conch.tiles.target_mpp) == (448, 0.5)
    assert for_backbone("uni", tile_size_px="trident").tiles.tile_size_px == 256
    told = for_backbone("uni", tile_size_px=320, target_mpp=0.25, batch_size=8)
    assert (told.tiles.tile_size_px, told.tiles.target_mpp, told.batch_size) == (320, 0.25, 8)
    assert off_scale(uni) is None and off_scale(for_backbone("uni", tile_size_px="trident")) is None
    assert "was trained on 224-px tiles at 0.5 um/px" in off_scale(told) and off_scale(cnn) is None


def test_feature_settings_travel_through_an_exports_metadata_unchanged():
    """The one form a head export carries them in, and back (FeatureSettings.to_metadata/from_metadata);
    metadata without them (exports before 0.2.0) gives None."""
    import numpy as np

    from hist2rna_tf.extract.settings import FeatureSettings

    settings = FeatureSettings("uni", "pytorch_model.bin", "macenko", 256, 128.0)
    meta = settings.to_metadata()
    assert isinstance(meta["tile_size_um"], np.float32) and isinstance(meta["backbone"], np.bytes_)
    assert FeatureSettings.from_metadata(meta) == settings
    assert FeatureSettings.from_metadata({"feature_dim": np.int64(3)}) is None
