"""HEST-Benchmark with the tool's encoders (spots/embed.py, spots/hest_bench.py) on a task made of the
synthetic samples whose HEST patches tests/data holds: embeddings files HEST reads, a re-run that
resumes, the table beside HEST's published figures, and our own crops embedding to the same features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.config import HestBenchConfig
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.spots.hest import patch_batches, read_embeddings, read_hest_sample

from spatial_samples import GENES

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "spots" / "hest_samples"


def _task(root: Path, name: str = "IDC") -> Path:
    """A HEST-Bench task folder of SYN1 and SYN2: each held out once."""
    task = root / name
    for sub in ("adata", "patches", "splits"):
        (task / sub).mkdir(parents=True)
    for s in ("SYN1", "SYN2"):
        shutil.copy(SAMPLES / "st" / f"{s}.h5ad", task / "adata" / f"{s}.h5ad")
        shutil.copy(SAMPLES / "patches" / f"{s}.h5", task / "patches" / f"{s}.h5")
    for i, (train, test) in enumerate((("SYN1", "SYN2"), ("SYN2", "SYN1"))):
        for kind, s in (("train", train), ("test", test)):
            pd.DataFrame({"sample_id": [s], "patches_path": [f"patches/{s}.h5"], "expr_path": [f"adata/{s}.h5ad"]}
                         ).to_csv(task / "splits" / f"{kind}_{i}.csv", index=False)
    (task / "var_50genes.json").write_text(json.dumps({"genes": GENES[:5]}))
    return task


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory, tiny_backbone_file):
    from hist2rna_tf.spots.hest_bench import hest_benchmark

    root = tmp_path_factory.mktemp("hestbench")
    task, out = _task(root), root / "out"
    config = HestBenchConfig(backbones=(str(tiny_backbone_file),), weights=("none",), latent_dim=4, batch_size=4)
    return task, out, config, hest_benchmark(task, out, config)


def test_each_samples_patches_are_embedded_as_hest_writes_them(benchmarked, tiny_extractor, tiny_backbone_file):
    task, out, *_ = benchmarked
    folder = out / "embeddings" / "tiny"
    for s in ("SYN1", "SYN2"):
        x, codes, coords = read_embeddings(folder / f"{s}.h5")
        images, their_codes, their_coords = next(patch_batches(task / "patches" / f"{s}.h5", batch=100))
        np.testing.assert_array_equal(codes, their_codes)
        np.testing.assert_array_equal(coords, their_coords)
        np.testing.assert_allclose(x, tiny_extractor.embed(images).numpy(), rtol=1e-5, atol=1e-6)
    import h5py

    with h5py.File(folder / "SYN2.h5") as f:  # HEST's layout: barcodes [n, 1] bytes, embeddings float32
        assert f["barcodes"].shape == (len(x), 1) and f["barcodes"].dtype.kind == "S"
        assert f["embeddings"].dtype == np.float32 and f["coords"].shape == (len(x), 2)


def test_the_table_sets_ours_beside_hests_published_figures(benchmarked, tiny_backbone_file):
    task, out, config, table = benchmarked
    written = pd.read_csv(out / "hest_bench.csv")
    ours = written[written["source"] == "hist2rna-tf"]
    assert list(ours["model"]) == ["tiny"]
    merged = json.loads((out / "results" / "tiny" / "results_kfold.json").read_text())
    assert ours["pearson_mean"].iloc[0] == pytest.approx(merged["pearson_mean"])
    assert ours[["split0", "split1"]].to_numpy().ravel().tolist() == pytest.approx(merged["mean_per_split"])
    theirs = written[written["source"] != "hist2rna-tf"].set_index("model")["pearson_mean"]
    assert theirs["Hoptimus0"] == 0.5982 and theirs["Resnet50"] == 0.4741 and len(theirs) == 12  # IDC's column
    assert (out / "hest_bench.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_resumes_and_other_settings_are_refused(benchmarked, monkeypatch):
    from hist2rna_tf.spots import hest_bench

    task, out, config, table = benchmarked
    stamps = {p: p.stat().st_mtime_ns for p in (out / "embeddings").rglob("*.h5")}
    monkeypatch.setattr("hist2rna_tf.extract.extractor.Extractor.build", lambda *a, **k: pytest.fail("embedded again"))
    again = hest_bench.hest_benchmark(task, out, config)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    pd.testing.assert_frame_equal(again, table)
    from dataclasses import replace

    with pytest.raises(SettingsError, match="made with other settings"):
        hest_bench.hest_benchmark(task, out, replace(config, stain="macenko"))


def test_our_crop_of_each_spot_embeds_to_the_benchmarks_features(tiny_extractor, tmp_path):
    """From the sample's image (patches.py's crops) or from HEST's patches file: the same features."""
    from hist2rna_tf.spots.embed import embed_patch_file, embed_sample

    for s in ("SYN1", "SYN2"):
        mine = read_embeddings(embed_sample(tiny_extractor, read_hest_sample(SAMPLES, s), tmp_path / f"{s}_crop.h5"))
        hest = read_embeddings(embed_patch_file(tiny_extractor, SAMPLES / "patches" / f"{s}.h5", tmp_path / f"{s}.h5"))
        for a, b in zip(mine, hest):
            np.testing.assert_array_equal(a, b)


def test_the_command_prints_ours_and_hests_figures(tmp_path, tiny_backbone_file, capsys):
    from hist2rna_tf.cli import main

    task = _task(tmp_path, "IDC")
    code = main(["hest-bench", str(task), "--backbone", str(tiny_backbone_file), "--weights", "none", "--out",
                 str(tmp_path / "out"), "--latent-dim", "4", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "tiny: mean Pearson" in printed and "Hoptimus0 0.5982" in printed, printed
    assert main(["hest-bench", str(task), "--backbone", "uni", "resnet50", "--weights", "a", "b", "c", "--out",
                 str(tmp_path / "o2")]) == 2
    assert "one weights value for all 2 backbones" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_the_report_sets_the_benchmark_beside_hests(benchmarked, tiny_run, tmp_path):
    """`report RUN --hest-bench DIR`: the task's table and figure, HEST's published rows labelled theirs."""
    from hist2rna_tf.cli import main

    _, out, _, _ = benchmarked
    page = tmp_path / "report" / "report.html"
    assert main(["report", str(tiny_run / "run"), "--hest-bench", str(out), "--out", str(page), "--n-boot", "20",
                 "--no-progress"]) == 0
    text = page.read_text()
    assert "HEST-Benchmark: IDC" in text and "published figures, not run here" in text
    shown = pd.read_csv(page.parent / "hest_bench_IDC.csv", index_col="model")
    assert shown.loc["Hoptimus0", "source"] == "HEST README (08.30.24)" and shown.loc["tiny", "source"] == "hist2rna-tf"
    assert main(["report", str(tiny_run / "run"), "--hest-bench", str(tmp_path), "--out", str(tmp_path / "x.html"),
                 "--no-progress"]) == 2  # not a hest-bench folder: named, nothing written
    assert not (tmp_path / "x.html").exists()
