"""The patch-based baseline the paper compares hist2RNA with (sections 3.2 and 4.5, Figures 6 and 10).

hist2RNA trains on ONE vector per patient (the mean of its tile features). The patch-based approach
(after Wang et al. 2021) trains on TILES: every tile gets its slide's RNA-seq as its target, and a
slide's prediction is the mean of its tiles' predictions. Here it is run on the same patients, the
same train/test split, the same genes, the same head, optimiser, loss, minibatch size and early
stopping as a hist2RNA run, so the two differ only in what a training example is:

  mode "frozen" (default): the head learns from the stored per-tile features of the frozen backbone
      (`hist2rna extract --save-tile-features`), streamed from the TFRecords with tf.data;
  mode "finetune": the backbone is trained too, end to end on the tile images (read from the slides,
      stain-normalised, through the backbone and a linear output), as the paper's patch-based models
      were; this is what took the paper 8.48 h on four V100s.

The training time is measured on the machine at hand; energy = time x device power x devices (the
power is configurable: the paper assumed 300 W per V100). `costs.csv` lists both approaches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
from keras import layers
import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.config import BaselineConfig
from hist2rna_tf.errors import Hist2RNAError, RecordError
from hist2rna_tf.expression import average_by_patient
from hist2rna_tf.extract.backbones.build import build_backbone
from hist2rna_tf.extract.plan import annotation_for
from hist2rna_tf.extract.records import parse_example, read_record, record_files
from hist2rna_tf.extract.settings import require_same
from hist2rna_tf.extract.slides import find_slides
from hist2rna_tf.extract.stain.normalisers import make_normaliser, resolve_stain_config
from hist2rna_tf.extract.stream import CohortStream
from hist2rna_tf.model import runs
from hist2rna_tf.model.costs import approach_label, cost_table
from hist2rna_tf.model.heads import DEFAULT_HEAD, head_settings
from hist2rna_tf.model.heads.base import Standardization
from hist2rna_tf.model.heads.paper import build as build_head
from hist2rna_tf.model.train import fit_model, validation_rows
from hist2rna_tf.outputs import refuse_overlap

log = logging.getLogger(__name__)


@dataclass
class _Cohort:
    """The run's patients, split and targets, and each slide's record file."""

    run_dir: Path
    record: runs.RunRecord  # the hist2RNA run's
    genes: list[str]
    targets: pd.DataFrame  # patients x genes, log2
    split: pd.Series  # patient -> train/test
    features: Path  # the folder of the run's feature records (with tile features, for frozen)
    slides: pd.DataFrame  # slide_id -> path, patient_id

    def slides_of(self, patients) -> pd.DataFrame:
        return self.slides[self.slides["patient_id"].isin(set(patients))]


def _cohort(run_dir: Path, features: Path | None = None) -> _Cohort:
    """The run's cohort; its slides' records from `features` (default: the folder it was trained on)."""
    record = runs.read_record(run_dir)
    genes = runs.read_genes(run_dir)
    split = runs.read_split(run_dir)
    targets = runs.targets(run_dir, record).reindex(columns=genes)
    folder = Path(features or record.inputs.features)
    if not folder.exists():
        raise RecordError(f"{folder}: the feature records {run_dir} was trained on are not there (moved or deleted?); "
                          "give --features DIR, the folder they are in now (extracted with --save-tile-features).")
    expected = runs.feature_settings(run_dir, record)
    slides = []
    for path in record_files(folder):
        slide = read_record(path)
        if expected is not None:
            require_same(expected, slide.settings, path, f"the features {run_dir} was trained on",
                         "point --features at the records the run was trained on, or train the run again on these.")
        slides.append({"slide_id": slide.slide_id, "patient_id": slide.patient_id, "path": path,
                       "n_tiles": slide.n_tiles, "has_tiles": slide.tile_features is not None})
    slides = pd.DataFrame(slides).set_index("slide_id")
    source = f"--features {folder}" if features else f"{folder} (the features {run_dir} was trained on)"
    refuse_missing_patients(slides, split, source, run_dir, record)
    slides = slides[slides["patient_id"].isin(split.index)]
    return _Cohort(run_dir, record, genes, targets.loc[split.index], split, folder, slides)


def refuse_missing_patients(slides: pd.DataFrame, split: pd.Series, source: str, run_dir: Path,
                            record: runs.RunRecord) -> None:
    """A RecordError naming the features folder (`source`) when its records (`slides`: slide_id ->
    patient_id) leave out any of the run's patients (`split`: patient -> train/test): the baseline
    trains and is tested on the run's own patients, each with its slides."""
    missing = split[~split.index.isin(set(slides["patient_id"]))]
    if missing.empty:
        return
    fix = (f"give --features the folder {run_dir} was trained on ({record.inputs.features}), or one extracted again "
           "from its slides with its settings (and --save-tile-features)")
    if len(missing) == len(split):
        raise RecordError(f"{source}: holds none of the slides of the run's {len(split)} patients (e.g. "
                          f"{split.index[0]}): its {len(slides)} records are of other patients (e.g. "
                          f"{slides['patient_id'].iloc[0]}); {fix}.")
    counts = missing.value_counts()
    which = ", ".join(f"{counts[subset]} {name}" for subset, name in (("test", "held-out"), ("train", "training"))
                      if subset in counts)
    raise RecordError(f"{source}: holds no slide of {len(missing)} of the run's {len(split)} patients "
                      f"({which}; e.g. {missing.index[0]}); {fix}.")


