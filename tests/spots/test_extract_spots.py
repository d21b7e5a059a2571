"""`hist2rna extract-spots` (spots/features.py): each sample's spots as one feature record, in the same
format as a slide's; every bad sample of the readers one line on the command line, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hist2rna_tf.cli import main
from hist2rna_tf.extract.records import read_record, write_record


SAMPLES = Path(__file__).resolve().parents[1] / "data" / "spots" / "hest_samples"


def test_each_sample_is_one_record_of_its_spots(tmp_path, tiny_extractor, tiny_backbone_file, capsys):
    from hist2rna_tf.spots.hest import patch_batches

    out = tmp_path / "features"
    args = ["extract-spots", "--hest", str(SAMPLES), "--samples", "SYN1", "SYN2", "--backbone", str(tiny_backbone_file),
            "--weights", "none", "--out", str(out), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 samples in" in printed and "2 samples from HEST's own patches files" in printed, printed
    for sample in ("SYN1", "SYN2"):
        record = read_record(out / "tiny" / f"{sample}.tfrecord")
        images, codes, coords = next(patch_batches(SAMPLES / "patches" / f"{sample}.h5", batch=100))
        hest = (tiny_extractor.embed(images).numpy(), codes, coords)  # the backbone on HEST's patches (no stain)
        np.testing.assert_allclose(record.tile_features, hest[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(record.tile_names, hest[1])
        np.testing.assert_array_equal(record.tile_xy_px, hest[2])
        np.testing.assert_allclose(record.feature, hest[0].mean(axis=0), rtol=1e-5)
        assert (record.slide_id, record.n_tiles, record.tile_size_px, record.tile_size_um) == (sample, len(hest[0]), 224,
                                                                                               112.0)
    cropped = tmp_path / "cropped"  # --crop: cut from the image, HEST's way: the same records
    assert main([*args[:-3], "--out", str(cropped), "--no-progress", "--crop"]) == 0
    for sample in ("SYN1", "SYN2"):
        assert (cropped / "tiny" / f"{sample}.tfrecord").read_bytes() == (out / "tiny" / f"{sample}.tfrecord").read_bytes()
    stamp = (out / "tiny" / "SYN1.tfrecord").stat().st_mtime_ns
    assert main(args) == 0 and (out / "tiny" / "SYN1.tfrecord").stat().st_mtime_ns == stamp  # a re-run resumes
    args_macenko = [*args, "--stain", "macenko"]
    assert main(args_macenko) == 2 and "this run" in capsys.readouterr().err  # other settings: refused


def test_a_slide_record_round_trips_without_tile_names(tmp_path):
    """Slide records carry no names (their bytes unchanged); a spot record's names come back as written."""
    from synthetic import record

    slide = record("TCGA-AA-0001-01Z-00-DX1", np.ones(4, np.float32))
    assert read_record(write_record(slide, tmp_path / "a.tfrecord")).tile_names is None
    from dataclasses import replace

    named = replace(slide, n_tiles=2, tile_xy_px=np.zeros((2, 2), np.int64),
                    tile_features=np.ones((2, 4), np.float32), tile_names=np.array(["AAAC-1", "GGGT-1"]))
    assert read_record(write_record(named, tmp_path / "b.tfrecord")).tile_names.tolist() == ["AAAC-1", "GGGT-1"]


def test_spots_extracted_like_a_run_carry_its_settings_at_its_scale(tiny_run, tmp_path, capsys):
    """--like RUN: the run's backbone, weights, stain, tile size and um/px, each patch placed as HEST
    places its own (centred on the spot), so that the run's head reads them as its own features."""
    from hist2rna_tf.model import runs
    from hist2rna_tf.spots.hest import read_hest_sample
    from hist2rna_tf.spots.patches import patch_grid

    out = tmp_path / "like"
    assert main(["extract-spots", "--hest", str(SAMPLES), "--samples", "SYN1", "--like", str(tiny_run / "run"),
                 "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    record = read_record(out / "tiny" / "SYN1.tfrecord")
    made = runs.extraction(tiny_run / "run").features
    assert record.settings == made and (made.tile_size_px, made.tile_size_um) != (224, 112.0)  # not HEST's scale
    sample = read_hest_sample(SAMPLES, "SYN1")
    tiles = runs.extraction(tiny_run / "run").config.tiles
    grid = patch_grid(sample.centres_px, sample.mpp, (1200, 900), (1.0, 4.0, 16.0), 0, tiles.tile_size_px,
                      tiles.target_mpp)
    np.testing.assert_array_equal(record.tile_xy_px, grid.top_left_px)
    np.testing.assert_array_equal(record.tile_names, sample.barcodes[grid.kept])

