"""The run folder, in one place: every file a training run (or a patch-based baseline) holds, its typed
record (`RunRecord`, config.json), and the readers and writers, side by side (as records.py is for
the feature TFRecords).

  runs/<name>/
    config.json            the RunRecord: inputs, training settings, patients, epochs, how the features were made
    genes.txt              the predicted genes, in the model's output order
    split.csv              patient_id, subset (train/test), label
    best.keras             the head (or baseline model) with the best validation loss
    history.csv            per-epoch losses; tensorboard/ beside it (hist2RNA runs)
    train_targets.csv      training patients x genes, measured log2(1+RSEM)
    test_predictions.csv   held-out patients x genes, predicted log2(1+RSEM)
    test_targets.csv       held-out patients x genes, measured log2(1+RSEM)
    random_predictions.csv held-out patients x genes, predicted by the same head untrained (its initialisation
                           at the run's seed): SEQUOIA's "random" model (runs since 0.8.0)
    all_genes.csv, sig_genes.csv   SEQUOIA's test of each gene, with their column names (`write_metrics`)
    across_genes.csv, across_patients.csv, r_squared.csv   the held-out metrics (`write_metrics`)
    costs.csv              (baselines) training time and energy of both approaches

A run stands alone: it keeps how its features were made (`RunRecord.extraction`: everything needed
to extract new slides alike and to export), its patients' labels and measured targets, so that
predicting, exporting, mapping and reporting never go back to the features folder or the RNA-seq
table it was trained on (a patch-based baseline reads the tile features, from `--features` when
they moved). Moving the run, or running from another folder, changes nothing. A run is built in a
folder beside its place and renamed into it only when complete (`building`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from hist2rna_tf import __version__
from hist2rna_tf.analysis import sequoia
from hist2rna_tf.analysis.evaluate import held_out_metrics, metric_summaries
from hist2rna_tf.atomic import atomic_path, building_folder, write_json, write_table, write_text
from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.errors import Hist2RNAError, RunError, SettingsError
from hist2rna_tf.expression import load_split, log2_expression, read_expression, read_labels, save_split, to_patients
from hist2rna_tf.extract.settings import Extraction, FeatureSettings, read_extraction, require_same
from hist2rna_tf.model.run_record import HIST2RNA, IMPORTED, PATCH_BASED, RUN_FORMAT, RunRecord, TrainedRun  # noqa: F401
from hist2rna_tf.outputs import refuse_replacing

CONFIG = "config.json"
GENES = "genes.txt"
SPLIT = "split.csv"
MODEL = "best.keras"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"
TRAIN_TARGETS = "train_targets.csv"
TEST_PREDICTIONS = "test_predictions.csv"
TEST_TARGETS = "test_targets.csv"
METRICS = {"across_genes": "across_genes.csv", "across_patients": "across_patients.csv", "r_squared": "r_squared.csv"}
COSTS = "costs.csv"
# SEQUOIA's test (analysis/sequoia.py): the untrained head's held-out predictions, and its gene tables.
RANDOM_PREDICTIONS = "random_predictions.csv"
SEQUOIA_TABLES = {"all_genes": "all_genes.csv", "sig_genes": "sig_genes.csv"}
# A crossval folder (folds.py) is recognised by its settings file; its fold-<k>/ are runs.
CROSSVAL_SETTINGS = "crossval.json"


# What every complete run folder (training or baseline) holds; a run writes them all or none.
REQUIRED = (CONFIG, GENES, SPLIT, MODEL, TRAIN_TARGETS, TEST_PREDICTIONS, TEST_TARGETS)
REQUIRED_BEFORE_FORMAT_2 = tuple(name for name in REQUIRED if name != TRAIN_TARGETS)
# An imported run (import-run) holds its model; with an evaluation cohort, its held-out files too.
REQUIRED_IMPORTED = (CONFIG, GENES, MODEL)


def read_record(run_dir: str | Path) -> RunRecord:
    """A complete run's record, or a RunError naming what is wrong: not a run folder, a config.json
    that is missing, truncated, garbage or another tool's, or a run missing some of its files."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    refuse_crossval(run_dir)
    if not path.is_file():
        raise RunError(_not_a_run(run_dir))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({type(exc).__name__}: {exc}); the run's record is damaged (truncated by "
                       "a full disk or an interrupted copy?). Copy the run folder again, or train it again.") from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise RunError(f"{path}: not a training run's config (no 'inputs'); give a `hist2rna train` folder.")
    fmt = data.get("format", 1)
    if not isinstance(fmt, int):
        raise RunError(f"{path}: not a run record this version can read (format {fmt!r}); train the run again.")
    if fmt > RUN_FORMAT:
        raise RunError(f"{path}: written by hist2rna-tf {data.get('version')} (run format {fmt}), newer than this "
                       f"{__version__} (format {RUN_FORMAT}); upgrade hist2rna-tf to use it.")
    required = REQUIRED_IMPORTED if data.get("approach") == IMPORTED else REQUIRED if fmt >= 2 else REQUIRED_BEFORE_FORMAT_2
    missing = [name for name in required if not (run_dir / name).is_file()]
    if missing:
        raise RunError(f"{run_dir}: an incomplete training run (no {', '.join(missing)}); train it again.")
    try:
        record = RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunError(f"{path}: not a run record this version can read ({type(exc).__name__}: {exc}); train the "
                       "run again.") from None
    return record


