"""The feature TFRecord schema, in one place: write (temp file + rename) and parse, side by side.

One file per slide, `<out>/<backbone>/<slide_id>.tfrecord`, holding one tf.train.Example:

  slide_id, patient_id, backbone, weights, normaliser, version      bytes
  tile_size_px, n_tiles, n_unnormalised, feature_dim                 int64
  tile_size_um, mpp                                                  float (mpp: level-0 um/px read)
  feature                                                            float[feature_dim] (mean of tiles)
  tile_x_px, tile_y_px                                               int64[n_tiles] (level-0, top-left)
  tile_features (optional)                                           float[n_tiles * feature_dim]
  tile_names (optional)                                              bytes[n_tiles] (a spot's barcode)
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from hist2rna_tf.atomic import atomic_path
from hist2rna_tf.errors import RecordError
from hist2rna_tf.extract.settings import (EXTRACT_CONFIG_FILE, Extraction, FeatureSettings, current_normaliser_tag,
                                          differences, extraction_path, read_extraction, require_same)

log = logging.getLogger(__name__)

def _settings_of(kind: type) -> tuple[str, ...]:
    """FeatureSettings' fields of type `kind`, in its order: a record stores them under their own names."""
    hints = typing.get_type_hints(FeatureSettings)
    return tuple(f.name for f in fields(FeatureSettings) if hints[f.name] is kind)


# A record's keys by type: the slide's, FeatureSettings' own (their form: settings.py), the extraction's.
_BYTES = ("slide_id", "patient_id", *_settings_of(str), "version")
_INTS = (*_settings_of(int), "n_tiles", "n_unnormalised", "feature_dim")
_FLOATS = (*_settings_of(float), "mpp")
_SETTINGS = tuple(f.name for f in fields(FeatureSettings))  # stored under their own names, one key each


@dataclass
class SlideFeatures:
    """What is stored for one slide (see the module docstring for units): how its features were made
    (`settings`, the one FeatureSettings), where its tiles were, and the features."""

    slide_id: str
    patient_id: str
    settings: FeatureSettings  # backbone, weights, normaliser, tile size in px and um
    version: str
    mpp: float
    n_tiles: int
    n_unnormalised: int
    feature: np.ndarray  # float32 [F]
    tile_xy_px: np.ndarray  # int64 [n_tiles, 2]
    tile_features: np.ndarray | None = field(default=None)  # float32 [n_tiles, F]
    tile_names: np.ndarray | None = field(default=None)  # str [n_tiles]: spot records' barcodes (spots/features.py)

    @property
    def feature_dim(self) -> int:
        return int(self.feature.shape[0])

    # The settings' fields, read through (a record is asked for its backbone or tile size often).
    backbone = property(lambda self: self.settings.backbone)
    weights = property(lambda self: self.settings.weights)
    normaliser = property(lambda self: self.settings.normaliser)
    tile_size_px = property(lambda self: self.settings.tile_size_px)
    tile_size_um = property(lambda self: self.settings.tile_size_um)


def record_path(out_dir: str | Path, backbone: str, slide_id: str) -> Path:
    return Path(out_dir) / backbone / f"{slide_id}.tfrecord"


def _bytes(value: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).ravel().tolist()))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def to_example(record: SlideFeatures) -> tf.train.Example:
    features = {key: _bytes(getattr(record, key)) for key in _BYTES}
    features.update({key: _ints([getattr(record, key)]) for key in _INTS})
    features.update({key: _floats([getattr(record, key)]) for key in _FLOATS})
    features["feature"] = _floats(record.feature)
    features["tile_x_px"] = _ints(record.tile_xy_px[:, 0])
    features["tile_y_px"] = _ints(record.tile_xy_px[:, 1])
    if record.tile_features is not None:
        features["tile_features"] = _floats(record.tile_features)
    if record.tile_names is not None:
        features["tile_names"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[str(name).encode() for name in record.tile_names]))
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_record(record: SlideFeatures, path: str | Path) -> Path:
    """Write atomically: a temp file in the same folder, then rename over `path`."""
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        writer.write(to_example(record).SerializeToString(deterministic=True))  # same bytes in any process
    return Path(path)


