"""Predicted log2 expression per patient, from stored features or from slides, with a trained run or a
head export. Features made otherwise than the model's training features are refused."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import write_table
from hist2rna_tf.errors import Hist2RNAError, ModelError
from hist2rna_tf.expression import average_by_patient
from hist2rna_tf.extract.cohort import extract_cohort
from hist2rna_tf.extract.extractor import has_gpu
from hist2rna_tf.extract.records import read_feature_folder, read_record
from hist2rna_tf.extract.settings import Extraction, FeatureSettings, require_same
from hist2rna_tf.model import runs
from hist2rna_tf.model.bags import (cluster_groups, patient_groups, predict_bags, predict_clusters,
                                    require_tile_features, with_attention)
from hist2rna_tf.model.heads import CLUSTERS, DEFAULT_HEAD, head_entry, head_settings
from hist2rna_tf.model.heads.clusters import too_few_tiles

log = logging.getLogger(__name__)


class Predictor:
    """A trained head from a run folder (best.keras, genes.txt and its record) or a `head` SavedModel
    export."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.record: runs.RunRecord | None = None  # a run's; None for an export
        if runs.is_run(self.path):  # a training run
            self.record = runs.read_record(self.path)
            self.head = head_entry(self.record.train.head)
            self.head.load()  # its layers known to Keras before the model is loaded
            self._model = _load_keras(runs.model_path(self.path))
            self.genes = runs.read_genes(self.path)
            self.feature_dim = int(self.record.feature_dim)
            self._predict = lambda x: self._model(x[:, None, :], training=False)
            self.feature_settings = runs.feature_settings(self.path, self.record)
        elif (self.path / "saved_model.pb").is_file():
            import tensorflow as tf

            model = tf.saved_model.load(str(self.path))
            meta = model.metadata()
            if "feature_dim" not in meta:
                raise Hist2RNAError(f"{self.path} is an end-to-end export: it takes one slide's tiles (serve it, or "
                                    "call tf.saved_model.load(...).serve(tiles)). `hist2rna predict` takes the training "
                                    "run folder (features or slides) or the head export (features).")
            self._model = model
            self.head = head_entry(meta["head"].numpy().decode() if "head" in meta else DEFAULT_HEAD)
            self.genes = [g.decode() for g in meta["genes"].numpy()]
            self.feature_dim = int(meta["feature_dim"].numpy())
            self._predict = lambda x: model.serve(tf.constant(x))["log2_expression"].numpy()
            self.feature_settings = FeatureSettings.from_metadata(meta)
        else:
            runs.refuse_crossval(self.path)
            raise Hist2RNAError(f"{self.path}: neither a training run (best.keras) nor a SavedModel export.")

    @property
    def trained_on_random_weights(self) -> bool:
        """Whether its training features came from a catalog backbone with random weights (the demo's)."""
        return self.feature_settings is not None and self.feature_settings.named_backbone_with_random_weights

    @property
    def model(self):
        """The underlying Keras head (run folders) or loaded SavedModel (exports)."""
        return self._model

    @property
    def reads_tiles(self) -> bool:
        """Whether its head reads every tile (heads.BAG, or SEQUOIA's cluster means of them) rather than
        the slide mean."""
        return self.head.reads_tiles

    @property
    def clusters(self) -> int | None:
        """SEQUOIA's head: the cluster means a slide gives it (K); None for the other heads."""
        if self.head.reads != CLUSTERS:
            return None
        if self.record is not None:
            return int(head_settings(self.head.name, self.record.head_settings).clusters)
        return int(self._model.metadata()["clusters"].numpy())

    def predict_bags(self, groups: list[list[str]], progress: bool = False) -> np.ndarray:
        """Bags (each patient's record files, with tile features) -> log2 expression [N, G]; SEQUOIA's
        head: the mean of the patient's slides' predictions from their cluster means."""
        if self.head.reads == CLUSTERS:
            groups = cluster_groups(groups, self.clusters, progress)
            if self.record is not None:
                return predict_clusters(self._model, groups, self.feature_dim, self.clusters)
            rows = [np.mean([self._predict(np.load(f)) for f in files], axis=0) for files in groups]
        elif self.record is not None:
            return predict_bags(self._model, groups, self.feature_dim)
        else:  # a head export serves one bag a call
            rows = [self._predict(np.concatenate([read_record(f).tile_features for f in files]).astype(np.float32))
                    for files in groups]
        return np.stack(rows) if rows else np.zeros((0, len(self.genes)), np.float32)

    def tile_values(self, tile_features: np.ndarray, tile_xy_px: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One slide's tiles [N, F] -> each tile's own prediction [N, G] and, for a head that reads every
        tile, each tile's attention in the slide's bag [N] (else None). A bag head predicts a tile as a
        bag of that one tile; the paper's head, a tile's feature as if it were a slide mean; SEQUOIA's,
        the mean of the windows of tiles around it (their sliding-window method; `tile_xy_px` needed)."""
        tiles = np.asarray(tile_features, np.float32)
        if not self.reads_tiles:
            return self(tiles), None
        if self.record is None:
            raise Hist2RNAError(f"{self.path} is a head export; tile maps need the training run folder.")
        if self.head.reads == CLUSTERS:
            from hist2rna_tf.model.heads.sequoia import tile_grid, window_predictions

            return window_predictions(self._model, tiles, tile_grid(tile_xy_px)), None
        each = np.asarray(self._model({"tiles": tiles[:, None, :], "mask": np.ones((len(tiles), 1), np.float32)},
                                      training=False))
        attention = with_attention(self._model)({"tiles": tiles[None], "mask": np.ones((1, len(tiles)), np.float32)},
                                                training=False)[1]
        return each, np.asarray(attention)[0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """features float [N, F] (slide or patient means) -> log2 expression [N, G]; a head that reads
        every tile is called with `predict_bags`."""
        if self.reads_tiles:
            raise Hist2RNAError(f"{self.path}: its {self.head.name} head reads every tile, not a mean feature; "
                                "predict from feature records (with tile features).")
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise Hist2RNAError(f"features of shape {features.shape} do not fit {self.path}: it expects "
                                f"[N, {self.feature_dim}] (the backbone it was trained on). Extract features with "
                                "the same backbone.")
        if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
            raise Hist2RNAError("features contain non-numeric, NaN or inf values.")
        return np.asarray(self._predict(features.astype(np.float32)))

    def extraction(self) -> Extraction:
        """How the run's training features were made (to extract new slides alike, or to export)."""
        if self.record is None:
            raise Hist2RNAError(f"{self.path} is a head export: it takes features (--features) but does not say how "
                                "to extract slides; give the training run folder to predict from slides.")
        return runs.extraction(self.path, self.record)

    def check_features(self, settings: FeatureSettings, source) -> None:
        """Refuse features made otherwise (normaliser, backbone, weights, tile size) than the ones the
        head was trained on; a SettingsError names each difference and the fix."""
        if self.feature_settings is None:
            made_by = f"hist2rna-tf {self.record.version}" if self.record else "hist2rna-tf before 0.2.0"
            log.warning("%s records no feature settings (made by %s): cannot check that %s were extracted like its "
                        "training features.", self.path, made_by, source)
            return
        require_same(self.feature_settings, settings, source, f"the features {self.path} was trained on",
                     "extract them with the model's settings (`hist2rna predict RUN --slides ...` does), or use a "
                     "model trained on features like these.")


def _load_keras(path: Path):
    """A run's head, or a ModelError naming the file: corrupt, truncated, or refused by Keras' safe mode
    (a Lambda layer or other code inside it; the package never writes one)."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError, OSError, zipfile or TypeError alike
        raise ModelError(f"{path}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}). It may be truncated "
                         "or not written by `hist2rna train`; train the run again (or copy the folder again).") from None


def predict_patients(predictor: Predictor, features_dir: str | Path | list) -> pd.DataFrame:
    """Patients x genes (panel order) of predicted log2(1+RSEM); a patient's slides are averaged first.
    Features made otherwise than the model's training features are refused (SettingsError)."""
    folder = read_feature_folder(features_dir)
    slide_features, patient_ids, settings = folder.features, folder.patient_ids, folder.settings
    predictor.check_features(settings, features_dir if isinstance(features_dir, (str, Path)) else
                             f"the features of {len(slide_features)} slides")
    patients = average_by_patient(slide_features, patient_ids)
    if predictor.reads_tiles:
        source = features_dir if isinstance(features_dir, (str, Path)) else "the features"
        require_tile_features(folder.slides, source, predictor.head.name)
        if predictor.clusters:
            too_few_tiles(folder.slides, predictor.clusters, source)
        predicted = predictor.predict_bags(patient_groups(folder.slides, patients.index))
    else:
        predicted = predictor(patients.to_numpy())
    table = pd.DataFrame(predicted, index=patients.index, columns=predictor.genes)
    table.index.name = "patient_id"
    return table


def predict_slides(predictor: Predictor, slides: list[str | Path], features_out: str | Path,
                   annotations_dir: str | Path | None = None, mpp: float | None = None,
                   progress: bool = False) -> tuple[pd.DataFrame | None, list]:
    """Extract `slides` with the settings the run's training features were made with (its record:
    backbone, weights, tiling, stain; `mpp` for files that carry none) into `features_out`
    (resumable, as `hist2rna extract`), then predict every patient with a usable record. Returns
    (patients x genes, or None when no slide gave features; the extraction's manifest rows)."""
    config = predictor.extraction().for_new_slides()
    if predictor.reads_tiles:  # its head reads every tile
        config = replace(config, save_tile_features=True)
    if mpp is not None:
        config = replace(config, tiles=replace(config.tiles, mpp_override=mpp))
    if (config.precision != "float32" or config.xla) and not has_gpu():
        log.info("the run's features were extracted on a GPU (--precision %s%s); without one here, these slides are "
                 "extracted in float32 (the same features to float rounding).", config.precision,
                 ", --xla" if config.xla else "")
        config = replace(config, precision="float32", xla=False)
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
