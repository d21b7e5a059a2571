"""SEQUOIA's published models as runs: `hist2rna import-run --from sequoia FOLDER --out RUN`.

A SEQUOIA fold on the Hugging Face hub (`gevaertlab/sequoia-<cancer>-<fold>`, MIT) is the folder
`PyTorchModelHubMixin` writes: `config.json` (ViS's arguments: num_outputs, input_dim, depth, nheads,
dimensions_f, dimensions_s, dimensions_c, num_clusters) and `model.safetensors` (its state dict). It
becomes a run folder that stands alone, as `hist2rna train` writes one: the head in Keras with the
fold's weights (best.keras), its genes in output order (SEQUOIA's 20,820, shipped in
data/sequoia_gene_list.csv, or `genes` for another list) and its record (the head, its settings, the
features it reads: extract.settings.sequoia_extraction's, UNI's of 256 px tiles at 20x resized to 224,
no stain normalisation; or those of a features folder given). With a features folder, an expression
table and labels, the fold is also evaluated on those patients (all held out), as a trained run is: test predictions, the untrained ViS's
(SEQUOIA's random model), the paper's metrics and SEQUOIA's test; then `report` takes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd

from hist2rna_tf.config import RunInputs, TrainConfig, absolute_inputs
from hist2rna_tf.errors import ExpressionError, ModelError, RecordError
from hist2rna_tf.expression import read_gene_file, repeated
from hist2rna_tf.extract.settings import (Extraction, FeatureSettings, extract_command, sequoia_extraction,
                                         settings_of)
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads import head_settings, refuse_oversized, settings_dict, with_head_training
from hist2rna_tf.outputs import refuse_overlap

log = logging.getLogger(__name__)

HUB_CONFIG, HUB_WEIGHTS = "config.json", "model.safetensors"
HEAD = "sequoia"  # the registry's name of the head a fold is
_CONFIG_KEYS = {"num_outputs": None, "input_dim": None, "depth": "depth", "nheads": "heads", "dimensions_f": "dim_f",
                "dimensions_s": "dim_s", "dimensions_c": "dim_c", "num_clusters": "clusters"}


def sequoia_genes() -> list[str]:
    """The 20,820 genes of SEQUOIA's published models, in output order (data/PROVENANCE.md)."""
    with resources.files("hist2rna_tf").joinpath("data/sequoia_gene_list.csv").open() as handle:
        return pd.read_csv(handle)["gene"].astype(str).tolist()


def read_fold_config(folder: str | Path) -> tuple[object, int, int]:
    """A hub fold's ViS settings, outputs and input features from its config.json; a ModelError naming
    the folder and the fix when it is not a SEQUOIA fold's layout."""
    folder = Path(folder)
    hint = ("give the folder a SEQUOIA fold downloads to (`huggingface-cli download gevaertlab/sequoia-brca-0 "
            f"--local-dir FOLDER`: {HUB_CONFIG} and {HUB_WEIGHTS})")
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder; {hint}.")
    for name in (HUB_CONFIG, HUB_WEIGHTS):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: no {name}; {hint}.")
    try:
        config = json.loads((folder / HUB_CONFIG).read_text())
    except ValueError as exc:
        raise ModelError(f"{folder / HUB_CONFIG}: not JSON ({exc}); download the fold again.") from None
    missing = [key for key in ("num_outputs", "input_dim", "depth", "nheads", "dimensions_f", "dimensions_s",
                               "dimensions_c") if not isinstance(config, dict) or key not in config]
    if missing:
        raise ModelError(f"{folder / HUB_CONFIG}: not a SEQUOIA ViS config (no {', '.join(missing)}); {hint}.")
    sizes = {key: whole_number(config, key, folder / HUB_CONFIG) for key in _CONFIG_KEYS if key in config}
    settings = head_settings(HEAD, {field: sizes[key] for key, field in _CONFIG_KEYS.items() if field and key in sizes})
    return settings, sizes["num_outputs"], sizes["input_dim"]


