"""SEQUOIA's published models as runs: `hist2rna import-run --from sequoia FOLDER --out RUN`.

A SEQUOIA fold on the Hugging Face hub (`gevaertlab/sequoia-<cancer>-<fold>`, MIT) is the folder
`PyTorchModelHubMixin` writes: `config.json` (ViS's arguments: num_outputs, input_dim, depth, nheads,
dimensions_f, dimensions_s, dimensions_c, num_clusters) and `model.safetensors` (its state dict). It
becomes a run folder that stands alone, as `hist2rna train` writes one: the head in Keras with the
fold's weights (best.keras), its genes in output order (SEQUOIA's 20,820, shipped in
data/sequoia_gene_list.csv, or `genes` for another list) and its record (the head, its settings, the
features it reads: UNI's, of 256 px tiles at 20x resized to 224, no stain normalisation; or those of a
features folder given). With a features folder, an expression table and labels, the fold is also
evaluated on those patients (all held out), as a trained run is: test predictions, the untrained ViS's
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

from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.errors import ModelError
from hist2rna_tf.extract.settings import FeatureSettings
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads import settings_dict, with_head_training
from hist2rna_tf.model.heads.sequoia import Settings
from hist2rna_tf.outputs import refuse_overlap

log = logging.getLogger(__name__)

HUB_CONFIG, HUB_WEIGHTS = "config.json", "model.safetensors"
# What SEQUOIA's published models read: UNI's features (the weights file of its hub page) of 256 px tiles at
# 20x (0.5 um/px, 128 um) resized to 224, ImageNet-normalised, no stain normalisation
# (pre_processing/patch_gen_hdf5.py, compute_features_hdf5.py).
UNI_FEATURES = FeatureSettings("uni", "pytorch_model.bin", "none", 256, 128.0)
_CONFIG_KEYS = {"num_outputs": None, "input_dim": None, "depth": "depth", "nheads": "heads", "dimensions_f": "dim_f",
                "dimensions_s": "dim_s", "dimensions_c": "dim_c", "num_clusters": "clusters"}


def sequoia_genes() -> list[str]:
    """The 20,820 genes of SEQUOIA's published models, in output order (data/PROVENANCE.md)."""
    with resources.files("hist2rna_tf").joinpath("data/sequoia_gene_list.csv").open() as handle:
        return pd.read_csv(handle)["gene"].astype(str).tolist()


def read_fold_config(folder: str | Path) -> tuple[Settings, int, int]:
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
    values = {field: int(config[key]) for key, field in _CONFIG_KEYS.items() if field and key in config}
    return Settings(**values), int(config["num_outputs"]), int(config["input_dim"])


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
    from hist2rna_tf.model.train import absolute_inputs

    folder, out_dir = Path(folder), Path(out_dir)
    refuse_overlap(out_dir, {"FOLDER": folder, **({"--features": evaluate.features} if evaluate else {})})
    runs.refuse_existing(out_dir, overwrite, runs.IMPORTED)
    settings, n_outputs, input_dim = read_fold_config(folder)
    names = sequoia_genes() if genes is None else Path(genes).read_text().split()
    if len(names) != n_outputs:
        raise ModelError(f"{folder / HUB_CONFIG}: {n_outputs} outputs, but {genes or 'SEQUOIA gene list'} names "
                         f"{len(names)} genes; give --genes, a file of the fold's {n_outputs} gene symbols in order.")
    model, settings, input_dim = fold_model(folder)
    config = replace(with_head_training(TrainConfig(head="sequoia")), clusters=settings.clusters)
    feature_settings, extraction, patients = UNI_FEATURES, None, {"train": 0, "test": 0}
    inputs = RunInputs("", "", "") if evaluate is None else absolute_inputs(evaluate)
    if inputs.features:
        from hist2rna_tf.extract.records import read_feature_folder
        from hist2rna_tf.model.train import _extraction

        found = read_feature_folder(inputs.features).settings
        feature_settings, extraction = found, _extraction(inputs.features, found)
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


def _evaluate(work: Path, model, genes: list[str], inputs: RunInputs, settings: Settings, progress: bool) -> dict:
    """Predict every patient of `inputs` (all held out) with the fold and with the untrained ViS (seed
    0: SEQUOIA's random model); write them, the measured targets and the split. The patients' counts."""
    import keras

    from hist2rna_tf.model.bags import cluster_groups, patient_groups, predict_clusters, require_tile_features
    from hist2rna_tf.model.heads.clusters import too_few_tiles
    from hist2rna_tf.model.heads.sequoia import build
    from hist2rna_tf.model.train import cohort_of

    genes_file = work / ".genes_of_the_fold.txt"
    genes_file.write_text("\n".join(genes) + "\n")
    cohort = cohort_of(replace(inputs, genes=str(genes_file), drop_missing_genes=True))
    genes_file.unlink()
    if cohort.missing_genes:
        log.warning("%s lacks %d of the fold's %d genes (e.g. %s): they are left out of the evaluation.",
                    inputs.expression, len(cohort.missing_genes), len(genes), cohort.missing_genes[0])
    slides = cohort.slides[cohort.slides["patient_id"].isin(set(cohort.features.index))]
    require_tile_features(slides, inputs.features, "sequoia")
    too_few_tiles(slides, settings.clusters, inputs.features)
    groups = cluster_groups(patient_groups(slides, cohort.features.index), settings.clusters, progress)
    columns = [genes.index(g) for g in cohort.targets.columns]
    dim = int(model.input_shape[-1])
    predicted = predict_clusters(model, groups, dim, settings.clusters)[:, columns]
    keras.utils.set_random_seed(0)
    random = predict_clusters(build(dim, len(genes), settings), groups, dim, settings.clusters)[:, columns]
    index = cohort.features.index
    runs.write_split(work, pd.Series("test", index=index), cohort.labels)
    runs.write_targets(work, cohort.targets.iloc[:0])
    runs.write_held_out(work, pd.DataFrame(predicted, index=index, columns=cohort.targets.columns), cohort.targets)
    runs.write_random_predictions(work, pd.DataFrame(random, index=index, columns=cohort.targets.columns))
    return {"train": 0, "test": len(index)}
