"""A run's map checked against measurement (`hist2rna spatial RUN --truth SAMPLE`): the run's head on each
spot's own patch (the sample's spot record, `extract-spots --like RUN`: made as the run's features
were), each spot's prediction against the log1p of its counts, per gene the run and the sample share
(spots/truth.py: Pearson, Spearman, a spin test's p that keeps the map's autocorrelation, FDR).

A bulk run predicts log2(1+RSEM) and the spots are log1p counts: other units, and Pearson's r and
Spearman's rho do not care (both are unchanged by a linear rescaling, Spearman by any monotone one).

Files, in `<out>/`:
  <sample>_truth.csv        per gene: n_spots, pearson, spearman, p_spin, fdr_spin (best first)
  <sample>_spots.csv        per spot: barcode, x, y (centre, full-resolution px), <gene>_measured, <gene>_predicted
  <sample>_spots.geojson    the spots as QuPath detections (a circle of the spot's diameter), both values each gene
  <sample>_<gene>_truth.png the sample's thumbnail, measured | predicted, each spot a disc of its value
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import write_table, write_text
from hist2rna_tf.config import THUMBNAIL_MPP
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.extract.records import read_record
from hist2rna_tf.model.predict import Predictor
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.report.figures import save, spot_truth_map
from hist2rna_tf.spots.sample import SpotSample

log = logging.getLogger(__name__)

VISIUM_SPOT_UM = 55.0  # a spot's diameter where the sample does not say
CIRCLE_VERTICES = 24


def spot_predictions(predictor: Predictor, spot_record: str | Path, sample: SpotSample) -> pd.DataFrame:
    """Spots (by barcode) x the run's genes: the run's head on each spot's patch (its neighbourhood too,
    for a spot run that reads one). The record must be `sample`'s and made as the run's features were."""
    record = read_record(spot_record)
    predictor.check_features(record.settings, spot_record)
    if record.tile_names is None:
        raise Hist2RNAError(f"{spot_record}: not a record of spots (no barcodes); make it with `hist2rna extract-spots "
                            f"--like {predictor.path}`.")
    values, _ = predictor.record_values(record, spot_record)
    predicted = pd.DataFrame(values, index=pd.Index(record.tile_names, name="barcode"), columns=predictor.genes)
    unknown = predicted.index.difference(pd.Index(sample.barcodes))
    if len(unknown):
        raise Hist2RNAError(f"{spot_record}: {len(unknown)} spot(s) not in sample {sample.sample_id} (e.g. "
                            f"{unknown[0]}); the record is of another sample.")
    return predicted


def spot_table(predicted: pd.DataFrame, measured: pd.DataFrame, sample: SpotSample) -> pd.DataFrame:
    """Per spot of `predicted`: barcode, x, y (centre) and each gene of `measured` (log1p counts, the same
    spots) measured and predicted."""
    centres = pd.DataFrame(sample.centres_px, index=sample.barcodes, columns=["x", "y"]).loc[predicted.index]
    columns = {f"{g}_{side}": frame[g].to_numpy() for g in measured.columns
               for side, frame in (("measured", measured), ("predicted", predicted))}
    return pd.concat([centres.rename_axis("barcode").reset_index(), pd.DataFrame(columns)], axis=1)


def scored(predictor: Predictor, spot_record: str | Path, sample: SpotSample, n_spins: int | None = None,
           seed: int = 0, drawn: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each spot's two values: `spot_table`; per gene the run and `sample` share, the map scored on the
    sample's spots: spots/truth.py). `drawn`: genes a caller will draw, refused unless shared."""
    from hist2rna_tf.spots.truth import N_SPINS, map_scores

    warn_if_trained_on(predictor, sample)
    predicted = spot_predictions(predictor, spot_record, sample)
    genes = [g for g in predictor.genes if g in set(sample.genes)]
    if not genes:
        raise Hist2RNAError(f"sample {sample.sample_id} measured none of the run's {len(predictor.genes)} genes.")
    unknown = [g for g in drawn or [] if g not in genes]
    if unknown:
        raise Hist2RNAError(f"--genes: {', '.join(unknown)} not among the {len(genes)} genes both the run predicts and "
                            f"sample {sample.sample_id} measured.")
    measured = sample.expression(genes).loc[predicted.index]
    table = spot_table(predicted, measured, sample)
    return table, map_scores(predicted[genes], measured, table[["x", "y"]].to_numpy(), n_spins or N_SPINS, seed)


