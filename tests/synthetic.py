"""Small synthetic inputs for the tests (after STAMP's tests/random_data.py): feature records, RNA-seq
and label tables, and a cohort whose slide features and expression share a latent, so that a head
trained on it learns something a shuffled control does not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.config import PAM50_LABEL_COLUMN
from hist2rna_tf.extract.records import SlideFeatures, record_path, write_record
from hist2rna_tf.extract.settings import FeatureSettings

SUBTYPES = ("LumA", "LumB", "Basal", "Her2")


def record(slide_id: str, feature: np.ndarray, patient_id: str | None = None, backbone: str = "efficientnetv2s",
           tiles: np.ndarray | None = None, tile_xy_px: np.ndarray | None = None, version: str = "test",
           mpp: float = 0.25) -> SlideFeatures:
    """One slide's record as `hist2rna extract` writes it (random weights, macenko, 224 px at
    0.25 um/px); `tiles` [n, F] are stored as its per-tile features, `feature` is their mean."""
    n_tiles = 1 if tiles is None else len(tiles)
    xy = np.zeros((n_tiles, 2), np.int64) if tile_xy_px is None else np.asarray(tile_xy_px, np.int64)
    return SlideFeatures(slide_id=slide_id, patient_id=patient_id or slide_id[:12],
                         settings=FeatureSettings(backbone, "none", "macenko", 224, 56.0), version=version, mpp=mpp,
                         n_tiles=n_tiles, n_unnormalised=0, feature=np.asarray(feature, np.float32), tile_xy_px=xy,
                         tile_features=None if tiles is None else np.asarray(tiles, np.float32))


def write_records(root: Path, records: list[SlideFeatures]) -> Path:
    """Each record as <root>/<backbone>/<slide_id>.tfrecord; returns the backbone's folder."""
    for r in records:
        write_record(r, record_path(root, r.backbone, r.slide_id))
    return Path(root) / records[0].backbone


def write_expression(path: Path, log2: pd.DataFrame) -> Path:
    """Patients x genes of log2(1+RSEM) as the raw RSEM table a user has (sample IDs <patient>-01)."""
    raw = pd.DataFrame(np.maximum(2 ** log2.to_numpy() - 1, 0), index=[f"{p}-01" for p in log2.index],
                       columns=log2.columns)
    raw.rename_axis("SAMPLE_ID").to_csv(path)
    return Path(path)


def write_labels(path: Path, patients, labels=None) -> Path:
    """A clinical table: PATIENT, TCGA's subtype column (config.PAM50_LABEL_COLUMN; default: the paper's four subtypes in turn)."""
    patients = list(patients)
    labels = [SUBTYPES[i % 4] for i in range(len(patients))] if labels is None else list(labels)
    pd.DataFrame({"PATIENT": patients, PAM50_LABEL_COLUMN: labels}).to_csv(path, index=False)
    return Path(path)


@dataclass
class Cohort:
    features: Path  # the backbone's record folder
    expression: Path
    labels: Path
    patients: list[str]
    latent: np.ndarray  # [patients, 3]: what features and expression share


def latent_cohort(root: Path, genes: list[str], n_patients: int = 48, feature_dim: int = 16, tiles_per_slide: int = 0,
                  seed: int = 0, prefix: str = "TCGA-SY") -> Cohort:
    """`n_patients`, one slide each; every feature is a noisy view of the patient's 3-d latent, which
    also drives the genes (log2 around 8; subtype = the latent's largest coordinate's sign mix, so the
    PAM50 genes carry it). With `tiles_per_slide`, each record also holds that many tile features on a
    grid (level-0 x, y a tile apart) whose mean is the slide's feature."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    latent = rng.normal(size=(n_patients, 3))
    mixing = rng.normal(size=(3, feature_dim))
    patients = [f"{prefix}-{i:04d}" for i in range(n_patients)]
    records = []
    for i, patient in enumerate(patients):
        slide = f"{patient}-01Z-00-DX1"
        if tiles_per_slide:
            tiles = np.tanh(latent[i] @ mixing + 0.4 * rng.normal(size=(tiles_per_slide, feature_dim)))
            xy = np.stack([np.arange(tiles_per_slide) % 4, np.arange(tiles_per_slide) // 4], axis=1) * 896
            records.append(record(slide, tiles.mean(0), tiles=tiles, tile_xy_px=xy))
        else:
            records.append(record(slide, np.tanh(latent[i] @ mixing) + 0.1 * rng.normal(size=feature_dim)))
    features = write_records(root / "features", records)
    log2 = 8 + latent @ rng.normal(size=(3, len(genes))) + 0.3 * rng.normal(size=(n_patients, len(genes)))
    subtypes = [SUBTYPES[int(np.argmax(np.abs(z)))] if z[np.argmax(np.abs(z))] > 0 else SUBTYPES[3] for z in latent]
    return Cohort(features, write_expression(root / "expression.csv", pd.DataFrame(log2, patients, genes)),
                  write_labels(root / "clinical.csv", patients, subtypes), patients, latent)
