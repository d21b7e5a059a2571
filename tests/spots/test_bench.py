"""HEST-Benchmark's probe (spots/bench.py), exact to HEST's benchmark.py + trainer.py on the same
embeddings: tests/data/spots/hest_task_results/ was written by their code (tests/fixtures/make_hest_fixtures.py)
on tests/data/spots/hest_task/, whose embeddings files our write_embeddings wrote (so theirs read ours)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots import bench
from hist2rna_tf.spots.hest import read_embeddings, write_embeddings

DATA = Path(__file__).resolve().parents[1] / "data" / "spots"
TASK, THEIRS = DATA / "hest_task", DATA / "hest_task_results"


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, bench.run_task(TASK, TASK / "embeddings", out)


def test_the_probe_equals_hests_code_on_the_same_embeddings(ours):
    out, merged = ours
    theirs = json.loads((THEIRS / "results_kfold.json").read_text())
    assert merged["pearson_mean"] == pytest.approx(theirs["pearson_mean"], rel=1e-6)
    assert merged["pearson_std"] == pytest.approx(theirs["pearson_std"], rel=1e-6)
    np.testing.assert_allclose(merged["mean_per_split"], theirs["mean_per_split"], rtol=1e-6)
    assert [g["name"] for g in merged["pearson_corrs"]] == [g["name"] for g in theirs["pearson_corrs"]]
    for mine, their in zip(merged["pearson_corrs"], theirs["pearson_corrs"]):
        np.testing.assert_allclose(mine["pearson_corrs"], their["pearson_corrs"], rtol=1e-6)
    for split in (0, 1):
        mine = json.loads((out / f"split{split}" / "results.json").read_text())
        their = json.loads((THEIRS / f"split{split}_results.json").read_text())
        assert sorted(mine) == sorted(their)
        for key in ("l2_errors", "r2_scores"):
            np.testing.assert_allclose(mine[key], their[key], rtol=1e-6)
    assert json.loads((out / "results_kfold.json").read_text()).keys() == theirs.keys()


def test_the_gene_table_holds_every_split(ours):
    out, merged = ours
    table = pd.read_csv(out / "pearson_by_gene.csv")
    assert list(table.columns) == ["gene", "split0", "split1", "mean", "std"]
    np.testing.assert_allclose(table[["split0", "split1"]].mean(axis=1), table["mean"])
    assert table["mean"].is_monotonic_decreasing and merged["pearson_mean"] > 0.5  # the task's spots are predictable


def test_spots_are_matched_by_barcode_not_by_order(tmp_path):
    """Shuffle one sample's embeddings with their barcodes: the same figures. Shuffle the embeddings
    alone (each spot another's): the probe learns nothing."""
    task = shutil.copytree(TASK, tmp_path / "task")
    path = task / "embeddings" / "SYN1.h5"
    x, codes, coords = read_embeddings(path)
    order = np.random.default_rng(0).permutation(len(x))
    write_embeddings(path, x[order], codes[order], coords[order])
    same = bench.run_task(task, task / "embeddings", tmp_path / "same")
    assert same["pearson_mean"] == pytest.approx(bench.run_task(TASK, TASK / "embeddings", tmp_path / "a")["pearson_mean"],
                                                 rel=1e-6)
    for sample in task.glob("embeddings/*.h5"):
        x, codes, coords = read_embeddings(sample)
        write_embeddings(sample, x[np.random.default_rng(1).permutation(len(x))], codes, coords)
    assert bench.run_task(task, task / "embeddings", tmp_path / "shuffled")["pearson_mean"] < 0.2


def test_a_bad_task_is_one_message(tmp_path):
    with pytest.raises(SpotError, match="no splits/ folder"):
        bench.task_splits(tmp_path)
    task = shutil.copytree(TASK, tmp_path / "task")
    (task / "embeddings" / "SYN2.h5").unlink()
    with pytest.raises(SpotError, match="no embeddings of sample SYN2"):
        bench.run_task(task, task / "embeddings", tmp_path / "out")
    (task / "var_50genes.json").write_text(json.dumps({"genes": ["ESR1", "NOTAGENE"]}))
    with pytest.raises(SpotError, match="1 of the task's genes missing \\(NOTAGENE\\)"):
        bench.run_task(task, TASK / "embeddings", tmp_path / "out2")
    assert not (tmp_path / "out2" / "results_kfold.json").exists()