def _not_a_run(folder: Path) -> str:
    """Why `folder` (without a config.json) is no run, and which runs it holds when it holds some."""
    give = "give the folder `hist2rna train --out` (or `baseline --out`, `import-run --out`) wrote"
    if not folder.exists():
        return f"{folder}: no such folder; {give}."
    if not folder.is_dir():
        return f"{folder}: a file, not a training run folder; {give}."
    inside = sorted(p.parent for p in folder.glob(f"*/{CONFIG}"))
    if inside:
        return (f"{folder}: not a training run folder (no {CONFIG}), but it holds {len(inside)} (e.g. {inside[0]}); "
                "give one of them.")
    return f"{folder}: not a training run folder (no {CONFIG}); {give}."


def refuse_crossval(folder: str | Path) -> None:
    """A RunError when `folder` is a crossval folder, where a run is wanted: it names its runs."""
    folder = Path(folder)
    if (folder / CROSSVAL_SETTINGS).is_file() and not (folder / CONFIG).is_file():
        raise RunError(f"{folder}: a crossval folder (hist2rna crossval), not a run; each of its fold-<k>/ folders "
                       f"is a run: give one, e.g. {folder / 'fold-1'}.")


def write_record(run_dir: Path, record: RunRecord) -> Path:
    return write_json(Path(run_dir) / CONFIG, record.to_json())


def extraction(run_dir: str | Path, record: RunRecord | None = None) -> Extraction:
    """How the run's training features were made, to extract new slides alike or export: its own
    record's; for a run of 0.4.0 or earlier, its features folder's extract_config.json, when that
    folder still holds the features the run was trained on. A Hist2RNAError saying why not."""
    record = record or read_record(run_dir)
    if record.extraction is not None:
        return record.extraction
    folder = Path(record.inputs.features)
    if record.format >= 2:
        raise RunError(f"{run_dir}: its features ({folder}) were extracted without an extract_config.json (written "
                       "by another tool?), so the run cannot say how to extract new slides alike. Predict from "
                       "features (--features) extracted with its settings instead.")
    try:
        saved = read_extraction(folder)
    except SettingsError as exc:
        raise RunError(f"{run_dir}: trained by hist2rna-tf {record.version}, which kept the extraction settings in "
                       f"the features folder ({exc}); restore that folder where it was, or train the run again with "
                       "this version (its runs keep them).") from None
    if record.feature_settings is not None:
        require_same(record.feature_settings, saved.features, folder, f"the features {run_dir} was trained on",
                     "the folder was extracted again since. Restore the one the run used, or train the run again.")
    return saved


def feature_settings(run_dir: str | Path, record: RunRecord | None = None) -> FeatureSettings | None:
    """The settings of the features the run was trained on; for a run of 0.1.x (which did not record
    them) its features folder's, when still there; else None."""
    record = record or read_record(run_dir)
    if record.feature_settings is not None or record.format >= 2:
        return record.feature_settings
    try:
        return extraction(run_dir, record).features
    except Hist2RNAError:
        return None


# --- building a run ----------------------------------------------------------------------------------