def spot_scores(run_dir: str | Path, spot_record: str | Path, sample: SpotSample, n_spins: int | None = None,
                seed: int = 0) -> pd.DataFrame:
    """Per gene the run and `sample` share: the map scored on the sample's spots (spots/truth.py)."""
    return scored(Predictor(run_dir), spot_record, sample, n_spins, seed)[1]


def trained_on(spots: dict | None, sample_id: str) -> bool:
    """Whether a run whose record says `spots` (RunRecord.spots; None: a bulk run) trained on sample
    `sample_id` (its score then is not a held-out figure)."""
    return bool(spots) and spots["samples"].get(sample_id, {}).get("subset") == "train"


def warn_if_trained_on(predictor: Predictor, sample: SpotSample) -> None:
    if trained_on(predictor.record.spots if predictor.record is not None else None, sample.sample_id):
        log.warning("sample %s is one %s was TRAINED on (its config.json: subset train): its scores are not held-out "
                    "figures; score a held-out sample (subset test) for those.", sample.sample_id, predictor.path)


def spot_detections(table: pd.DataFrame, genes: list[str], diameter_px: float) -> dict:
    """The spots as QuPath detection objects: a circle each, `<gene> measured` and `<gene> predicted` its
    measurements (qupath.py's format, objectType detection)."""
    angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1) * diameter_px / 2
    names = [(f"{g}_{side}", f"{g} {side}") for g in genes for side in ("measured", "predicted")]
    features = []
    for row in table.itertuples(index=False):
        points = np.round(ring + [row.x, row.y], 2).tolist()
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [points + points[:1]]},
                         "properties": {"objectType": "detection", "isLocked": True, "name": row.barcode,
                                        "measurements": {label: round(float(getattr(row, column)), 4)
                                                         for column, label in names}}})
    return {"type": "FeatureCollection", "features": features}


def write_truth(run_dir: str | Path, spot_record: str | Path, sample: SpotSample, out_dir: str | Path,
                genes: list[str] | None = None, n_spins: int | None = None, thumbnail_mpp: float = THUMBNAIL_MPP,
                seed: int = 0) -> tuple[pd.DataFrame, list[Path]]:
    """The files of the module for `sample`; `genes` the maps drawn (None: the four best scored). Returns
    the scores and the files written."""
    from hist2rna_tf.extract.slides import read_thumbnail
    from hist2rna_tf.spots.hest import open_image

    refuse_overlap(out_dir, {"RUN": run_dir, "--features": spot_record}, may_hold=("RUN",))
    predictor = Predictor(run_dir)
    table, scores = scored(predictor, spot_record, sample, n_spins, seed, genes)
    shared = [c.removesuffix("_measured") for c in table.columns if c.endswith("_measured")]  # the run's order
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = sample.sample_id
    written = [write_table(scores, out / f"{name}_truth.csv"), write_table(table, out / f"{name}_spots.csv", index=False)]
    diameter = (sample.spot_diameter_um or VISIUM_SPOT_UM) / sample.mpp
    written.append(write_text(out / f"{name}_spots.geojson",
                              json.dumps(spot_detections(table, shared, diameter), separators=(",", ":"))))
    image = open_image(sample.image)
    try:
        thumb, scale = read_thumbnail(image, sample.mpp, thumbnail_mpp)
    finally:
        image.close()
    drawn = genes or list(scores["pearson"].dropna().index[:4])
    for gene in drawn:
        figure = spot_truth_map(thumb, scale, diameter, table, gene, name, scores.loc[gene], predictor.units)
        written.append(save(figure, out / f"{name}_{gene}_truth.png"))
    return scores, written