def _validation_patients(train_patients: list[str], fraction: float, seed: int) -> set[str]:
    mask = validation_rows(len(train_patients), fraction, seed)
    return {p for p, held in zip(train_patients, mask) if held}


# --- frozen: tile features from the TFRecords ------------------------------------------------------


def tile_dataset(slides: pd.DataFrame, targets: pd.DataFrame, batch_size: int, shuffle: int | None, seed: int):
    """tf.data of (tile feature [B, 1, F], its patient's targets [B, G]), slides interleaved, shuffled;
    its length (batches) is declared, so Keras knows an epoch's size."""
    files = slides["path"].tolist()
    y = targets.loc[slides["patient_id"]].to_numpy(np.float32)

    def tiles(path, target):
        def parse(serialized):
            parsed = parse_example(serialized)
            feats = tf.reshape(parsed["tile_features"], [-1, 1, tf.cast(parsed["feature_dim"], tf.int32)])
            return tf.data.Dataset.from_tensor_slices(feats)
        return tf.data.TFRecordDataset(path).flat_map(parse).map(lambda t: (t, target))

    data = tf.data.Dataset.from_tensor_slices((files, y))
    if shuffle:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    data = data.interleave(tiles, cycle_length=min(16, len(files)), block_length=1,
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        data = data.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    n_batches = -(-int(slides["n_tiles"].sum()) // batch_size)
    return data.batch(batch_size).apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


def _frozen_model(cohort: _Cohort, train_slides: pd.DataFrame, train_targets: pd.DataFrame, seed: int):
    """The paper's head, on one tile's feature; standardised at tile level when the run was."""
    missing = cohort.slides.index[~cohort.slides["has_tiles"]]  # the held-out slides' too: they are predicted
    if len(missing):
        raise Hist2RNAError(f"{len(missing)} slides (e.g. {missing[0]}) have no per-tile features in "
                            f"{cohort.features}; re-run `hist2rna extract` with --save-tile-features (or use "
                            "--mode finetune).")
    scaling = None
    if cohort.record.train.standardize:  # as the hist2RNA run did, at tile level
        scaling = Standardization.of_tiles((x.numpy() for x, _ in tile_dataset(train_slides, train_targets, 256, None,
                                                                                seed)),
                                           train_targets.loc[train_slides["patient_id"]].to_numpy())
    record = cohort.record  # the run's own layers when it trained the paper's head (--head-option)
    layers = head_settings(DEFAULT_HEAD, record.head_settings if record.train.head == DEFAULT_HEAD else None)
    return build_head(record.feature_dim, len(cohort.genes), layers, name="patch_baseline", standardization=scaling)


def _predict_frozen(model, slides: pd.DataFrame) -> pd.DataFrame:
    """Each slide: the mean of its tiles' predictions (slides x genes)."""
    rows = {}
    for slide_id, path in slides["path"].items():
        tiles = read_record(path).tile_features
        rows[slide_id] = np.asarray(model(tiles[:, None, :].astype(np.float32), training=False)).mean(0)
    return pd.DataFrame(rows).T


# --- finetune: the backbone trained on tile images ---------------------------------------------------


def build_finetune_model(backbone, tile_size_px: int, n_genes: int, target_mean: np.ndarray | None = None,
                         target_var: np.ndarray | None = None, name: str = "patch_baseline_finetune") -> keras.Model:
    """The patch-based approach's model (the paper's comparison, section 3.2): float RGB tiles
    [B, T, T, 3] in [0, 255] -> the backbone's own preprocessing -> the backbone, TRAINABLE ->
    Dense(n_genes, linear). With `target_mean`/`target_var` (the training patients' log2 genes) the
    genes are learnt z-scored and un-z-scored on the way out, as `Standardization` does for the head.
    `backbone`: a backbones.Backbone (its model is set trainable here)."""
    if int(n_genes) < 1:
        raise ValueError(f"n_genes must be positive, got {n_genes}")
    size = int(tile_size_px)

    # --- layers ---
    backbone.model.trainable = True
    inputs = keras.Input((size, size, 3), dtype="float32", name="tiles")
    outputs = layers.Dense(int(n_genes), name="genes")(backbone.model(backbone.preprocess(inputs)))
    if target_mean is not None:
        outputs = layers.Normalization(axis=-1, mean=target_mean, variance=np.maximum(target_var, 1e-12), invert=True,
                                       name="unstandardize_genes")(outputs)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)



@dataclass
class _Parts:
    """What one mode trains and how it predicts: the model, its training and validation data, and
    slides -> slide-level predictions (the mean of the tiles')."""

    model: object
    fit_data: object
    val_data: object
    predict: object  # (model, slides DataFrame) -> slides x genes


def _frozen_parts(cohort: _Cohort, fit: pd.DataFrame, val: pd.DataFrame, batch_size: int, config: BaselineConfig,
                  seed: int) -> _Parts:
    model = _frozen_model(cohort, pd.concat([fit, val]), cohort.targets, seed)
    return _Parts(model, tile_dataset(fit, cohort.targets, batch_size, config.shuffle_buffer, seed),
                  tile_dataset(val, cohort.targets, batch_size, None, seed), _predict_frozen)


def _finetune_parts(cohort: _Cohort, fit: pd.DataFrame, val: pd.DataFrame, batch_size: int, config: BaselineConfig,
                    seed: int, slides: list[Path], annotations_dir: Path | None) -> _Parts:
    """The backbone (trainable) + a linear output (build_finetune_model), and tile images
    streamed from the slides by the extraction's own tile stream, with the run's tiling and stain
    settings."""
    extract = runs.extraction(cohort.run_dir, cohort.record).config
    refs = {ref.slide_id: ref for ref in find_slides(slides, extract.tiles.tile_size_px)}
    absent = [s for s in cohort.slides.index if s not in refs]
    if absent:
        raise Hist2RNAError(f"{len(absent)} slides of the run (e.g. {absent[0]}) are not under "
                            f"{', '.join(map(str, slides))}; give --slides the slides the run was extracted from.")
    backbone = build_backbone(extract.backbone, extract.weights, extract.tiles.tile_size_px)
    scaling = {}
    if cohort.record.train.standardize:  # as the hist2RNA run did: genes learnt z-scored
        train = cohort.targets.loc[cohort.split.index[cohort.split == "train"]].to_numpy(np.float64)
        scaling = {"target_mean": train.mean(0), "target_var": train.var(0)}
    model = build_finetune_model(backbone, extract.tiles.tile_size_px, len(cohort.genes), **scaling)
    normaliser = make_normaliser(resolve_stain_config(extract.stain))

    def images(slides: pd.DataFrame, with_targets: bool, shuffle: int | None, batch: int):
        ids = list(slides.index)
        stream = CohortStream([refs[s] for s in ids], extract.tiles, [annotation_for(refs[s], annotations_dir)
                                                                     for s in ids])
        targets = cohort.targets.loc[slides["patient_id"]].to_numpy(np.float32) if with_targets else None
        return _image_dataset(stream, targets, normaliser, batch, shuffle, seed, config.tiles_per_slide)

    def predict(model, slides: pd.DataFrame) -> pd.DataFrame:
        return _predict_images(model, images(slides, False, None, batch_size * 4), list(slides.index))

    return _Parts(model, images(fit, True, config.image_shuffle_buffer, batch_size), images(val, True, None, batch_size),
                  predict)


READ_BATCH, READ_THREADS = 16, 4  # tiles read per call, calls in parallel


def _image_dataset(stream, targets: np.ndarray | None, normaliser, batch_size: int, shuffle: int | None, seed: int,
                   tiles_per_slide: int | None):
    """tf.data of (normalised tiles [B, T, T, 3] float, targets [B, G]), or (tiles, slide index)
    without `targets` (slides x genes, in the stream's slide order): the extraction's tile stream
    (features.CohortStream), slides in a shuffled order when `shuffle`, tiles shuffled in a buffer of
    that many."""
    def labelled(s, tile):
        return tile, (tf.gather(targets, s) if targets is not None else s)

    def normalise(tiles, label):
        tiles, _ = normaliser(tiles)
        return tf.cast(tiles, tf.float32), label

    order = tf.data.Dataset.range(len(stream.refs))
    if shuffle:
        order = order.shuffle(len(stream.refs), seed=seed, reshuffle_each_iteration=True)
    data = stream.batches(READ_BATCH, READ_THREADS, order, tiles_per_slide).unbatch().map(labelled)
    if shuffle:
        data = data.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(normalise).prefetch(2)


def _predict_images(model, dataset, slide_ids) -> pd.DataFrame:
    sums, counts = {}, {}
    for tiles, index in dataset:
        predicted = np.asarray(model(tiles, training=False))
        for s, row in zip(index.numpy(), predicted):
            sums[s] = sums.get(s, 0) + row
            counts[s] = counts.get(s, 0) + 1
    return pd.DataFrame({slide_ids[s]: sums[s] / counts[s] for s in sums}).T


# --- the run -----------------------------------------------------------------------------------------


def train_patch_baseline(run_dir: str | Path, out_dir: str | Path, config: BaselineConfig = BaselineConfig(),
                         slides: list[str | Path] | str | Path | None = None,
                         annotations_dir: str | Path | None = None, verbose: int = 0,
                         features: str | Path | None = None, overwrite: bool = False) -> runs.TrainedRun:
    """Train the patch-based baseline on a hist2RNA run's patients, split and genes; write, under
    `out_dir`, the same files as a run (runs.py) plus costs.csv. `features`: the folder of the run's
    feature records (frozen; default: where it was trained on them); `slides`: the slide files or
    folders the run was extracted from (finetune). Returns it (runs.TrainedRun: its folder, record
    and held-out metrics' summaries). An `out_dir` holding a baseline is replaced only
    with `overwrite`; one holding anything else, or an input (the run itself included), is refused."""
    given = {"RUN": run_dir, "--features": features, "--slides": [slides] if isinstance(slides, (str, Path)) else slides,
             "--annotations": annotations_dir}
    refuse_overlap(out_dir, given, may_hold=("RUN",))
    runs.refuse_existing(out_dir, overwrite, runs.PATCH_BASED)
    if config.mode not in ("frozen", "finetune"):
        raise Hist2RNAError(f"unknown baseline mode {config.mode!r}; choose frozen or finetune.")
    if config.mode == "finetune" and not slides:
        raise Hist2RNAError("--mode finetune trains on tile images: give --slides (the run's slides).")
    run_dir = Path(run_dir)
    if runs.read_record(run_dir).spots is not None:
        raise Hist2RNAError(f"{run_dir} is a spot run: its patches are its examples already, and its baseline, HEST's "
                            "ridge probe on the same spots, is in its per_sample.csv.")
    cohort = _cohort(run_dir, Path(features) if features else None)
    refuse_overlap(out_dir, {"the run's features": cohort.features})
    run = cohort.record
    settings = replace(run.train, batch_size=config.batch_size or run.train.batch_size,
                       max_epochs=config.max_epochs or run.train.max_epochs,
                       head=DEFAULT_HEAD, head_init=None,  # a tile's own prediction: the paper's
                       head_options=run.train.head_options if run.train.head == DEFAULT_HEAD else ())  # head on one tile
    if run.train.head != DEFAULT_HEAD:
        log.info("the patch-based baseline trains the paper's head on each tile (the paper's patch-based approach), "
                 "not the run's %s head, with the run's training settings (batch %d, patience %d, <= %d epochs).",
                 run.train.head, settings.batch_size, settings.patience, settings.max_epochs)
    batch_size, seed = settings.batch_size, settings.seed
    keras.utils.set_random_seed(seed)
    train_patients = sorted(cohort.split.index[cohort.split == "train"])
    held = _validation_patients(train_patients, settings.validation_fraction, seed)
    fit_slides = cohort.slides_of([p for p in train_patients if p not in held])
    val_slides = cohort.slides_of(held)
    test_slides = cohort.slides_of(cohort.split.index[cohort.split == "test"])

    if config.mode == "frozen":
        parts = _frozen_parts(cohort, fit_slides, val_slides, batch_size, config, seed)
    else:
        slides = [slides] if isinstance(slides, (str, Path)) else list(slides)
        parts = _finetune_parts(cohort, fit_slides, val_slides, batch_size, config, seed, [Path(p) for p in slides],
                                annotations_dir and Path(annotations_dir))
    model = parts.model

    with runs.building(out_dir) as out_dir:  # built aside, renamed into place only when complete
        start = time.perf_counter()
        history = fit_model(model, parts.fit_data, parts.val_data, settings, out_dir, verbose, save_best=False)
        train_seconds = time.perf_counter() - start
        runs.save_model(out_dir, model)

        slide_predictions = parts.predict(model, test_slides)
        slide_predictions.columns = cohort.genes
        predictions = average_by_patient(slide_predictions, test_slides["patient_id"])
        runs.write_held_out(out_dir, predictions, cohort.targets.loc[predictions.index])
        runs.write_targets(out_dir, cohort.targets.loc[train_patients])
        runs.write_genes(out_dir, cohort.genes)
        runs.copy_split(out_dir, run_dir)
        cap = config.tiles_per_slide if config.mode == "finetune" and config.tiles_per_slide else 10 ** 9
        n_tiles = {name: int(frame["n_tiles"].clip(upper=cap).sum()) for name, frame in
                   (("train", fit_slides), ("validation", val_slides), ("test", test_slides))}
        costs = cost_table(train_seconds, len(history), config, run.train_seconds, run.epochs,
                           approach_label(run.train.head))
        runs.write_costs(out_dir, costs)
        record = runs.RunRecord(
            inputs=replace(run.inputs, features=str(cohort.features.resolve())), train=settings,
            feature_dim=run.feature_dim, genes=len(cohort.genes), patients=run.patients, epochs=len(history),
            best_val_loss=float(history["val_loss"].min()), train_seconds=train_seconds,
            feature_settings=run.feature_settings, extraction=run.extraction, approach=runs.PATCH_BASED,
            baseline=config, hist2rna_run=str(run_dir.resolve()), tiles=n_tiles, device=str(costs["device"].iloc[-1]))
        runs.write_record(out_dir, record)
        metrics = runs.write_metrics(out_dir)
    log.info("patch-based baseline: %d epochs in %.0f s; held-out median Spearman across genes %.2f",
             record.epochs, train_seconds, metrics["across_genes"]["median"])
    return runs.TrainedRun(Path(out_dir), record, metrics)
