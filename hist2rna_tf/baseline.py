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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import Hist2RNAError

log = logging.getLogger(__name__)

PAPER_WATTS = 300.0  # the paper's figure for one Nvidia Tesla V100 32GB


@dataclass(frozen=True)
class BaselineConfig:
    mode: str = "frozen"  # "frozen" (stored tile features) or "finetune" (backbone trained on tile images)
    max_epochs: int | None = None  # None: the hist2RNA run's own limit (the paper's 150)
    batch_size: int | None = None  # None: the hist2RNA run's (the paper's 12)
    shuffle_buffer: int = 8192  # tile features (frozen; slides are also interleaved 16 at a time)
    image_shuffle_buffer: int = 2048  # tile images (finetune): 2048 x 224 x 224 x 3 bytes = 0.3 GB
    tiles_per_slide: int | None = None  # finetune: at most this many tiles a slide (None: all planned)
    device_watts: float = PAPER_WATTS
    n_devices: int = 1
    device: str = field(default="")  # described in costs.csv; "" = detected


@dataclass
class _Cohort:
    """The run's patients, split and targets, and each slide's record file."""

    genes: list[str]
    targets: pd.DataFrame  # patients x genes, log2
    split: pd.Series  # patient -> train/test
    slides: pd.DataFrame  # slide_id -> path, patient_id
    train_config: dict
    run_config: dict

    def slides_of(self, patients) -> pd.DataFrame:
        return self.slides[self.slides["patient_id"].isin(set(patients))]


def _cohort(run_dir: Path) -> _Cohort:
    from .expression import load_split
    from .errors import SettingsError
    from .records import read_record, record_files, settings_differences
    from .train import measured_log2, read_run_config

    config = read_run_config(run_dir)
    genes = (run_dir / "genes.txt").read_text().split()
    split = load_split(run_dir / "split.csv")
    targets = measured_log2(config["inputs"]).reindex(columns=genes)
    slides = []
    for path in record_files(config["inputs"]["features"]):
        record = read_record(path)
        changes = settings_differences(config.get("feature_settings") or record.settings, record.settings)
        if changes:
            raise SettingsError(f"{path}: made with other settings than the features {run_dir} was trained on "
                                f"(run -> record: {'; '.join(changes)}); the folder was re-extracted since. Train "
                                "the run again on it, or restore the features it used.")
        slides.append({"slide_id": record.slide_id, "patient_id": record.patient_id, "path": path,
                       "n_tiles": record.n_tiles, "has_tiles": record.tile_features is not None})
    slides = pd.DataFrame(slides).set_index("slide_id")
    slides = slides[slides["patient_id"].isin(split.index)]
    return _Cohort(genes, targets.loc[split.index], split, slides, config["train"], config)


def _validation_patients(train_patients: list[str], fraction: float, seed: int) -> set[str]:
    from .train import validation_rows

    mask = validation_rows(len(train_patients), fraction, seed)
    return {p for p, held in zip(train_patients, mask) if held}


# --- frozen: tile features from the TFRecords ------------------------------------------------------


def tile_dataset(slides: pd.DataFrame, targets: pd.DataFrame, batch_size: int, shuffle: int | None, seed: int):
    """tf.data of (tile feature [B, 1, F], its patient's targets [B, G]), slides interleaved, shuffled;
    its length (batches) is declared, so Keras knows an epoch's size."""
    import tensorflow as tf

    from .records import parse_example

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


