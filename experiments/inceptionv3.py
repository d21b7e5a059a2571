"""hist2RNA with InceptionV3 features on TCGA-BRCA.

Reproduces: Figure 3 (Inception column) of Mondol et al., Cancers 2023 (hist2RNA).

Stages, top to bottom: extract per-slide mean InceptionV3 features (F=2048; skipped for slides already
done), train the paper's head on 335 patients, predict the 160 held-out patients. The data paths
come from environment variables (see experiments/README.md for what to download); every setting
is in CONFIG. Run: python experiments/inceptionv3.py
"""

import os
from pathlib import Path

from hist2rna_tf.config import ExtractConfig
from hist2rna_tf.features import extract_cohort
from hist2rna_tf.train import RunInputs, TrainConfig, train_run

DATA = Path(os.environ.get("HIST2RNA_DATA", "data/tcga_brca"))
CONFIG = dict(
    slides=DATA / "slides",  # GDC diagnostic slides (*.svs)
    annotations=DATA / "annotations" if (DATA / "annotations").is_dir() else None,  # QuPath GeoJSON, optional
    expression=DATA / "data_mrna_seq_v2_rsem.txt",  # cBioPortal brca_tcga RSEM
    labels=DATA / "subtypes.csv",  # patient, BRCA_Subtype_PAM50
    features=Path("features"),
    run=Path("runs/inceptionv3"),
    extract=ExtractConfig(backbone="inceptionv3", weights=os.environ.get("HIST2RNA_WEIGHTS", "imagenet"), batch_size=32),
    train=TrainConfig(seed=0),  # Adam 1e-3, MSE, batch 12, patience 4, <= 150 epochs
)

if __name__ == "__main__":
    results = extract_cohort([CONFIG["slides"]], CONFIG["features"], CONFIG["extract"],
                             annotations_dir=CONFIG["annotations"], progress=True)
    print(sum(r.status != "failed" for r in results), "slides with features;",
          sum(r.status == "failed" for r in results), "failed (see the manifest)")
    inputs = RunInputs(features=str(CONFIG["features"] / "inceptionv3"), expression=str(CONFIG["expression"]),
                       labels=str(CONFIG["labels"]), genes="all")
    summary = train_run(inputs, CONFIG["run"], CONFIG["train"], verbose=2)
    print(summary["patients"], "patients; held-out predictions:", CONFIG["run"] / "test_predictions.csv")
