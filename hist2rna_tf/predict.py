"""Predicted log2 expression per patient, from stored features and a trained run or a head export."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import runs
from .atomic import write_table
from .config import BACKBONE_NAMES, extract_config_from_dict
from .errors import Hist2RNAError, ModelError, SettingsError
from .expression import average_by_patient

log = logging.getLogger(__name__)


class Predictor:
    """A trained head from a run folder (best.keras + genes.txt) or a `head` SavedModel export."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if runs.is_run(self.path):  # a training run
            self._model = _load_keras(runs.model_path(self.path))
            self.genes = runs.read_genes(self.path)
            self.feature_dim = int(self._model.input_shape[-1])
            self._predict = lambda x: self._model(x[:, None, :], training=False)
            self.feature_settings = _run_feature_settings(self.path)
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
            self.feature_settings = _export_feature_settings(meta)
        else:
            raise Hist2RNAError(f"{self.path}: neither a training run (best.keras) nor a SavedModel export.")

    @property
    def trained_on_random_weights(self) -> bool:
        """Whether its training features came from a built-in backbone with random weights (the demo's)."""
        settings = self.feature_settings or {}
        return settings.get("weights") == "none" and settings.get("backbone") in BACKBONE_NAMES

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
        return run_extraction_config(runs.read_config(self.path))

    def check_features(self, settings: dict, source) -> None:
        """Refuse features made otherwise (normaliser, backbone, weights, tile size) than the ones the
        head was trained on; a SettingsError names each difference and the fix."""
        from .records import settings_differences

        if self.feature_settings is None:
            log.warning("%s records no feature settings (made by an older version): cannot check that %s were "
                        "extracted like its training features.", self.path, source)
            return
        changes = settings_differences(self.feature_settings, settings)
        if changes:
            raise SettingsError(f"{source}: made with other settings than the features {self.path} was trained on "
                                f"(model -> these features: {'; '.join(changes)}). Extract them with the model's "
                                "settings (`hist2rna predict --model RUN --slides ...` does), or use a model trained "
                                "on features like these.")


def _load_keras(path: Path):
    """A run's head, or a ModelError naming the file: corrupt, truncated, or refused by Keras' safe mode
    (a Lambda layer or other code inside it; the package never writes one)."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError, OSError, zipfile or TypeError alike
        raise ModelError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}). It may be truncated "
                         "or not written by `hist2rna train`; train the run again (or copy the folder again).") from None


def _run_feature_settings(run_dir: Path) -> dict | None:
    """The feature settings a run was trained on: recorded in its config.json (runs made before 0.2.0:
    read from its features folder's extract_config.json); None when neither says."""
    from .features import extraction_settings, read_extract_config

    try:
        config = runs.read_config(run_dir)
    except Hist2RNAError:  # a model folder without a run's config.json: nothing to check against
        return None
    if "feature_settings" in config:
        return config["feature_settings"]
    try:
        return extraction_settings(read_extract_config(runs.extract_config_path(config)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _export_feature_settings(meta: dict) -> dict | None:
    """A head export's feature settings (exports made before 0.2.0 carry none)."""
    from .records import FEATURE_SETTINGS, feature_settings

    if not all(key in meta for key in FEATURE_SETTINGS):
        return None
    text = {key: meta[key].numpy().decode() for key in ("backbone", "weights", "normaliser")}
    return feature_settings(**text, tile_size_px=int(meta["tile_size_px"].numpy()),
                            tile_size_um=float(meta["tile_size_um"].numpy()))


def run_extraction_config(run_config: dict):
    """The ExtractConfig a training run's features were made with (from its features folder's
    extract_config.json), unsharded. A SettingsError when that folder has since been re-extracted
    with other settings than the run was trained on (its config.json's feature_settings)."""
    from dataclasses import replace

    from .features import extraction_settings, read_extract_config
    from .records import settings_differences

    path = runs.extract_config_path(run_config)
    try:
        saved = read_extract_config(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Hist2RNAError(f"{path}: the run's extraction settings cannot be read ({type(exc).__name__}); the run "
                            "needs its features folder as it was when it was trained.") from None
    trained_on = run_config.get("feature_settings")
    changes = settings_differences(trained_on, extraction_settings(saved)) if trained_on else []
    if changes:
        raise SettingsError(f"{path.parent} now holds features made with other settings than the run was trained "
                            f"on (run -> folder: {'; '.join(changes)}); new slides would be extracted unlike its "
                            "training features. Train again on this folder, or restore the one the run used.")
    return replace(extract_config_from_dict(saved["config"]), shard_index=0, shard_count=1)


def predict_patients(predictor: Predictor, features_dir: str | Path) -> pd.DataFrame:
    """Patients x genes (panel order) of predicted log2(1+RSEM); a patient's slides are averaged first.
    Features made otherwise than the model's training features are refused (SettingsError)."""
    from .records import feature_table

    slide_features, patient_ids, settings = feature_table(features_dir)
    predictor.check_features(settings, features_dir if isinstance(features_dir, (str, Path)) else
                             f"the features of {len(slide_features)} slides")
    patients = average_by_patient(slide_features, patient_ids)
    table = pd.DataFrame(predictor(patients.to_numpy()), index=patients.index, columns=predictor.genes)
    table.index.name = "patient_id"
    return table


def predict_slides(predictor: Predictor, slides: list[str | Path], features_out: str | Path,
                   annotations_dir: str | Path | None = None, mpp: float | None = None,
                   progress: bool = False) -> tuple[pd.DataFrame | None, list]:
    """Extract `slides` with the settings of the run `predictor` came from (backbone, weights, tiling,
    stain; `mpp` for files that carry none) into `features_out` (resumable, as `hist2rna extract`),
    then predict every patient with a usable record. Returns (patients x genes, or None when no slide
    gave features; the extraction's manifest rows)."""
    from dataclasses import replace

    from .features import extract_cohort

    config = predictor.extraction_config()
    if mpp is not None:
        config = replace(config, tiles=replace(config.tiles, mpp_override=mpp))
    results = extract_cohort(slides, features_out, config, annotations_dir, progress=progress)
    done = [r.record for r in results if r.status in ("done", "skipped")]
    return (predict_patients(predictor, done) if done else None), results


def slides_features_dir(out_csv: str | Path) -> Path:
    """Where `hist2rna predict --slides` keeps the slides' features: `<out>_features/` beside the CSV."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + "_features")


def write_predictions(model: str | Path, features: str | Path, out_csv: str | Path) -> Path:
    """Predict every patient of a features folder with a run (or head export); write the CSV."""
    return write_table(predict_patients(Predictor(model), features), out_csv)