def refuse_existing(out_dir: str | Path, overwrite: bool, approach: str = HIST2RNA,
                    overwrite_option: bool = True) -> None:
    """Before any work: `out_dir` may be new, empty, or (with `overwrite`) a complete run of this
    `approach` (its record says so); anything else, a folder of the user's files or another
    approach's run included, is refused, naming what it holds (outputs.refuse_replacing). A command
    without --overwrite (`overwrite_option` False: import-run) is not told to give it."""
    names = {HIST2RNA: "a hist2RNA training run", PATCH_BASED: "a patch-based baseline run",
             IMPORTED: "an imported run (import-run)"}

    def run_held(folder: Path) -> str | None:
        try:
            return names.get(read_record(folder).approach)
        except Hist2RNAError:
            return None

    refuse_replacing(out_dir, overwrite, names[approach], run_held, overwrite_option=overwrite_option)


# A run is built in a folder beside its place and renamed into it when complete; on failure (or a
# kill) nothing of it stays (atomic.building_folder).
building = building_folder


def write_genes(run_dir: Path, genes) -> Path:
    return write_text(Path(run_dir) / GENES, "\n".join(genes) + "\n")


def write_tensorboard_config(run_dir: str | Path, config: TrainConfig, x_shape, y_shape) -> None:
    """The training settings and the data's shapes as a text summary in the run's TensorBoard logs."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(Path(run_dir) / TENSORBOARD / "config"))
    text = json.dumps({"train": dataclasses.asdict(config), "features": list(x_shape), "targets": list(y_shape),
                       "version": __version__}, indent=2)
    with writer.as_default():
        tf.summary.text("config", f"<pre>{text}</pre>", step=0)
    writer.close()


def write_split(run_dir: Path, split: pd.Series, labels: pd.Series, sites: pd.Series | None = None) -> Path:
    """patient_id, subset (train/test), label[, site]."""
    return save_split(split, labels, Path(run_dir) / SPLIT, sites)


def copy_split(run_dir: Path, source_run: Path) -> Path:
    """Another run's split.csv, byte for byte (a baseline shares its run's patients)."""
    with atomic_path(Path(run_dir) / SPLIT) as tmp:
        tmp.write_bytes((Path(source_run) / SPLIT).read_bytes())
    return Path(run_dir) / SPLIT


def write_targets(run_dir: Path, train: pd.DataFrame) -> Path:
    """The training patients' measured log2 expression (patients x genes)."""
    return write_table(train.rename_axis("patient_id"), Path(run_dir) / TRAIN_TARGETS)


def write_held_out(run_dir: Path, predictions: pd.DataFrame, targets: pd.DataFrame) -> None:
    """The held-out patients' predicted and measured log2 expression (patients x genes)."""
    write_table(predictions.rename_axis("patient_id"), Path(run_dir) / TEST_PREDICTIONS)
    write_table(targets.rename_axis("patient_id"), Path(run_dir) / TEST_TARGETS)


def write_random_predictions(run_dir: Path, predictions: pd.DataFrame) -> Path:
    """The untrained head's held-out predictions (patients x genes), laid out as test_predictions.csv."""
    return write_table(predictions.rename_axis("patient_id"), Path(run_dir) / RANDOM_PREDICTIONS)


def write_metrics(run_dir: Path) -> dict:
    """Write the held-out metrics (METRICS: Spearman across genes and patients, R2 per gene) of the
    run's held-out predictions and, when the run has its untrained head's (RANDOM_PREDICTIONS),
    SEQUOIA's test (SEQUOIA_TABLES); return their summaries (analysis.evaluate.metric_summaries, and
    "sequoia": analysis.sequoia.summary)."""
    predicted, measured = held_out(run_dir)
    tables = held_out_metrics(predicted, measured)
    for name, table in tables.items():
        write_table(table, Path(run_dir) / METRICS[name])
    summaries = metric_summaries(tables)
    if (Path(run_dir) / RANDOM_PREDICTIONS).is_file():
        genes = sequoia.gene_table(measured, predicted, read_patients_table(Path(run_dir) / RANDOM_PREDICTIONS))
        write_table(genes, Path(run_dir) / SEQUOIA_TABLES["all_genes"])
        write_table(sequoia.significant(genes), Path(run_dir) / SEQUOIA_TABLES["sig_genes"])
        summaries["sequoia"] = sequoia.summary(genes)
    return summaries


def write_costs(run_dir: Path, costs: pd.DataFrame) -> Path:
    return write_table(costs, Path(run_dir) / COSTS, index=False)


def save_model(run_dir: Path, model) -> Path:
    """The Keras model as best.keras (atomically: the temp name keeps .keras, which Keras needs)."""
    with atomic_path(Path(run_dir) / MODEL) as tmp:
        model.save(tmp)
    return Path(run_dir) / MODEL


# --- reading a run -----------------------------------------------------------------------------------


