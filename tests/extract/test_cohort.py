"""A folder's extraction end to end: features follow their slide, resume, shards, settings kept and never
mixed, bad input failing its own slide."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hist2rna_tf.config import ExtractConfig, TileConfig
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.extract.cohort import MANIFEST, MANIFEST_LOCK, extract_cohort
from hist2rna_tf.extract.plan import plan_tiles
from hist2rna_tf.extract.records import read_record
from hist2rna_tf.extract.settings import EXTRACT_CONFIG_FILE, extraction_path
from hist2rna_tf.extract.slides import find_slides
from hist2rna_tf.extract.stain.macenko import Macenko

from files import sha256


def _demo_slides(cohort: Path, names=("demo-01", "demo-02", "demo-03")) -> list[Path]:
    return [cohort / "slides" / f"{n}.tiff" for n in names]


def _expected_mean(slide: Path, annotation: Path, extractor) -> np.ndarray:
    """The slide's mean feature computed the slow, obvious way: OpenSlide reads one tile at a time."""
    import openslide

    ref = find_slides([slide])[0]
    coords = plan_tiles(ref, extractor.config.tiles, annotation).coords_px
    handle = openslide.OpenSlide(str(slide))  # demo slides are at 0.25 um/px: level 0, no resampling
    tiles = np.stack([np.asarray(handle.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB"))
                      for x, y in coords])
    normalised, _ = Macenko(extractor.config.stain)(tiles)
    return np.asarray(extractor.backbone.features(normalised)).mean(axis=0)


@pytest.mark.slow
def test_features_follow_their_slide(demo_cohort, tiny_extractor, tmp_path):
    slides = _demo_slides(demo_cohort)
    results = extract_cohort(slides, tmp_path, annotations_dir=demo_cohort / "annotations", extractor=tiny_extractor)
    assert [r.status for r in results] == ["done"] * 3
    stored = {r.slide_id: read_record(r.record) for r in results}
    expected = {s.stem: _expected_mean(s, demo_cohort / "annotations" / f"{s.stem}.geojson", tiny_extractor)
                for s in slides}
    for slide_id, record in stored.items():
        assert record.n_tiles == len(record.tile_xy_px) > 16  # spans batches of 16
        np.testing.assert_allclose(record.feature, expected[slide_id], rtol=1e-4, atol=1e-5)
    # Slides differ, and by more than the pipeline's own error: a shuffled pipeline fails above.
    ids = sorted(stored)
    for a in ids:
        for b in ids:
            if a != b:
                gap = np.abs(stored[a].feature - expected[b]).max()
                assert gap > 100 * np.abs(stored[a].feature - expected[a]).max() + 1e-4



def test_a_slides_record_is_the_same_bytes_however_it_was_extracted(demo_cohort, tiny_extractor, tmp_path):
    """Alone, within the cohort (batches spanning slides) or in a shard: one record, to the bit. (Another
    --batch-size compiles other kernels: features then differ in the last bit, ~6e-8.)"""
    slides = _demo_slides(demo_cohort)
    annotations = demo_cohort / "annotations"
    together = extract_cohort(slides, tmp_path / "together", annotations_dir=annotations, extractor=tiny_extractor)
    alone = extract_cohort(slides[1:2], tmp_path / "alone", annotations_dir=annotations, extractor=tiny_extractor)
    odd = replace(tiny_extractor, config=replace(tiny_extractor.config, shard_index=1, shard_count=2))
    sharded = extract_cohort(slides, tmp_path / "shard", annotations_dir=annotations, extractor=odd)
    assert [r.slide_id for r in sharded] == ["demo-02"]
    assert sha256(together[1].record) == sha256(alone[0].record) == sha256(sharded[0].record)
    assert sha256(together[0].record) != sha256(together[1].record)


def test_resumed_run_equals_uninterrupted_run(demo_cohort, tiny_extractor, tmp_path):
    slides = _demo_slides(demo_cohort)
    annotations = demo_cohort / "annotations"
    whole = extract_cohort(slides, tmp_path / "whole", annotations_dir=annotations, extractor=tiny_extractor)
    # An interrupted run: the first slide finished, a temp file left behind, a corrupt record.
    out = tmp_path / "resumed"
    extract_cohort(slides[:1], out, annotations_dir=annotations, extractor=tiny_extractor)
    folder = out / tiny_extractor.backbone.name
    (folder / ".demo-02.tfrecord.999.tmp").write_bytes(b"partial")
    (folder / "demo-03.tfrecord").write_bytes(b"\x00" * 10)
    resumed = extract_cohort(slides, out, annotations_dir=annotations, extractor=tiny_extractor)
    assert [r.status for r in resumed] == ["skipped", "done", "done"]
    assert [sha256(r.record) for r in resumed] == [sha256(r.record) for r in whole]  # the same bytes
    again = extract_cohort(slides, out, annotations_dir=annotations, extractor=tiny_extractor)
    assert [r.status for r in again] == ["skipped"] * 3
    manifest = (folder / MANIFEST).read_text().splitlines()
    assert manifest[0].startswith("slide_id,patient_id,status") and len(manifest) == 4


def test_other_settings_are_not_silently_mixed(demo_cohort, tiny_extractor, tmp_path):
    slides = _demo_slides(demo_cohort, ("demo-01",))
    annotations = demo_cohort / "annotations"
    extract_cohort(slides, tmp_path, extractor=tiny_extractor, annotations_dir=annotations)
    config_file = extraction_path(tmp_path / tiny_extractor.backbone.name)
    saved = config_file.read_text()
    config = tiny_extractor.config
    # (this run -> the folder's, as every refusal names a change: what was expected -> what was found)
    for changed, named in ((replace(config, stain=replace(config.stain, method="none")), "stain.method: 'none' -> 'macenko'"),
                           (replace(config, stain=replace(config.stain, method="macenko-henorm")),
                            "stain.method: 'macenko-henorm' -> 'macenko'"),
                           (replace(config, tiles=replace(config.tiles, max_tiles=5)), "tiles.max_tiles: 5 -> 1000"),
                           (replace(config, tiles=replace(config.tiles, exclude_classes=())), "tiles.exclude_classes")):
        # More slides added to the folder with other settings: refused before anything is written.
        with pytest.raises(SettingsError, match="--overwrite") as error:
            extract_cohort(_demo_slides(demo_cohort), tmp_path, extractor=replace(tiny_extractor, config=changed),
                           annotations_dir=annotations)
        assert named in str(error.value)
        assert config_file.read_text() == saved and len(list(config_file.parent.glob("*.tfrecord"))) == 1
    # Settings that do not shape features may change; --overwrite replaces the folder's settings.
    faster = replace(tiny_extractor, config=replace(config, batch_size=7, read_threads=1))
    assert [r.status for r in extract_cohort(slides, tmp_path, extractor=faster, annotations_dir=annotations)] == ["skipped"]
    fewer = replace(tiny_extractor, config=replace(config, overwrite=True, tiles=replace(config.tiles, max_tiles=5)))
    assert extract_cohort(slides, tmp_path, extractor=fewer, annotations_dir=annotations)[0].n_tiles == 5
    assert '"max_tiles": 5' in config_file.read_text()


def test_a_folder_from_before_the_authors_normaliser_is_not_mixed_with_it(demo_cohort, tiny_extractor, tmp_path):
    """Before 0.2.0 `macenko` meant HEnorm's natural-log variant: such a folder is refused by today's
    default, each change named, and its records read as macenko-henorm."""
    import json

    slides = _demo_slides(demo_cohort, ("demo-01",))
    extract_cohort(slides, tmp_path, extractor=tiny_extractor, annotations_dir=demo_cohort / "annotations")
    config_file = extraction_path(tmp_path / tiny_extractor.backbone.name)
    old = json.loads(config_file.read_text())
    old["version"] = "0.1.0"
    config_file.write_text(json.dumps(old))
    with pytest.raises(SettingsError, match="stain.method: 'macenko' -> 'macenko-henorm'"):
        extract_cohort(_demo_slides(demo_cohort), tmp_path, extractor=tiny_extractor,
                       annotations_dir=demo_cohort / "annotations")


def test_shards_split_the_cohort(demo_cohort, tiny_extractor, tmp_path):
    slides = _demo_slides(demo_cohort, ("demo-01", "demo-02", "demo-03", "demo-04", "demo-05"))
    done = []
    for i in range(2):
        config = replace(tiny_extractor.config, shard_index=i, shard_count=2)
        results = extract_cohort(slides, tmp_path, extractor=replace(tiny_extractor, config=config),
                                 annotations_dir=demo_cohort / "annotations")
        done.append({r.slide_id for r in results if r.status == "done"})
        assert (tmp_path / "tiny" / f"manifest.shard-{i}-of-2.csv").is_file()
    assert done[0].isdisjoint(done[1]) and done[0] | done[1] == {s.stem for s in slides}
    combined = (tmp_path / "tiny" / "manifest.csv").read_text().splitlines()  # the folder's one view
    assert len(combined) == 6 and all(",done," in line for line in combined[1:])


def test_bad_slides_fail_alone_with_clear_reasons(demo_cohort, tiny_extractor, tmp_path, reference_data):
    from hist2rna_tf.demo.cohort import write_pyramid_tiff

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(demo_cohort / "slides" / "demo-01.tiff", folder)
    (folder / "notes.svs").write_text("not a slide")
    data = (reference_data / "slides" / "CMU-1-Small-Region.svs").read_bytes()
    (folder / "cut.svs").write_bytes(data[: len(data) // 3])
    write_pyramid_tiff(np.full((1024, 1024, 3), 243, np.uint8), folder / "blank.tiff")
    shutil.copy(reference_data / "stain" / "macenko_input.png", folder / "core.png")
    results = {r.slide_id: r for r in extract_cohort([folder], tmp_path / "out", extractor=tiny_extractor)}
    assert results["demo-01"].status == "done"
    reasons = {k: r.reason for k, r in results.items() if r.status == "failed"}
    assert set(reasons) == {"notes", "cut", "blank", "core"}
    assert "notes.svs" in reasons["notes"] and "cut.svs" in reasons["cut"]
    assert "no tissue" in reasons["blank"] and "--mpp" in reasons["core"]
    written = sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir())
    assert written == [MANIFEST_LOCK, "demo-01.tfrecord", EXTRACT_CONFIG_FILE, MANIFEST]  # no temp file


def test_bad_annotations_fail_alone(demo_cohort, tiny_extractor, tmp_path):
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    shutil.copy(demo_cohort / "annotations" / "demo-01.geojson", annotations)
    (annotations / "demo-02.geojson").write_text('{"type": "Polygon", "coordinates": [[[90000, 90000], '
                                                 '[91000, 90000], [91000, 91000], [90000, 90000]]]}')
    (annotations / "demo-03.geojson").write_text('{"type": "Feature", "geometry": {"type": "Polygon"')
    slides = _demo_slides(demo_cohort, ("demo-01", "demo-02", "demo-03", "demo-04"))
    results = extract_cohort(slides, tmp_path / "out", extractor=tiny_extractor, annotations_dir=annotations)
    assert [r.status for r in results] == ["done", "failed", "failed", "failed"]
    assert "outside the slide" in results[1].reason
    assert "not a readable GeoJSON" in results[2].reason
    assert "no annotation" in results[3].reason and "demo-04.geojson" in results[3].reason


def test_pre_tiled_folders(tiny_extractor, tmp_path, tcga_tiles):
    for tile in sorted((tcga_tiles).glob("*.png")):
        patient = tmp_path / "tiles" / tile.name[:12]
        patient.mkdir(parents=True, exist_ok=True)
        shutil.copy(tile, patient)
    results = extract_cohort([tmp_path / "tiles"], tmp_path / "out", extractor=tiny_extractor)
    assert len(results) == 4 and all(r.status == "done" for r in results)
    record = read_record(results[0].record)
    assert record.patient_id == "TCGA-A2-A04R" and record.n_tiles == 6
    assert (record.tile_xy_px[:, 0] == 15680).all()


def test_tile_features_are_stored_on_request(demo_cohort, tiny_extractor, tmp_path):
    extractor = replace(tiny_extractor, config=replace(tiny_extractor.config, save_tile_features=True))
    result = extract_cohort(_demo_slides(demo_cohort, ("demo-02",)), tmp_path, extractor=extractor,
                            annotations_dir=demo_cohort / "annotations")[0]
    record = read_record(result.record)
    assert record.tile_features.shape == (record.n_tiles, 24)
    np.testing.assert_allclose(record.tile_features.mean(0), record.feature, rtol=1e-5, atol=1e-6)


def test_paper_backbone_runs_through_the_pipeline(demo_cohort, tmp_path):
    config = ExtractConfig(backbone="efficientnetv2s", weights="none", batch_size=8, tiles=TileConfig(max_tiles=8))
    result = extract_cohort(_demo_slides(demo_cohort, ("demo-01",)), tmp_path, config,
                            annotations_dir=demo_cohort / "annotations")[0]
    record = read_record(result.record)
    assert record.n_tiles == 8 and record.feature_dim == 1280 and record.backbone == "efficientnetv2s"
    assert record.tile_size_um == pytest.approx(56.0) and record.mpp == pytest.approx(0.25)
