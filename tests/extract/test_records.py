"""The TFRecord schema: round trip, atomic writes, unreadable files, the tf.data reader."""

from __future__ import annotations

import numpy as np
import pytest

from hist2rna_tf import __version__
from hist2rna_tf.errors import RecordError, SettingsError
from hist2rna_tf.extract.records import (SlideFeatures, feature_dataset, feature_table, read_record, record_path,
                                         write_record)
from hist2rna_tf.extract.settings import FeatureSettings


def _record(slide_id: str, dim: int = 6, n_tiles: int = 4, tiles: bool = True, normaliser: str = "macenko",
            version: str = __version__) -> SlideFeatures:
    rng = np.random.default_rng(abs(hash(slide_id)) % 1000)
    tile_features = rng.normal(size=(n_tiles, dim)).astype(np.float32)
    return SlideFeatures(
        slide_id=slide_id, patient_id=slide_id[:12],
        settings=FeatureSettings("efficientnetv2s", "imagenet", normaliser, 224, 56.0), version=version, mpp=0.2527,
        n_tiles=n_tiles, n_unnormalised=1, feature=tile_features.mean(0),
        tile_xy_px=rng.integers(0, 10**6, (n_tiles, 2)), tile_features=tile_features if tiles else None)


def test_round_trip(tmp_path):
    for tiles in (True, False):
        original = _record("TCGA-A2-A04R-01Z-00-DX1", tiles=tiles)
        path = write_record(original, record_path(tmp_path, "efficientnetv2s", original.slide_id))
        loaded = read_record(path)
        for key in ("slide_id", "patient_id", "backbone", "weights", "normaliser", "version", "tile_size_px",
                    "n_tiles", "n_unnormalised"):
            assert getattr(loaded, key) == getattr(original, key)
        assert loaded.tile_size_um == pytest.approx(56.0) and loaded.mpp == pytest.approx(0.2527)
        np.testing.assert_array_equal(loaded.feature, original.feature)
        np.testing.assert_array_equal(loaded.tile_xy_px, original.tile_xy_px)
        if tiles:
            np.testing.assert_array_equal(loaded.tile_features, original.tile_features)
        else:
            assert loaded.tile_features is None


@pytest.mark.parametrize("stored, version, read", [
    ("macenko", "0.1.0", "macenko-henorm"),  # before 0.2.0 `macenko` was HEnorm's natural-log variant
    ("macenko:/ref.png", "0.1.0", "macenko-henorm:/ref.png"),
    ("macenko", "0.2.0", "macenko"), ("macenko-henorm", "0.2.0", "macenko-henorm"), ("none", "0.1.0", "none")])
def test_older_normaliser_names_read_as_todays(tmp_path, stored, version, read):
    path = write_record(_record("s", normaliser=stored, version=version), record_path(tmp_path, "b", "s"))
    assert read_record(path).normaliser == read


def test_features_of_two_normalisers_are_not_mixed(tmp_path):
    """One head cannot use features normalised two ways: the table names the slides and the change."""
    for name, normaliser in (("a", "macenko"), ("b", "macenko-henorm")):
        write_record(_record(name, normaliser=normaliser), record_path(tmp_path, "efficientnetv2s", name))
    with pytest.raises(SettingsError, match=r"b.tfrecord: made with other settings than \S*a.tfrecord "
                                            r"\(normaliser: 'macenko' -> 'macenko-henorm'\)"):
        feature_table(tmp_path)
    write_record(_record("b"), record_path(tmp_path, "efficientnetv2s", "b"))
    features, patients, settings = feature_table(tmp_path)
    assert list(features.index) == ["a", "b"] and settings.normaliser == "macenko"


def test_writes_are_atomic_and_leave_nothing_behind(tmp_path):
    path = record_path(tmp_path, "resnet50", "slide-a")
    write_record(_record("slide-a"), path)
    write_record(_record("slide-a", dim=3), path)  # replaces
    assert read_record(path).feature_dim == 3
    assert [p.name for p in path.parent.iterdir()] == ["slide-a.tfrecord"]


def test_unreadable_record_names_the_file(tmp_path):
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(RecordError, match="bad.tfrecord"):
        read_record(bad)
    with pytest.raises(RecordError, match="no .tfrecord files"):
        feature_dataset(tmp_path / "empty")


@pytest.mark.parametrize("damage", [b"", b"\x00" * 40, b"not a record at all, but long enough to have a length"])
def test_a_folder_read_as_one_stream_names_a_damaged_record_wherever_it_lies(tmp_path, damage):
    """read_feature_folder reads a folder's records as one tf.data stream (read_records): the same records
    as read_record one by one, and an empty or damaged file among them named, whatever its place."""
    from hist2rna_tf.extract.records import read_feature_folder, read_records

    paths = [str(write_record(_record(f"TCGA-AA-000{i}-01Z"), tmp_path / f"s{i}.tfrecord")) for i in range(4)]
    for one, streamed in zip(map(read_record, paths), read_records(paths)):
        assert one.slide_id == streamed.slide_id and np.array_equal(one.tile_features, streamed.tile_features)
        assert np.array_equal(one.tile_xy_px, streamed.tile_xy_px) and one.settings == streamed.settings
    assert list(read_feature_folder(tmp_path).features.index) == [f"TCGA-AA-000{i}-01Z" for i in range(4)]
    for place in (0, 2, 3):
        damaged = tmp_path / f"s{place}.tfrecord"
        kept = damaged.read_bytes()
        damaged.write_bytes(damage)
        with pytest.raises(RecordError, match=rf"s{place}.tfrecord: not a readable feature record"):
            read_feature_folder(tmp_path)
        damaged.write_bytes(kept)


def test_dataset_streams_features_with_their_ids(tmp_path):
    records = [_record(f"slide-{i}") for i in range(3)]
    for r in records:
        write_record(r, record_path(tmp_path, "efficientnetv2s", r.slide_id))
    seen = {}
    for features, ids in feature_dataset(tmp_path):
        assert features.shape == (1, 6)
        seen[ids["slide_id"].numpy().decode()] = features.numpy()[0]
    assert sorted(seen) == [r.slide_id for r in records]
    for r in records:
        np.testing.assert_array_equal(seen[r.slide_id], r.feature)