# --- parsing --------------------------------------------------------------------------------------

FEATURE_SPEC = {
    **{key: tf.io.FixedLenFeature([], tf.string) for key in _BYTES},
    **{key: tf.io.FixedLenFeature([], tf.int64) for key in _INTS},
    **{key: tf.io.FixedLenFeature([], tf.float32) for key in _FLOATS},
    "feature": tf.io.VarLenFeature(tf.float32),
    "tile_x_px": tf.io.VarLenFeature(tf.int64),
    "tile_y_px": tf.io.VarLenFeature(tf.int64),
    "tile_features": tf.io.VarLenFeature(tf.float32),
    "tile_names": tf.io.VarLenFeature(tf.string),
}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """A serialized Example -> dict of tensors (dense), usable inside tf.data.map."""
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    for key in ("feature", "tile_x_px", "tile_y_px", "tile_features", "tile_names"):
        parsed[key] = tf.sparse.to_dense(parsed[key])
    return parsed


def read_record(path: str | Path) -> SlideFeatures:
    """One slide's stored features (eagerly, as numpy)."""
    try:
        return record_from(parse_example(next(iter(tf.data.TFRecordDataset(str(path))))))
    except (StopIteration, tf.errors.OpError) as exc:
        raise RecordError(f"{path}: not a readable feature record ({type(exc).__name__}); delete it and "
                          "re-run extraction.") from None


def record_from(parsed: dict[str, tf.Tensor]) -> SlideFeatures:
    """`parse_example`'s tensors as SlideFeatures (numpy)."""
    values = {key: parsed[key].numpy().decode() for key in _BYTES}
    values["normaliser"] = current_normaliser_tag(values["normaliser"], values["version"])  # older names
    values.update({key: int(parsed[key].numpy()) for key in _INTS if key != "feature_dim"})
    values.update({key: float(parsed[key].numpy()) for key in _FLOATS})
    dim = int(parsed["feature_dim"].numpy())
    tile_features = parsed["tile_features"].numpy()
    settings = FeatureSettings(**{key: values.pop(key) for key in _SETTINGS})
    return SlideFeatures(
        **values, settings=settings,
        feature=parsed["feature"].numpy(),
        tile_xy_px=np.stack([parsed["tile_x_px"].numpy(), parsed["tile_y_px"].numpy()], axis=1),
        tile_features=tile_features.reshape(-1, dim) if tile_features.size else None,
        tile_names=np.array([n.decode() for n in parsed["tile_names"].numpy()]) if parsed["tile_names"].shape[0] else None,
    )


def read_records(files: list[str]) -> Iterator[SlideFeatures]:
    """Each file's record, in order, the files read and parsed as one tf.data stream (a dataset a file, read
    eagerly, costs ~20 ms): a file that cannot be read, or holds no record, is named as `read_record` names it."""
    stream = tf.data.Dataset.from_tensor_slices(files).flat_map(
        lambda name: tf.data.TFRecordDataset(name).take(1).map(lambda raw: (name, parse_example(raw))))
    done = 0
    try:
        for name, parsed in stream:
            if name.numpy().decode() != files[done]:  # the file before it gave no record
                break
            yield record_from(parsed)
            done += 1
    except tf.errors.OpError:
        pass
    for path in files[done:]:  # from the first file the stream could not read: one at a time, the bad one named
        yield read_record(path)


def is_record_file(path: Path) -> bool:
    """A feature record, not the hidden temp file of a write in progress (or one a killed run left)."""
    return path.suffix == ".tfrecord" and not path.name.startswith(".")