def model_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / MODEL


def is_run(folder: str | Path) -> bool:
    """Whether `folder` looks like a run (a trained model or a run record) rather than, say, a
    SavedModel export; `read_record` says whether it is a complete one."""
    return model_path(folder).is_file() or (Path(folder) / CONFIG).is_file()


def read_genes(run_dir: str | Path) -> list[str]:
    return (Path(run_dir) / GENES).read_text().split()


def split_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SPLIT


def read_split(run_dir: str | Path) -> pd.Series:
    """patient -> 'train' / 'test'."""
    return load_split(split_path(run_dir))


def split_labels(run_dir: str | Path) -> pd.Series:
    """patient -> the label the run was split by (its subtype), for every patient of the run."""
    frame = pd.read_csv(split_path(run_dir), dtype=str).set_index("patient_id")
    return frame["label"]


def read_patients_table(path: str | Path) -> pd.DataFrame:
    """A patients x genes CSV of a run (patient ids kept as text: `001` stays `001`)."""
    return pd.read_csv(path, index_col=0, converters={0: str})


def held_out(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predicted, measured) log2 expression of the run's held-out patients, patients x genes."""
    run_dir = Path(run_dir)
    return read_patients_table(run_dir / TEST_PREDICTIONS), read_patients_table(run_dir / TEST_TARGETS)


def targets(run_dir: str | Path, record: RunRecord | None = None) -> pd.DataFrame:
    """Measured log2 expression of every patient of the run (training and held-out), its genes
    (runs of 0.4.0 and earlier: read again from the expression table they were trained on)."""
    run_dir = Path(run_dir)
    if (run_dir / TRAIN_TARGETS).is_file():
        return pd.concat([read_patients_table(run_dir / TRAIN_TARGETS), held_out(run_dir)[1]])
    record = record or read_record(run_dir)
    split = read_split(run_dir)
    return measured_log2(record.inputs).reindex(index=split.index, columns=read_genes(run_dir))


def metrics(run_dir: str | Path) -> dict[str, pd.DataFrame | pd.Series]:
    """The held-out metrics `write_metrics` wrote: across_genes and across_patients (rho, p, fdr,
    neg_log10_fdr, n per gene / patient) and r_squared (per gene). A run made before they were
    written has them computed from its held-out predictions (and nothing written)."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in METRICS.values()):
        return held_out_metrics(*held_out(run_dir))
    tables = {name: read_patients_table(run_dir / file) for name, file in METRICS.items()}
    tables["r_squared"] = tables["r_squared"]["r2"]
    return tables


def read_costs(path: str | Path) -> pd.DataFrame:
    """A costs.csv (approach, device, n_devices, watts, epochs, seconds, hours, kwh); `path` is the
    file or the baseline run folder holding it."""
    path = Path(path)
    return pd.read_csv(path / COSTS if path.is_dir() else path)


def display_name(run_dir: str | Path) -> str:
    """A short name for a run in figures: its features folder's (the backbone), else its own; with its
    head when not the paper's ("uni (abmil)")."""
    try:
        record = read_record(run_dir)
    except Hist2RNAError:
        return Path(run_dir).name
    name = Path(record.inputs.features).name or Path(run_dir).name
    return name if record.train.head == TrainConfig().head else f"{name} ({record.train.head})"


# --- the run's cohort ----------------------------------------------------------------------------------


def measured_log2(inputs: RunInputs) -> pd.DataFrame:
    """Patients x genes of measured log2(1+RSEM) from a run's expression table (what runs of 0.4.0
    and earlier read again; later runs keep their patients' targets)."""
    return log2_expression(to_patients(read_expression(inputs.expression), inputs.expression))


def training_reference(run_dir: str | Path, record: RunRecord | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """A run's training patients' measured log2 expression and labels (what the paper's subtype
    classifier learns from), from the run folder alone (runs of 0.4.0 and earlier: from the tables
    they were trained on)."""
    run_dir = Path(run_dir)
    split = read_split(run_dir)
    if (run_dir / TRAIN_TARGETS).is_file():
        expression, labels = read_patients_table(run_dir / TRAIN_TARGETS), split_labels(run_dir)
    else:
        record = record or read_record(run_dir)
        expression = measured_log2(record.inputs)
        labels = read_labels(record.inputs.labels, record.inputs.label_column)
    train = split.index[split == "train"].intersection(expression.index).intersection(labels.dropna().index)
    return expression.loc[train], labels.loc[train]

