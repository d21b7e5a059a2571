"""hist2RNA with ResNet50 features on TCGA-BRCA.

Reproduces: Figure 3 (ResNet column) of Mondol et al., Cancers 2023 (hist2RNA).

Stages (tcga_brca.run): extract per-slide mean ResNet50 features (F=2048; slides already done are
skipped), train the paper's head on 335 patients, predict the 160 held-out patients. Inputs: TCGA in
tcga_brca.py (see experiments/README.md). Run, from any folder: python experiments/resnet50.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tcga_brca.py, beside this script

from tcga_brca import TCGA, Experiment, run  # noqa: E402

# The same held-out patients as the EfficientNetV2S run, when it has been run first.
EXPERIMENT = Experiment("resnet50", split=TCGA().runs / "efficientnetv2s" / "split.csv")

if __name__ == "__main__":
    run(EXPERIMENT, TCGA())
