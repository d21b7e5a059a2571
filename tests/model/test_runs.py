"""The run folder's schema (runs.py): what a run holds, how it is read back, and refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.model import runs
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.analysis.evaluate import held_out_metrics


def test_a_run_holds_every_file_of_the_schema(synthetic_run):
    run, cohort = synthetic_run
    for name in (*runs.REQUIRED, runs.HISTORY, *runs.METRICS.values()):
        assert (run / name).is_file(), name
    assert (run / runs.TENSORBOARD).is_dir()
    config = runs.read_config(run)
    assert runs.features_dir(config) == cohort.features
    assert runs.extract_config_path(config) == cohort.features / "extract_config.json"
    assert runs.read_genes(run) == list(pd.read_csv(run / runs.TEST_PREDICTIONS, index_col=0).columns)
    assert runs.display_name(run) == cohort.features.name  # the backbone's folder


def test_split_and_held_out_patients_agree(synthetic_run):
    run, cohort = synthetic_run
    split = runs.read_split(run)
    assert set(split) == {"train", "test"} and set(split.index) <= set(cohort.patients)
    predicted, truth = runs.held_out(run)
    assert sorted(predicted.index) == sorted(split.index[split == "test"]) and predicted.index.equals(truth.index)
    reference, labels = runs.training_reference(run)
    assert set(reference.index) == set(split.index[split == "train"]) and reference.index.equals(labels.index)


def test_metrics_read_what_evaluate_wrote_and_are_computed_for_older_runs(synthetic_run, tmp_path):
    run, _ = synthetic_run
    written = runs.metrics(run)
    computed = held_out_metrics(*runs.held_out(run))
    for name in ("across_genes", "across_patients"):
        pd.testing.assert_frame_equal(written[name], computed[name], check_names=False)
    np.testing.assert_allclose(written["r_squared"], computed["r_squared"])
    old = shutil.copytree(run, tmp_path / "old")
    for name in runs.METRICS.values():
        (old / name).unlink()  # a run from before the metrics were written
    pd.testing.assert_frame_equal(runs.metrics(old)["across_genes"], computed["across_genes"])
    assert not (old / runs.METRICS["across_genes"]).exists()  # reading a run never writes into it


def test_not_a_run_and_an_incomplete_run_are_named(synthetic_run, tmp_path):
    run, _ = synthetic_run
    with pytest.raises(Hist2RNAError, match="not a training run folder"):
        runs.read_config(tmp_path)
    (tmp_path / "config.json").write_text('{"something": "else"}')
    with pytest.raises(Hist2RNAError, match="no 'inputs'"):
        runs.read_config(tmp_path)
    partial = shutil.copytree(run, tmp_path / "partial")
    (partial / runs.MODEL).unlink()
    with pytest.raises(Hist2RNAError, match=f"incomplete training run \\(no {runs.MODEL}\\)"):
        runs.read_config(partial)


def test_a_run_is_built_aside_and_replaces_the_old_one_only_when_complete(tmp_path):
    out = tmp_path / "run"
    with runs.building(out) as work:
        runs.write_genes(work, ["ESR1", "PGR"])
    assert runs.read_genes(out) == ["ESR1", "PGR"]
    with pytest.raises(RuntimeError):
        with runs.building(out) as work:
            runs.write_genes(work, ["MKI67"])
            raise RuntimeError("interrupted")
    assert runs.read_genes(out) == ["ESR1", "PGR"]  # the earlier run, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no half-built folder left
    with runs.building(out) as work:
        runs.write_genes(work, ["MKI67"])
    assert runs.read_genes(out) == ["MKI67"] and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_split_round_trip(tmp_path):
    split = pd.Series(["train", "test", "train"], index=["P1", "P2", "P3"])
    runs.write_split(tmp_path, split, pd.Series({"P1": "LumA", "P2": "Basal", "P3": "Her2"}))
    pd.testing.assert_series_equal(runs.read_split(tmp_path), split, check_names=False, check_index_type=False)
    other = tmp_path / "other"
    other.mkdir()
    runs.copy_split(other, tmp_path)
    assert (other / runs.SPLIT).read_bytes() == (tmp_path / runs.SPLIT).read_bytes()
