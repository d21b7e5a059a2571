"""The patch-based comparison on TCGA-BRCA: Figures 6 and 10 of Mondol et al., Cancers 2023 (hist2RNA).

Reproduces: Figure 10 (patch-based median Spearman across genes 0.18 with RegNet, 68 genes p < 0.05,
against hist2RNA's 0.29) and Figure 6 (training energy: EfficientNet patch-based 4 x 8.48 h x 300 W =
10.2 kWh against hist2RNA's 0.66 h, 0.19 kWh on one GPU, 50x less).

Stages, top to bottom: extract features WITH the per-tile features kept (the patch-based approach
trains on tiles; ~5-15 MB a slide), train hist2RNA's head on the same split as the EfficientNetV2S
run, then the patch-based baseline on that run's patients, split and genes: "frozen" (the head on
each tile's feature) and, with FINETUNE=1, the backbone itself trained on the tile images as the paper
did (needs a GPU: days on a CPU). Energy uses DEVICE_WATTS per device (the paper's 300 W V100).
Run: BACKBONE=regnety320 python experiments/patch_baseline.py; then open runs/<backbone>_patch/report.html.
"""

import os
from pathlib import Path

from tcga_brca import ANNOTATIONS, EXPRESSION, LABELS, SLIDES, WEIGHTS

from hist2rna_tf.baseline import BaselineConfig, train_patch_baseline
from hist2rna_tf.config import ExtractConfig
from hist2rna_tf.features import extract_cohort
from hist2rna_tf.report import ReportInputs, build_report
from hist2rna_tf.train import RunInputs, TrainConfig, train_run

BACKBONE = os.environ.get("BACKBONE", "regnety320")
CONFIG = dict(
    extract=ExtractConfig(backbone=BACKBONE, weights=WEIGHTS, batch_size=32, save_tile_features=True),
    train=TrainConfig(seed=0),  # the paper's head settings, shared by the baseline
    baseline=BaselineConfig(mode="finetune" if os.environ.get("FINETUNE") else "frozen",
                            device_watts=float(os.environ.get("DEVICE_WATTS", 300))),
    features=Path("features_tiles"),
    split=Path("runs/efficientnetv2s/split.csv"),  # the same held-out patients as the main experiment
    run=Path(f"runs/{BACKBONE}_tiles"),
    out=Path(f"runs/{BACKBONE}_patch"),
)

if __name__ == "__main__":
    # 1. features with every tile's vector kept (slides already done with tile features are skipped)
    extract_cohort([SLIDES], CONFIG["features"], CONFIG["extract"], ANNOTATIONS, progress=True)
    # 2. hist2RNA on the slide means (timed: the cost figure's first bar)
    split = str(CONFIG["split"]) if CONFIG["split"].is_file() else None
    inputs = RunInputs(features=str(CONFIG["features"] / BACKBONE), expression=str(EXPRESSION), labels=str(LABELS),
                       split=split)
    train_run(inputs, CONFIG["run"], CONFIG["train"], verbose=2)
    # 3. the patch-based baseline on the same patients, split, genes and settings (the second bar)
    summary = train_patch_baseline(CONFIG["run"], CONFIG["out"], CONFIG["baseline"], slides_dir=SLIDES,
                                   annotations_dir=ANNOTATIONS, verbose=2)
    print("patch-based median across genes:", round(summary["metrics"]["across_genes"]["median"], 3))
    # 4. one report with Figure 10 and the cost figure
    print("report:", build_report(ReportInputs(run=CONFIG["run"], baseline=CONFIG["out"]),
                                  CONFIG["out"] / "report.html"))
