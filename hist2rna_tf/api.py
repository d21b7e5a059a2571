"""The library in five calls, for a notebook: `extract_features`, `train`, `predict`, `export`,
`write_report`, each the library call its command makes, with the command's defaults (`import hist2rna_tf
as h2r; h2r.train(...)`; the names differ from the subpackages extract/ and report/ on purpose).
TensorFlow is imported by the first call that needs it, never by `import hist2rna_tf`, and quietly (its
C++ start-up lines silenced, as the commands do). Every option of the command line is a keyword here, or
a field of the config dataclasses (config.py) for the finer ones. Every argument is checked before any
work, as the command line checks its options (arguments.py): a wrong type or a value out of range, here
or in a config, is one `hist2rna_tf.errors.ArgumentError` naming it; every refusal is a `Hist2RNAError`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pandas as pd

from hist2rna_tf.arguments import PathLike, PositiveInt, check_keywords, checked
from hist2rna_tf.config import ExtractConfig, GeneSelection, ReportInputs, RunInputs, TrainConfig
from hist2rna_tf.errors import ArgumentError

Slides = Annotated[str | Path | list[str | Path], "a path or a list of paths (slide files, folders of slides, tile "
                                                 "folders)"]


@checked
def extract_features(slides: Slides, out: PathLike, backbone: str = ExtractConfig.backbone,
                     weights: str = ExtractConfig.weights, annotations: PathLike | None = None, *,
                     config: ExtractConfig | None = None, progress: bool = True) -> list:
    """`hist2rna extract`: slides (files or folders) -> `<out>/<backbone>/<slide_id>.tfrecord`, at the
    backbone's own scale (the paper's CNNs: 224 px at 0.25 um/px; an encoder: its own;
    `extract.settings.for_backbone`) unless `config` says otherwise. Returns the manifest rows (each
    slide done, skipped, or failed with its reason)."""
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    from hist2rna_tf.extract.cohort import extract_cohort
    from hist2rna_tf.extract.settings import for_backbone

    config = config or for_backbone(backbone, weights)
    slides = [slides] if isinstance(slides, (str, Path)) else list(slides)
    return extract_cohort(slides, out, config, annotations, progress=progress)


@checked
def train(features: PathLike, expression: PathLike, labels: PathLike, out: PathLike, *,
          genes: GeneSelection = RunInputs.genes, config: TrainConfig = TrainConfig(), overwrite: bool = False,
          progress: bool = True, **inputs):
    """`hist2rna train`: a head (config.head: the paper's by default) on the features of `features` and
    the RNA-seq of `expression`, split by the subtypes of `labels`, written as a run folder `out`.
    `inputs`: RunInputs' other fields (label_column, subtypes, drop_missing_genes, split). Returns the
    run (model.runs.TrainedRun: its folder, record and held-out metrics' summaries)."""
    check_keywords("train", RunInputs, inputs, ("features", "expression", "labels", "out", "genes", "config",
                                                "overwrite", "progress"))
    run_inputs = RunInputs(str(features), str(expression), str(labels), genes=genes, **inputs)
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    from hist2rna_tf.model.train import train_run

    return train_run(run_inputs, out, config, overwrite=overwrite, progress=progress)


@checked
def predict(run: PathLike, features: PathLike | None = None, slides: Slides | None = None,
            annotations: PathLike | None = None, features_out: PathLike | None = None) -> pd.DataFrame:
    """`hist2rna predict`: patients x genes of predicted log2(1+RSEM), from stored `features` or from
    `slides` (extracted alike first, into `features_out`). `run`: a run folder or a head export."""
    if (features is None) == (slides is None):
        raise ArgumentError("predict(): give features= (a folder of records) or slides= (files or folders), one of "
                            "them.")
    if slides is not None and features_out is None:
        raise ArgumentError("predict(slides=...): needs features_out=, the folder their features are extracted into.")
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    from hist2rna_tf.model.predict import Predictor, predict_patients, predict_slides

    predictor = Predictor(run)
    if features is not None:
        return predict_patients(predictor, features)
    slides = [slides] if isinstance(slides, (str, Path)) else list(slides)
    table, _ = predict_slides(predictor, slides, features_out, annotations)
    return table


@checked
def export(run: PathLike, out: PathLike = "saved_models", name: str | None = None,
           version: PositiveInt | None = None) -> tuple[Path, Path]:
    """`hist2rna export`: the run's two SavedModels, `<out>/<name>_head/<version>/` (features -> genes)
    and `<out>/<name>/<version>/` (uint8 tiles of one slide -> genes). Returns both folders."""
    from hist2rna_tf.tfenv import start_tensorflow

    start_tensorflow()
    from hist2rna_tf.model.export import export_run

    return export_run(run, out, name, version)


@checked
def write_report(run: PathLike, out: PathLike | None = None, **inputs) -> Path:
    """`hist2rna report`: the run's HTML report (default `<run>/report/report.html`). `inputs`:
    ReportInputs' other fields (compare, external_predictions, clinical, baseline, n_boot, ...). A crossval
    folder (`hist2rna crossval --out`) gets its own report, `compare` its other crossvals."""
    from hist2rna_tf.model.folds import is_crossval

    check_keywords("write_report", ReportInputs, inputs, ("run", "out"))
    report = replace(ReportInputs(run=Path(run)), **inputs)
    if is_crossval(run):
        from hist2rna_tf.report.crossval import build_crossval_report

        return build_crossval_report(Path(run), [Path(c) for c in report.compare], out)[0]
    from hist2rna_tf.report.report import build_report

    return build_report(report, out)
