"""The run folder (model/runs.py): what a run holds, its typed record, how it is read back (older formats
too) and what is refused, naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf import __version__
from hist2rna_tf.analysis.evaluate import held_out_metrics
from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.expression import load_panel
from hist2rna_tf.extract.settings import FeatureSettings
from hist2rna_tf.model import runs


def test_a_run_holds_every_file_of_the_schema(synthetic_run):
    run, cohort = synthetic_run
    for name in (*runs.REQUIRED, runs.HISTORY, *runs.METRICS.values()):
        assert (run / name).is_file(), name
    assert (run / runs.TENSORBOARD).is_dir()
    record = runs.read_record(run)
    assert record.format == runs.RUN_FORMAT and record.version == __version__ and record.approach == runs.HIST2RNA
    assert record.inputs.features == str(cohort.features.resolve())  # absolute: readable from any folder
    assert record.inputs.expression == str(cohort.expression.resolve())
    assert record.train == TrainConfig(max_epochs=40) and record.genes == len(load_panel("pam50"))
    assert record.feature_settings == FeatureSettings("efficientnetv2s", "none", "macenko", 224, 56.0)
    assert record.extraction is None  # the synthetic records were written without an extract_config.json
    assert runs.read_genes(run) == list(pd.read_csv(run / runs.TEST_PREDICTIONS, index_col=0).columns)
    assert runs.display_name(run) == cohort.features.name  # the backbone's folder


def test_the_record_round_trips_through_json(synthetic_run):
    run, _ = synthetic_run
    record = runs.read_record(run)
    assert runs.RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_split_targets_and_held_out_patients_agree(synthetic_run):
    run, cohort = synthetic_run
    split = runs.read_split(run)
    assert set(split) == {"train", "test"} and set(split.index) <= set(cohort.patients)
    predicted, truth = runs.held_out(run)
    assert sorted(predicted.index) == sorted(split.index[split == "test"]) and predicted.index.equals(truth.index)
    reference, labels = runs.training_reference(run)
    assert set(reference.index) == set(split.index[split == "train"]) and reference.index.equals(labels.index)
    assert list(reference.columns) == runs.read_genes(run)
    assert sorted(runs.targets(run).index) == sorted(split.index)


def test_a_run_needs_neither_its_expression_table_nor_its_labels_once_trained(synthetic_run, tmp_path):
    """Its training patients' targets and labels are in the run: the tables it was trained on can go."""
    run, _ = synthetic_run
    moved = shutil.copytree(run, tmp_path / "run")
    record = runs.read_record(moved)
    before = runs.training_reference(moved)
    record_elsewhere = json.loads((moved / runs.CONFIG).read_text())
    record_elsewhere["inputs"]["expression"] = str(tmp_path / "gone.csv")
    record_elsewhere["inputs"]["labels"] = str(tmp_path / "gone_labels.csv")
    (moved / runs.CONFIG).write_text(json.dumps(record_elsewhere))
    after = runs.training_reference(moved)
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_series_equal(after[1], before[1])
    assert record.inputs.labels != record_elsewhere["inputs"]["labels"]


def test_a_run_of_0_4_0_is_read_with_todays_defaults(synthetic_run, tmp_path):
    """Format 1 (0.4.0 and earlier): no format key, no train_targets.csv, a TrainConfig without fields
    added since; its training reference is read again from the tables it names."""
    run, cohort = synthetic_run
    old = shutil.copytree(run, tmp_path / "old")
    data = json.loads((old / runs.CONFIG).read_text())
    for key in ("format", "extraction", "approach", "baseline", "hist2rna_run", "tiles", "device"):
        data.pop(key)
    data["version"] = "0.4.0"
    del data["train"]["standardize"]
    (old / runs.CONFIG).write_text(json.dumps(data))
    (old / runs.TRAIN_TARGETS).unlink()
    record = runs.read_record(old)
    assert record.format == 1 and record.train == TrainConfig(max_epochs=40) and record.extraction is None
    reference, labels = runs.training_reference(old)
    fresh, fresh_labels = runs.training_reference(run)
    pd.testing.assert_frame_equal(reference[fresh.columns].loc[fresh.index], fresh, check_exact=False, rtol=1e-12)
    assert labels.to_dict() == fresh_labels.to_dict()
    with pytest.raises(Hist2RNAError, match=r"trained by hist2rna-tf 0.4.0, which kept the extraction settings in "
                                            r"the features folder"):
        runs.extraction(old, record)


def test_metrics_read_what_was_written_and_are_computed_for_older_runs(synthetic_run, tmp_path):
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


@pytest.mark.parametrize("damage, named", [
    ("missing", f"not a training run folder (no {runs.CONFIG})"),
    ("truncated", f"{runs.CONFIG}: unreadable (JSONDecodeError"),
    ("garbage", f"{runs.CONFIG}: unreadable (JSONDecodeError"),
    ("another tool's", f"{runs.CONFIG}: not a training run's config (no 'inputs')"),
    ("fields missing", f"{runs.CONFIG}: not a run record this version can read (KeyError: 'epochs')"),
    ("from the future", "run format 99"),
    ("incomplete", f"an incomplete training run (no {runs.MODEL})")])
def test_a_damaged_run_is_refused_naming_the_file(synthetic_run, tmp_path, damage, named):
    """Never "made by an older version": a missing or broken config.json is an error naming it."""
    run, _ = synthetic_run
    broken = shutil.copytree(run, tmp_path / "run")
    config = broken / runs.CONFIG
    data = json.loads(config.read_text())
    if damage == "missing":
        config.unlink()
    elif damage == "truncated":
        config.write_text(config.read_text()[:100])
    elif damage == "garbage":
        config.write_bytes(b"PK\x03\x04 garbage")
    elif damage == "another tool's":
        config.write_text('{"something": "else"}')
    elif damage == "fields missing":
        config.write_text(json.dumps({k: v for k, v in data.items() if k != "epochs"}))
    elif damage == "from the future":
        config.write_text(json.dumps({**data, "format": 99}))
    else:
        (broken / runs.MODEL).unlink()
    with pytest.raises(Hist2RNAError, match=None) as error:
        runs.read_record(broken)
    assert named in str(error.value) and str(broken) in str(error.value)


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
    assert runs.split_labels(tmp_path).to_dict() == {"P1": "LumA", "P2": "Basal", "P3": "Her2"}
    other = tmp_path / "other"
    other.mkdir()
    runs.copy_split(other, tmp_path)
    assert (other / runs.SPLIT).read_bytes() == (tmp_path / runs.SPLIT).read_bytes()


def test_patient_ids_that_look_like_numbers_stay_text(tmp_path):
    """`001` is a patient, not the number 1: the run's tables keep it as written."""
    table = pd.DataFrame({"ESR1": [1.5, 2.5]}, index=["001", "002"])
    runs.write_held_out(tmp_path, table, table)
    predicted, _ = runs.held_out(tmp_path)
    assert list(predicted.index) == ["001", "002"]


def test_inputs_are_recorded_as_given_types():
    record = runs.RunRecord(inputs=RunInputs("f", "e", "l"), train=TrainConfig(), feature_dim=4, genes=2,
                            patients={"train": 3, "test": 3}, epochs=1, best_val_loss=0.5)
    assert runs.RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
