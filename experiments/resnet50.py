"""hist2RNA with ResNet50 features on TCGA-BRCA.

Reproduces: Figure 3 (ResNet column) of Mondol et al., Cancers 2023 (hist2RNA).

Stages, top to bottom: extract per-slide mean ResNet50 features (F=2048; skipped for slides already
done), train the paper's head on 335 patients, predict the 160 held-out patients. The data paths
come from experiments/tcga_brca.py (see experiments/README.md for what to download); the settings
are in CONFIG. Run: python experiments/resnet50.py
"""

from pathlib import Path

from tcga_brca import ANNOTATIONS, EXPRESSION, LABELS, SLIDES, WEIGHTS

from hist2rna_tf.config import ExtractConfig
from hist2rna_tf.features import extract_cohort
from hist2rna_tf.train import RunInputs, TrainConfig, train_run

CONFIG = dict(
    extract=ExtractConfig(backbone="resnet50", weights=WEIGHTS, batch_size=32),  # the paper's 224 px, 0.25 um/px
    train=TrainConfig(seed=0),  # the paper's: Adam 1e-3, MSE, batch 12, patience 4, <= 150 epochs
    genes="all",  # the 138-gene panel
    features=Path("features"),
    run=Path("runs/resnet50"),
)

if __name__ == "__main__":
    # 1. ResNet50 features, one mean vector per slide (slides already done are skipped)
    results = extract_cohort([SLIDES], CONFIG["features"], CONFIG["extract"], ANNOTATIONS, progress=True)
    print(sum(r.status != "failed" for r in results), "slides with features,", sum(r.status == "failed" for r in results),
          "failed (see features/resnet50/manifest.csv)")
    # 2. + 3. train the head on the training patients, predict the held-out ones
    inputs = RunInputs(features=str(CONFIG["features"] / "resnet50"), expression=str(EXPRESSION), labels=str(LABELS),
                       genes=CONFIG["genes"])
    summary = train_run(inputs, CONFIG["run"], CONFIG["train"], verbose=2)
    print(summary["patients"], "patients; held-out predictions in", CONFIG["run"] / "test_predictions.csv")