def _tile_statistics(data) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the tile features over one pass of `data` (streamed, float64)."""
    total = squares = None
    count = 0
    for x, _ in data:
        x = x.numpy().reshape(len(x), -1).astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        squares = (x ** 2).sum(0) if squares is None else squares + (x ** 2).sum(0)
        count += len(x)
    mean = total / count
    return mean, np.maximum(squares / count - mean ** 2, 1e-12)


def _frozen_model(cohort: _Cohort, train_slides: pd.DataFrame, train_targets: pd.DataFrame, seed: int):
    """The paper's head, on one tile's feature; standardised at tile level when the run was."""
    from .head import Standardization, build_head

    missing = train_slides.index[~train_slides["has_tiles"]]
    if len(missing):
        raise Hist2RNAError(f"{len(missing)} slides (e.g. {missing[0]}) have no per-tile features in "
                            f"{cohort.run_config['inputs']['features']}; re-run `hist2rna extract` with "
                            "--save-tile-features (or use --mode finetune).")
    scaling = None
    if cohort.train_config.get("standardize"):  # as the hist2RNA run did, at tile level
        mean, var = _tile_statistics(tile_dataset(train_slides, train_targets, 256, None, seed))
        y = train_targets.loc[train_slides["patient_id"]].to_numpy(np.float64)
        scaling = Standardization(mean, var, y.mean(0), np.maximum(y.var(0), 1e-12))
    return build_head(cohort.run_config["feature_dim"], len(cohort.genes), name="patch_baseline",
                      standardization=scaling)


def _predict_frozen(model, slides: pd.DataFrame) -> pd.DataFrame:
    """Each slide: the mean of its tiles' predictions (slides x genes)."""
    from .records import read_record

    rows = {}
    for slide_id, path in slides["path"].items():
        tiles = read_record(path).tile_features
        rows[slide_id] = np.asarray(model(tiles[:, None, :].astype(np.float32), training=False)).mean(0)
    return pd.DataFrame(rows).T


# --- finetune: the backbone trained on tile images ---------------------------------------------------


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
                    seed: int, slides_dir: Path, annotations_dir: Path | None) -> _Parts:
    """The backbone (trainable) + a linear output, and tile images streamed from the slides with the
    run's own tiling and stain settings."""
    import keras

    from .backbones import build_backbone
    from .features import annotation_for
    from .predict import run_extraction_config
    from .slides import find_slides
    from .stain import make_normaliser, resolve_stain_config

    extract = run_extraction_config(cohort.run_config)
    refs = {ref.slide_id: ref for ref in find_slides([slides_dir], extract.tiles.tile_size_px)}
    absent = [s for s in cohort.slides.index if s not in refs]
    if absent:
        raise Hist2RNAError(f"{len(absent)} slides of the run (e.g. {absent[0]}) are not under {slides_dir}; "
                            "give --slides the folder they were extracted from.")
    backbone = build_backbone(extract.backbone, extract.weights, extract.tiles.tile_size_px)
    backbone.model.trainable = True
    size = extract.tiles.tile_size_px
    inputs = keras.Input((size, size, 3), dtype="float32", name="tiles")
    outputs = keras.layers.Dense(len(cohort.genes), name="genes")(backbone.model(backbone.preprocess(inputs)))
    if cohort.train_config.get("standardize"):  # as the hist2RNA run did: genes learnt z-scored
        train = cohort.targets.loc[cohort.split.index[cohort.split == "train"]].to_numpy(np.float64)
        outputs = keras.layers.Normalization(axis=-1, mean=train.mean(0), variance=np.maximum(train.var(0), 1e-12),
                                             invert=True, name="unstandardize_genes")(outputs)
    model = keras.Model(inputs, outputs, name="patch_baseline_finetune")
    normaliser = make_normaliser(resolve_stain_config(extract.stain))
    annotations = {s: annotation_for(refs[s], annotations_dir) for s in cohort.slides.index}

    def images(slides: pd.DataFrame, with_targets: bool, shuffle: int | None, batch: int):
        target_of = (lambda s: cohort.targets.loc[cohort.slides.loc[s, "patient_id"]].to_numpy()) if with_targets else None
        return _image_dataset(refs, annotations, extract, normaliser, list(slides.index), target_of, batch, shuffle,
                              seed, config.tiles_per_slide)

    def predict(model, slides: pd.DataFrame) -> pd.DataFrame:
        return _predict_images(model, images(slides, False, None, batch_size * 4), list(slides.index))

    return _Parts(model, images(fit, True, config.image_shuffle_buffer, batch_size), images(val, True, None, batch_size),
                  predict)


