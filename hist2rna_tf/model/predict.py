"""Predicted log2 expression per patient, from stored features or from slides, with a trained run or a
head export. Features made otherwise than the model's training features are refused."""

from __future__ import annotations

import json
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
from hist2rna_tf.extract.records import read_feature_folder
from hist2rna_tf.extract.settings import Extraction, FeatureSettings, require_same
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads import DEFAULT_HEAD, head_entry, head_settings
from hist2rna_tf.model.inputs import input_kind

log = logging.getLogger(__name__)


class Predictor:
    """A trained head from a run folder (best.keras, genes.txt and its record) or a `head` SavedModel
    export."""

    def __init__(self, path: str | Path):
        self.path, meta = Path(path), {}
        self.record: runs.RunRecord | None = None  # a run's; None for an export
        if runs.is_run(self.path):  # a training run
            self.record = runs.read_record(self.path)
            entry, saved = head_entry(self.record.train.head), self.record.head_settings
            entry.load()  # its layers known to Keras before the model is loaded
            self._model = _load_keras(runs.model_path(self.path))
            self.genes = runs.read_genes(self.path)
            self.feature_dim = int(self.record.feature_dim)
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
            entry = head_entry(meta["head"].numpy().decode() if "head" in meta else DEFAULT_HEAD)
            saved = json.loads(meta["head_settings"].numpy().decode()) if "head_settings" in meta else {}
            self.genes = [g.decode() for g in meta["genes"].numpy()]
            self.feature_dim = int(meta["feature_dim"].numpy())
            self.feature_settings = FeatureSettings.from_metadata(meta)
        else:
            runs.refuse_crossval(self.path)
            raise Hist2RNAError(f"{self.path}: neither a training run (best.keras) nor a SavedModel export.")
        # what its head reads, with its settings as recorded (read here, once)
        self.kind = input_kind(entry, head_settings(entry.name, saved), self.feature_dim)
        spots = self.record.spots if self.record is not None else None
        if self.record is None and "units" in meta:  # a spot run's head export
            spots = {"targets": meta["units"].numpy().decode(), "context_um": float(meta["context_um"].numpy())}
        self.spots = spots  # a spot run's (spot_run/): its units and its neighbourhood; None for bulk runs
        self.context_um = float(spots.get("context_um") or 0) if spots else 0.0
        self.units = spots["targets"] if spots else "log2(1+RSEM)"

    @property
    def spot_run(self) -> bool:
        """Whether it was trained on spots (spot_run/): its values are a spot's log1p counts."""
        return self.spots is not None

    @property
    def head(self):
        """Its head's registry entry."""
        return self.kind.entry

    @property
    def trained_on_random_weights(self) -> bool:
        """Whether its training features came from a catalog backbone with random weights (the demo's)."""
        return self.feature_settings is not None and self.feature_settings.named_backbone_with_random_weights

    @property
    def model(self):
        """The underlying Keras head (run folders) or loaded SavedModel (exports)."""
        return self._model

    def _serve(self, x):
        return self._model.serve(x)["log2_expression"].numpy()

    def predict(self, examples) -> np.ndarray:
        """The patients' predicted log2 expression [N, G]; `examples`: as its head reads them
        (`self.kind.examples`)."""
        if not len(examples):
            return np.zeros((0, len(self.genes)), np.float32)
        if self.record is None:
            return self.kind.predict_served(self._serve, examples)
        return self.kind.predict(self._model, examples)

    def tile_values(self, tile_features: np.ndarray, tile_xy_px: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One slide's tiles [N, F] -> each tile's own prediction [N, G] and, for a head that reads every
        tile, each tile's attention in the slide's bag [N] (else None); how, its input kind says (the
        paper's head: a tile's feature as if it were a slide mean; a bag head: a bag of that one tile;
        SEQUOIA's: the mean of the windows of tiles around it, `tile_xy_px` needed)."""
        if self.record is None:
            return self.kind.served_tile_values(self._serve, tile_features, self.path)
        return self.kind.tile_values(self._model, tile_features, tile_xy_px)

    def record_values(self, record, source) -> tuple[np.ndarray, np.ndarray | None]:
        """`tile_values` of a record's tiles (a slide's, or a sample's spots), each with its neighbourhood
        where the run reads one (model/inputs/context.py)."""
        from hist2rna_tf.model.inputs.context import with_context

        if record.tile_features is None:
            raise Hist2RNAError(f"{source}: its record has no per-tile features; extract with --save-tile-features "
                                "(extract-spots records always have them).")
        features = with_context(record.tile_features, record.tile_xy_px, record.mpp, self.context_um, source,
                                spots=record.tile_names is not None)
        return self.tile_values(features, record.tile_xy_px)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """features float [N, F] (slide or patient means) -> log2 expression [N, G], for a head that reads
        the mean (a head that reads every tile predicts from records: `predict_patients`)."""
        return self.predict(self.kind.from_means(features, self.path))

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
    source = features_dir if isinstance(features_dir, (str, Path)) else "the features"
    predicted = predictor.predict(predictor.kind.examples(patients, folder.slides, source))
    table = pd.DataFrame(predicted, index=patients.index, columns=predictor.genes)
    table.index.name = "patient_id"
    return table


def predict_slides(predictor: Predictor, slides: list[str | Path], features_out: str | Path,
                   annotations_dir: str | Path | None = None, mpp: float | None = None,
                   progress: bool = False) -> tuple[pd.DataFrame | None, list]:
    """Extract `slides` with the settings the run's training features were made with (its record:
    backbone, weights, tiling, stain; `mpp` for files that carry none) into `features_out`
    (resumable, as `hist2rna extract`), then predict every patient with a usable record (a spot run: every
    tile, `predict_tiles`). Returns (patients x genes, or tiles; None when no slide gave features; the
    extraction's manifest rows)."""
    config = predictor.extraction().for_new_slides()
    if predictor.kind.tile_features or predictor.spot_run:  # its head reads every tile, or predicts each
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
    predict = predict_tiles if predictor.spot_run else predict_patients  # a spot run: every tile's own
    return (predict(predictor, done) if done else None), results


ATTENTION_COLUMN = "attention"


def tile_predictions(predictor, record) -> pd.DataFrame:
    """Tiles x genes of predicted log2 expression, with the tiles' level-0 x, y (top-left, pixels) and,
    for a head that reads every tile, each tile's attention weight (summing to 1 over the slide)."""
    if record.tile_features is None:
        raise Hist2RNAError(f"slide {record.slide_id}: its record has no per-tile features; extract with "
                            "--save-tile-features to predict or map each tile.")
    values, attention = predictor.record_values(record, f"slide {record.slide_id}")
    table = pd.DataFrame(values, columns=predictor.genes)
    if attention is not None:  # a head that reads every tile: each tile's weight in the slide's bag
        table.insert(0, ATTENTION_COLUMN, attention)
    table.insert(0, "y", record.tile_xy_px[:, 1])
    table.insert(0, "x", record.tile_xy_px[:, 0])
    placed = np.isfinite(values).all(axis=1)  # SEQUOIA's windows leave sparse tiles without a value
    if not placed.all():
        log.warning("slide %s: %d of %d tiles lie in no window of SEQUOIA's spatial method (more than half of its "
                    "places filled); they are left out of its maps and tables.", record.slide_id, int((~placed).sum()),
                    len(placed))
    return table[placed]  # the index: each tile's row in the record (Picture.placed)


def predict_tiles(predictor: Predictor, features_dir: str | Path | list) -> pd.DataFrame:
    """Every tile's (or spot's) own prediction (`tile_predictions`): rows of slide_id, tile (its row in the
    record), x, y (its level-0 top-left), barcode (spot records) and the genes; what a spot run predicts on
    a slide (a virtual spatial map). Records made otherwise than the run's are refused."""
    from hist2rna_tf.extract.records import read_record, record_files

    tables = []
    for path in record_files(features_dir):
        record = read_record(path)
        predictor.check_features(record.settings, path)
        table = tile_predictions(predictor, record).rename_axis("tile").reset_index()
        if record.tile_names is not None:
            table.insert(3, "barcode", record.tile_names[table["tile"].to_numpy()])
        table.insert(0, "slide_id", record.slide_id)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def slides_features_dir(out_csv: str | Path) -> Path:
    """Where `hist2rna predict --slides` keeps the slides' features: `<out>_features/` beside the CSV."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + "_features")


def write_predictions(model: str | Path, features: str | Path, out_csv: str | Path) -> Path:
    """Predict every patient of a features folder with a run (or head export); write the CSV."""
    return write_table(predict_patients(Predictor(model), features), out_csv)
