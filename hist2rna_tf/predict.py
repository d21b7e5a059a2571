"""Predicted log2 expression per patient, from stored features and a trained run or a head export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import Hist2RNAError

log = logging.getLogger(__name__)


class Predictor:
    """A trained head from a run folder (best.keras + genes.txt) or a `head` SavedModel export."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (self.path / "best.keras").is_file():  # a training run
            import keras

            self._model = keras.models.load_model(self.path / "best.keras", compile=False)
            self.genes = (self.path / "genes.txt").read_text().split()
            self.feature_dim = int(self._model.input_shape[-1])
            self._predict = lambda x: self._model(x[:, None, :], training=False)
        elif (self.path / "saved_model.pb").is_file():
            import tensorflow as tf

            model = tf.saved_model.load(str(self.path))
            meta = model.metadata()
            if "feature_dim" not in meta:
                raise Hist2RNAError(f"{self.path} is an end-to-end export (tiles in); predict from features needs "
                                    "the run folder or the head export.")
            self._model = model
            self.genes = [g.decode() for g in meta["genes"].numpy()]
            self.feature_dim = int(meta["feature_dim"].numpy())
            self._predict = lambda x: model.serve(tf.constant(x))["log2_expression"].numpy()
        else:
            raise Hist2RNAError(f"{self.path}: neither a training run (best.keras) nor a SavedModel export.")

    @property
    def model(self):
        """The underlying Keras head (run folders) or loaded SavedModel (exports)."""
        return self._model

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """features float [N, F] -> log2 expression [N, G]."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise Hist2RNAError(f"features of shape {features.shape} do not fit {self.path}: it expects "
                                f"[N, {self.feature_dim}] (the backbone it was trained on). Extract features with "
                                "the same backbone.")
        if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
            raise Hist2RNAError("features contain non-numeric, NaN or inf values.")
        return np.asarray(self._predict(features.astype(np.float32)))

    def extraction_config(self):
        """The ExtractConfig the run's training features were made with (to extract new slides alike)."""
        from .train import read_run_config

        return run_extraction_config(read_run_config(self.path))


def run_extraction_config(run_config: dict):
    """The ExtractConfig a training run's features were made with (from its config.json), unsharded."""
    from dataclasses import replace

    from .config import extract_config_from_dict

    saved = json.loads((Path(run_config["inputs"]["features"]) / "extract_config.json").read_text())["config"]
    return replace(extract_config_from_dict(saved), shard_index=0, shard_count=1)


def predict_patients(predictor: Predictor, features_dir: str | Path) -> pd.DataFrame:
    """Patients x genes (panel order) of predicted log2(1+RSEM); a patient's slides are averaged first."""
    from .expression import average_by_patient
    from .records import feature_table

    slide_features, patient_ids = feature_table(features_dir)
    patients = average_by_patient(slide_features, patient_ids)
    table = pd.DataFrame(predictor(patients.to_numpy()), index=patients.index, columns=predictor.genes)
    table.index.name = "patient_id"
    return table


def write_table(table: pd.DataFrame, path: str | Path, index: bool = True) -> Path:
    """CSV written atomically."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)
    return Path(path)
