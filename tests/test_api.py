"""The five calls of the package's top, as the README shows them to a notebook user: importing the
package loads no TensorFlow; each call does what its command does."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

import hist2rna_tf as h2r
from hist2rna_tf.config import TrainConfig
from hist2rna_tf.model import runs


def test_import_is_cheap_and_the_calls_load_on_first_use():
    code = ("import sys, hist2rna_tf as h2r\nassert 'tensorflow' not in sys.modules and 'hist2rna_tf.api' not in "
            "sys.modules\nassert callable(h2r.train) and 'tensorflow' not in sys.modules\n"
            "import hist2rna_tf.extract.cohort, hist2rna_tf.report.report\nassert callable(h2r.extract_features) "
            "and callable(h2r.write_report)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(h2r.__all__) == ["__version__", "export", "extract_features", "predict", "train", "write_report"]


def test_the_five_calls_run_the_chain(tiny_run, tiny_backbone_file, tmp_path):
    cohort = tiny_run / "cohort"
    results = h2r.extract_features([cohort / "slides" / "demo-01.tiff", cohort / "slides" / "demo-02.tiff"],
                                   tmp_path / "features", backbone=str(tiny_backbone_file), weights="none",
                                   annotations=cohort / "annotations", progress=False)
    assert [r.status for r in results] == ["done", "done"]
    summary = h2r.train(tiny_run / "features" / "tiny", cohort / "expression.csv", cohort / "clinical.csv",
                        out=tmp_path / "run", config=TrainConfig(max_epochs=3), progress=False)
    assert summary.metrics["across_genes"]["total"] == 138 and runs.read_record(tmp_path / "run").epochs >= 1
    table = h2r.predict(tmp_path / "run", features=tmp_path / "features" / "tiny")
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["demo-01", "demo-02"] and table.shape[1] == 138
    head, full = h2r.export(tmp_path / "run", tmp_path / "saved_models")
    assert (head / "saved_model.pb").is_file() and (full / "saved_model.pb").is_file()
    page = h2r.write_report(tmp_path / "run", n_boot=5)
    assert page == tmp_path / "run" / "report" / "report.html" and page.is_file()