def _image_dataset(refs, annotations, extract, normaliser, slide_ids, targets_of, batch_size, shuffle, seed,
                   tiles_per_slide):
    """tf.data of (normalised tiles [B, T, T, 3] float, targets [B, G]) or (tiles, slide index)."""
    import tensorflow as tf

    from .features import CohortStream

    stream = CohortStream([refs[s] for s in slide_ids], extract.tiles, [annotations[s] for s in slide_ids])
    size = extract.tiles.tile_size_px
    cap = tiles_per_slide or 10 ** 9
    y = np.stack([targets_of(s) for s in slide_ids]).astype(np.float32) if targets_of else None

    def slide_tiles(s):
        count = tf.minimum(tf.reshape(tf.numpy_function(stream.plan, [s], tf.int64, stateful=True), []), cap)
        return tf.data.Dataset.range(count).map(lambda i: (s, i))

    def load(s, i):
        tile = tf.ensure_shape(tf.numpy_function(stream.read, [s, i], tf.uint8, stateful=True), [size, size, 3])
        return tile, (tf.gather(y, s) if y is not None else s)

    def normalise(tiles, label):
        tiles, _ = normaliser(tiles)
        return tf.cast(tiles, tf.float32), label

    order = tf.data.Dataset.range(len(slide_ids))
    if shuffle:
        order = order.shuffle(len(slide_ids), seed=seed, reshuffle_each_iteration=True)
    # Slides are planned one after another (plan() is not thread-safe); tiles are read in parallel.
    data = order.flat_map(slide_tiles).map(load, num_parallel_calls=4, deterministic=True)
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
                         slides_dir: str | Path | None = None, annotations_dir: str | Path | None = None,
                         verbose: int = 0) -> dict:
    """Train the patch-based baseline on a hist2RNA run's patients, split and genes; write, under
    `out_dir`, the same files as a run (config.json, genes.txt, split.csv, history.csv, best.keras,
    test_predictions.csv, test_targets.csv) plus costs.csv. Returns the summary (config.json)."""
    import keras

    from .atomic import atomic_path
    from .evaluate import evaluate_run
    from .expression import average_by_patient
    from .predict import write_table
    from .train import run_folder, write_json

    if config.mode not in ("frozen", "finetune"):
        raise Hist2RNAError(f"unknown baseline mode {config.mode!r}; choose frozen or finetune.")
    if config.mode == "finetune" and slides_dir is None:
        raise Hist2RNAError("--mode finetune trains on tile images: give --slides (the run's slide folder).")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cohort = _cohort(run_dir)
    train_cfg = cohort.train_config
    batch_size = config.batch_size or int(train_cfg["batch_size"])
    max_epochs = config.max_epochs or int(train_cfg["max_epochs"])
    seed = int(train_cfg["seed"])
    keras.utils.set_random_seed(seed)
    train_patients = sorted(cohort.split.index[cohort.split == "train"])
    held = _validation_patients(train_patients, float(train_cfg["validation_fraction"]), seed)
    fit_slides = cohort.slides_of([p for p in train_patients if p not in held])
    val_slides = cohort.slides_of(held)
    test_slides = cohort.slides_of(cohort.split.index[cohort.split == "test"])

    if config.mode == "frozen":
        parts = _frozen_parts(cohort, fit_slides, val_slides, batch_size, config, seed)
    else:
        parts = _finetune_parts(cohort, fit_slides, val_slides, batch_size, config, seed, Path(slides_dir),
                                annotations_dir and Path(annotations_dir))
    model = parts.model

    with run_folder(Path(out_dir)) as out_dir:  # built aside, renamed into place only when complete
        model.compile(optimizer=keras.optimizers.Adam(float(train_cfg["learning_rate"])), loss="mse")
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(train_cfg["patience"]),
                                                   restore_best_weights=True),
                     keras.callbacks.CSVLogger(str(out_dir / "history.csv"))]
        start = time.perf_counter()
        with warnings.catch_warnings():  # image streams have no declared length: Keras learns it in epoch 1
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(parts.fit_data, validation_data=parts.val_data, epochs=max_epochs, callbacks=callbacks,
                                verbose=verbose, shuffle=False)  # the tf.data pipelines shuffle, seeded
        train_seconds = time.perf_counter() - start
        with atomic_path(out_dir / "best.keras") as tmp:  # the temp name keeps .keras, which Keras needs
            model.save(tmp)

        slide_predictions = parts.predict(model, test_slides)
        slide_predictions.columns = cohort.genes
        predictions = average_by_patient(slide_predictions, test_slides["patient_id"])
        predictions.index.name = "patient_id"
        write_table(predictions, out_dir / "test_predictions.csv")
        write_table(cohort.targets.loc[predictions.index].rename_axis("patient_id"), out_dir / "test_targets.csv")
        (out_dir / "genes.txt").write_text("\n".join(cohort.genes) + "\n")
        (out_dir / "split.csv").write_bytes((run_dir / "split.csv").read_bytes())
        cap = config.tiles_per_slide if config.mode == "finetune" and config.tiles_per_slide else 10 ** 9
        n_tiles = {name: int(frame["n_tiles"].clip(upper=cap).sum()) for name, frame in
                   (("train", fit_slides), ("validation", val_slides), ("test", test_slides))}
        costs = cost_table(cohort.run_config, train_seconds, len(history.history["loss"]), config)
        write_table(costs, out_dir / "costs.csv", index=False)
        summary = {"version": __version__, "approach": "patch-based", "baseline": asdict(config),
                   "hist2rna_run": str(run_dir), "inputs": cohort.run_config["inputs"], "train": train_cfg,
                   "batch_size": batch_size, "feature_dim": cohort.run_config["feature_dim"],
                   "feature_settings": cohort.run_config.get("feature_settings"), "genes": len(cohort.genes),
                   "patients": cohort.run_config["patients"], "tiles": n_tiles, "epochs": len(history.history["loss"]),
                   "best_val_loss": float(min(history.history["val_loss"])), "train_seconds": train_seconds,
                   "device": costs["device"].iloc[-1]}
        write_json(out_dir / "config.json", summary)
        summary["metrics"] = evaluate_run(out_dir)
    log.info("patch-based baseline: %d epochs in %.0f s; held-out median Spearman across genes %.2f",
             summary["epochs"], train_seconds, summary["metrics"]["across_genes"]["median"])
    return summary


def device_description() -> str:
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
        return f"{len(gpus)} x {names[0]}"
    return f"CPU ({os.cpu_count()} cores)"


def cost_table(run_config: dict, baseline_seconds: float, baseline_epochs: int, config: BaselineConfig) -> pd.DataFrame:
    """approach, device, n_devices, watts, epochs, seconds, hours, kwh: the hist2RNA run (when its
    config.json has train_seconds) and the baseline, energy = hours x watts x devices / 1000."""
    device = config.device or device_description()
    rows = []
    if "train_seconds" in run_config:
        rows.append(("hist2RNA (slide mean)", run_config["train_seconds"], run_config["epochs"]))
    rows.append((f"patch-based ({config.mode})", baseline_seconds, baseline_epochs))
    table = pd.DataFrame(rows, columns=["approach", "seconds", "epochs"])
    table.insert(1, "device", device)
    table.insert(2, "n_devices", config.n_devices)
    table.insert(3, "watts", config.device_watts)
    table["hours"] = table["seconds"] / 3600.0
    table["kwh"] = table["hours"] * table["watts"] * table["n_devices"] / 1000.0
    return table
