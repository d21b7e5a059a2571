"""hist2RNA with EfficientNetV2S features on TCGA-BRCA.

Reproduces: Figure 3 (EfficientNet column: median Spearman 0.82 across patients, 0.29 across genes, 105/138 genes significant) and the EfficientNet results behind Figures 4 and 5 and the subtype classification (section 3.2) of Mondol et al., Cancers 2023 (hist2RNA).

Stages, top to bottom: extract per-slide mean EfficientNetV2S features (F=1280; skipped for slides already
done), train the paper's head on 335 patients, predict the 160 held-out patients. The data paths
come from experiments/tcga_brca.py (see experiments/README.md for what to download); the settings
are in CONFIG. Run: python experiments/efficientnetv2s.py
"""

from pathlib import Path

from tcga_brca import ANNOTATIONS, EXPRESSION, LABELS, SLIDES, WEIGHTS

from hist2rna_tf.config import ExtractConfig
from hist2rna_tf.features import extract_cohort
from hist2rna_tf.train import RunInputs, TrainConfig, train_run

CONFIG = dict(
    extract=ExtractConfig(backbone="efficientnetv2s", weights=WEIGHTS, batch_size=32),  # the paper's 224 px, 0.25 um/px
    train=TrainConfig(seed=0),  # the paper's: Adam 1e-3, MSE, batch 12, patience 4, <= 150 epochs
    genes="all",  # the 138-gene panel
    features=Path("features"),
    run=Path("runs/efficientnetv2s"),
)

if __name__ == "__main__":
    # 1. EfficientNetV2S features, one mean vector per slide (slides already done are skipped)
    results = extract_cohort([SLIDES], CONFIG["features"], CONFIG["extract"], ANNOTATIONS, progress=True)
    print(sum(r.status != "failed" for r in results), "slides with features,", sum(r.status == "failed" for r in results),
          "failed (see features/efficientnetv2s/manifest.csv)")
    # 2. + 3. train the head on the training patients, predict the held-out ones
    inputs = RunInputs(features=str(CONFIG["features"] / "efficientnetv2s"), expression=str(EXPRESSION), labels=str(LABELS),
                       genes=CONFIG["genes"])
    summary = train_run(inputs, CONFIG["run"], CONFIG["train"], verbose=2)
    print(summary["patients"], "patients; held-out predictions in", CONFIG["run"] / "test_predictions.csv")
