"""The library in five calls, for a notebook: `extract_features`, `train`, `predict`, `export`,
`write_report`, each the library call its command makes, with the command's defaults (`import hist2rna_tf
as h2r; h2r.train(...)`; the names differ from the subpackages extract/ and report/ on purpose).
TensorFlow is imported by the first call that needs it, never by `import hist2rna_tf`. Every option of
the command line is a keyword here, or a field of the config dataclasses (config.py) for the finer ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from hist2rna_tf.config import ExtractConfig, ReportInputs, RunInputs, TrainConfig


def extract_features(slides: str | Path | list, out: str | Path, backbone: str = ExtractConfig.backbone,
                     weights: str = ExtractConfig.weights, annotations: str | Path | None = None, *,
                     config: ExtractConfig | None = None, progress: bool = True) -> list:
    """`hist2rna extract`: slides (files or folders) -> `<out>/<backbone>/<slide_id>.tfrecord`, at the
    backbone's own scale (the paper's CNNs: 224 px at 0.25 um/px; an encoder: its own;
    `extract.settings.for_backbone`) unless `config` says otherwise. Returns the manifest rows (each
    slide done, skipped, or failed with its reason)."""
    from hist2rna_tf.extract.cohort import extract_cohort
    from hist2rna_tf.extract.settings import for_backbone
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    config = config or for_backbone(backbone, weights)
    slides = [slides] if isinstance(slides, (str, Path)) else list(slides)
    return extract_cohort(slides, out, config, annotations, progress=progress)


def train(features: str | Path, expression: str | Path, labels: str | Path, out: str | Path, *,
          genes: str = RunInputs.genes, config: TrainConfig = TrainConfig(), overwrite: bool = False,
          progress: bool = True, **inputs):
    """`hist2rna train`: the paper's head on the features of `features` and the RNA-seq of `expression`,
    split by the subtypes of `labels`, written as a run folder `out`. `inputs`: RunInputs' other fields
    (label_column, subtypes, drop_missing_genes, split). Returns the run (model.runs.TrainedRun: its
    folder, record and held-out metrics' summaries)."""
    from hist2rna_tf.model.train import train_run
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    run_inputs = RunInputs(str(features), str(expression), str(labels), genes=genes, **inputs)
    return train_run(run_inputs, out, config, overwrite=overwrite, progress=progress)


def predict(run: str | Path, features: str | Path | None = None, slides: str | Path | list | None = None,
            annotations: str | Path | None = None, features_out: str | Path | None = None) -> pd.DataFrame:
    """`hist2rna predict`: patients x genes of predicted log2(1+RSEM), from stored `features` or from
    `slides` (extracted alike first, into `features_out`). `run`: a run folder or a head export."""
    from hist2rna_tf.model.predict import Predictor, predict_patients, predict_slides
    from hist2rna_tf.tfenv import start_tensorflow

    if (features is None) == (slides is None):
        raise ValueError("give features= (a folder of records) or slides= (files or folders), one of them")
    start_tensorflow()
    predictor = Predictor(run)
    if features is not None:
        return predict_patients(predictor, features)
    if features_out is None:
        raise ValueError("slides= needs features_out=, the folder their features are extracted into")
    slides = [slides] if isinstance(slides, (str, Path)) else list(slides)
    table, _ = predict_slides(predictor, slides, features_out, annotations)
    return table


def export(run: str | Path, out: str | Path = "saved_models", name: str | None = None,
           version: int | None = None) -> tuple[Path, Path]:
    """`hist2rna export`: the run's two SavedModels, `<out>/<name>_head/<version>/` (features -> genes)
    and `<out>/<name>/<version>/` (uint8 tiles of one slide -> genes). Returns both folders."""
    from hist2rna_tf.model.export import export_run
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    return export_run(run, out, name, version)


def write_report(run: str | Path, out: str | Path | None = None, **inputs) -> Path:
    """`hist2rna report`: the run's HTML report (default `<run>/report/report.html`). `inputs`:
    ReportInputs' other fields (compare, external_predictions, clinical, baseline, n_boot, ...)."""
    from hist2rna_tf.report.report import build_report

    return build_report(replace(ReportInputs(run=Path(run)), **inputs), out)