def whole_number(config: dict, key: str, path: Path) -> int:
    """config[key], one of ViS's sizes, as an int (an integral float such as 3.0 is 3); a ModelError
    naming the file, the key and its value when it is not a whole number >= 1."""
    value = config[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{path}: {key} is {json.dumps(config[key])}, not a whole number >= 1 (one of ViS's sizes); "
                         "the file is damaged or edited: download the fold again.")
    return value


def fold_genes(genes: str | Path | None, n_outputs: int, config: Path) -> list[str]:
    """The gene symbols of the fold's outputs, in order: SEQUOIA's 20,820, or those of the file `genes`
    (--genes); an ExpressionError naming the file when it is not a list of distinct symbols, a
    ModelError when they are not as many as the fold's outputs (`config` says how many)."""
    names = sequoia_genes() if genes is None else read_gene_file(genes, "--genes")
    twice = repeated(names)
    if twice:
        more = f" and {len(twice) - 3} more" if len(twice) > 3 else ""
        raise ExpressionError(f"--genes {genes}: names {', '.join(twice[:3])}{more} more than once; each of the fold's "
                              f"{n_outputs} outputs is one gene: list each symbol once, in the fold's output order.")
    if len(names) != n_outputs:
        raise ModelError(f"{config}: {n_outputs} outputs, but {genes or 'SEQUOIA gene list'} names {len(names)} genes; "
                         f"give --genes, a file of the fold's {n_outputs} gene symbols in order.")
    return names


def fold_features(features: str | Path, input_dim: int) -> tuple[FeatureSettings, Extraction | None]:
    """How the records of the folder `features` were made (and its extract_config.json's extraction,
    when it has one), when they are of the width the fold reads (`input_dim`); a RecordError naming
    the folder, its width and the fold's otherwise (before anything is written or cached)."""
    from hist2rna_tf.extract.records import folder_extraction, read_feature_folder

    found = read_feature_folder(features)
    width = found.features.shape[1]
    if width != input_dim:
        raise RecordError(f"--features {features}: its records have {width} features a tile, but the fold reads "
                          f"{input_dim} ({HUB_CONFIG} input_dim; SEQUOIA's published folds read UNI's 1024); give "
                          f"--features a folder extracted as the fold's features were "
                          f"({extract_command(sequoia_extraction())}).")
    return found.settings, folder_extraction(features, found.settings)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fold_model(folder: str | Path):
    """The fold's ViS in Keras with its weights, its settings, and its input width."""
    from hist2rna_tf.extract.backbones.weights import read_tensors
    from hist2rna_tf.model.heads.sequoia import build, load_sequoia

    folder = Path(folder)
    settings, n_outputs, input_dim = read_fold_config(folder)
    model = build(input_dim, n_outputs, settings)
    tensors = read_tensors(folder / HUB_WEIGHTS)
    load_sequoia(model, {name: tensors[name] for name in tensors}, folder / HUB_WEIGHTS, settings)
    return model, settings, input_dim


def import_sequoia(folder: str | Path, out_dir: str | Path, genes: str | Path | None = None,
                   evaluate: RunInputs | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Write the run folder `out_dir` from the SEQUOIA fold in `folder` (see the module). `genes`: a file
    of the outputs' gene symbols, one a line (default: SEQUOIA's 20,820). `evaluate` (features,
    expression, labels): evaluate the fold on those patients, all held out; with features alone, the run
    records how they were extracted (to extract new slides alike). Returns `out_dir`."""
    folder, out_dir = Path(folder), Path(out_dir)
    refuse_overlap(out_dir, {"FOLDER": folder, **({"--features": evaluate.features} if evaluate else {})})
    runs.refuse_existing(out_dir, overwrite, runs.IMPORTED, overwrite_option=False)  # import-run has no --overwrite
    settings, n_outputs, input_dim = read_fold_config(folder)
    names = fold_genes(genes, n_outputs, folder / HUB_CONFIG)
    feature_settings, extraction, patients = settings_of(sequoia_extraction()), None, {"train": 0, "test": 0}
    if evaluate is not None and evaluate.features:
        feature_settings, extraction = fold_features(evaluate.features, input_dim)
    inputs = RunInputs("", "", "") if evaluate is None else absolute_inputs(evaluate)
    refuse_oversized(HEAD, settings, input_dim, n_outputs)  # sizes a damaged config.json could say
    model, settings, input_dim = fold_model(folder)
    config = with_head_training(TrainConfig(head=HEAD))
    imported_from = {"source": "sequoia", "folder": str(folder.resolve()),
                     "config": json.loads((folder / HUB_CONFIG).read_text()),
                     "sha256": _digest(folder / HUB_WEIGHTS), "genes": str(genes) if genes else "SEQUOIA's 20,820"}
    with runs.building(out_dir) as work:
        runs.save_model(work, model)
        runs.write_genes(work, names)
        if inputs.expression:
            patients = _evaluate(work, model, names, inputs, settings, progress)
        record = runs.RunRecord(inputs=inputs, train=config, feature_dim=input_dim, genes=n_outputs,
                                patients=patients, epochs=0, best_val_loss=None, train_seconds=None,
                                feature_settings=feature_settings, extraction=extraction,
                                head_settings=settings_dict(settings), approach=runs.IMPORTED,
                                imported_from=imported_from)
        runs.write_record(work, record)
        if inputs.expression:
            runs.write_metrics(work)
    return out_dir


def _evaluate(work: Path, model, genes: list[str], inputs: RunInputs, settings, progress: bool) -> dict:
    """Predict every patient of `inputs` (all held out) with the fold and with the untrained ViS (seed
    0: SEQUOIA's random model); write them, the measured targets and the split. The patients' counts."""
    import keras

    from hist2rna_tf.model.inputs import input_kind
    from hist2rna_tf.model.train import cohort_of

    genes_file = work / ".genes_of_the_fold.txt"
    genes_file.write_text("\n".join(genes) + "\n")
    cohort = cohort_of(replace(inputs, genes=str(genes_file), drop_missing_genes=True))
    genes_file.unlink()
    refuse_too_few_patients(cohort, inputs)  # (none of the fold's genes in the table: cohort_of says so)
    if cohort.missing_genes:
        log.warning("%s lacks %d of the fold's %d genes (e.g. %s): they are left out of the evaluation.",
                    inputs.expression, len(cohort.missing_genes), len(genes), cohort.missing_genes[0])
    dim = int(model.input_shape[-1])
    kind = input_kind(HEAD, settings, dim)
    examples = kind.examples(cohort.features, cohort.slides, inputs.features, progress)
    columns = [genes.index(g) for g in cohort.targets.columns]
    predicted = kind.predict(model, examples)[:, columns]
    keras.utils.set_random_seed(0)
    random = kind.predict(kind.build(len(genes)), examples)[:, columns]
    index = cohort.features.index
    runs.write_split(work, pd.Series("test", index=index), cohort.labels)
    runs.write_targets(work, cohort.targets.iloc[:0])
    runs.write_held_out(work, pd.DataFrame(predicted, index=index, columns=cohort.targets.columns), cohort.targets)
    runs.write_random_predictions(work, pd.DataFrame(random, index=index, columns=cohort.targets.columns))
    return {"train": 0, "test": len(index)}


def refuse_too_few_patients(cohort, inputs: RunInputs) -> None:
    """An ExpressionError, before any slide is clustered, when the cohort has fewer than 3 patients
    (the metrics' least) with features, expression and a label: nothing to evaluate the fold on."""
    if len(cohort.targets) < 3:
        raise ExpressionError(f"--expression {inputs.expression}: {len(cohort.targets)} patient(s) with features, "
                              f"expression and a label; evaluating the fold needs at least 3: give --features, "
                              "--expression and --labels of one cohort.")