def record_files(paths: str | Path | list) -> list[str]:
    """TFRecord files from files and folders (a folder is searched recursively, hidden names, such as
    the temp files of a write in progress or interrupted, left out), sorted."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files.extend(sorted(f for f in item.rglob("*.tfrecord") if is_record_file(f)))
        elif item.is_file():
            files.append(item)
    if not files:
        raise RecordError(f"no .tfrecord files under {', '.join(map(str, items))}; run `hist2rna extract` first.")
    return [str(f) for f in sorted(files)]


def feature_dataset(paths: str | Path | list) -> tf.data.Dataset:
    """A tf.data.Dataset of (features float32 [1, F], ids) per slide, streamed from TFRecords.

    `ids` is a dict of scalar string tensors: slide_id, patient_id, backbone. The [1, F] shape is
    the paper's head input (a length-1 sequence of F channels).
    """
    files = record_files(paths)

    def to_pair(serialized):
        parsed = parse_example(serialized)
        features = tf.reshape(parsed["feature"], [1, -1])
        ids = {key: parsed[key] for key in ("slide_id", "patient_id", "backbone")}
        return features, ids

    return tf.data.TFRecordDataset(files).map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)


@dataclass
class FeatureFolder:
    """A folder's records read once: slides x F mean features (indexed by slide_id), slide_id ->
    patient_id, the FeatureSettings they share, and slide_id -> path, patient_id, n_tiles,
    has_tile_features (which records a head that reads every tile can stream)."""

    features: pd.DataFrame
    patient_ids: pd.Series
    settings: FeatureSettings
    slides: pd.DataFrame


def read_feature_folder(paths: str | Path | list) -> FeatureFolder:
    """Every record under `paths`, one at a time (a record's tiles never kept). Records made with other
    settings than the first (backbone, weights, normaliser, tile size) are refused: they cannot share
    one head."""
    files = record_files(paths)
    records, has_tiles = [], []
    for record in read_records(files):
        has_tiles.append(record.tile_features is not None)
        records.append(_without_tiles(record))  # one record's tiles in memory at a time
    settings = records[0].settings
    for path, record in zip(files[1:], records[1:]):
        require_same(settings, record.settings, path, files[0],
                     "one head cannot use both. Point at one extraction's folder, or extract the others again with "
                     "the same settings.")
    if len({r.feature_dim for r in records}) != 1:
        raise RecordError(f"records under {paths} mix feature sizes ({sorted({r.feature_dim for r in records})}); "
                          "point at one backbone's folder.")
    index = pd.Index([r.slide_id for r in records], name="slide_id")
    patients = pd.Series([r.patient_id for r in records], index=index, name="patient_id")
    slides = pd.DataFrame({"path": files, "patient_id": patients.to_numpy(), "n_tiles": [r.n_tiles for r in records],
                           "has_tile_features": has_tiles}, index=index)
    return FeatureFolder(pd.DataFrame(np.stack([r.feature for r in records]), index=list(index)),
                         patients.rename_axis(None), settings, slides)


def feature_table(paths: str | Path | list):
    """All stored slide features as (DataFrame slides x F indexed by slide_id, Series slide_id ->
    patient_id, the FeatureSettings they share): `read_feature_folder`'s first three.

    Slide-level features are small (one vector a slide), so this reads them eagerly.
    """
    folder = read_feature_folder(paths)
    return folder.features, folder.patient_ids, folder.settings


def _without_tiles(record: SlideFeatures) -> SlideFeatures:
    record.tile_features = None
    return record


def folder_extraction(features_dir, settings: FeatureSettings) -> Extraction | None:
    """How a features folder's records were made (its extract_config.json), for a run to keep; None when
    the folder has none (records written by another tool) or it disagrees with its records (warned)."""
    folders = sorted({Path(f).parent for f in record_files(features_dir)})
    saved = [read_extraction(folder) for folder in folders if extraction_path(folder).is_file()]
    if not saved:
        log.warning("%s has no %s: the run cannot extract new slides alike (predict --slides, export); predict "
                    "from features extracted with its settings instead.", features_dir, EXTRACT_CONFIG_FILE)
        return None
    changes = differences(settings, saved[0].features)
    if changes:
        log.warning("%s: its %s disagrees with its records (%s); the run keeps only the records' settings.",
                    folders[0], EXTRACT_CONFIG_FILE, "; ".join(changes))
        return None
    return saved[0]
