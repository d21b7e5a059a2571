"""hist2RNA with EfficientNetV2S features on TCGA-BRCA.

Reproduces: Figure 3 (EfficientNet column: median Spearman 0.82 across patients, 0.29 across
genes, 105/138 genes significant) and the EfficientNet results behind Figures 4 and 5 and the subtype
classification (section 3.2) of Mondol et al., Cancers 2023 (hist2RNA).

Stages (tcga_brca.run): extract per-slide mean EfficientNetV2S features (F=1280; slides already done are
skipped), train the paper's head on 335 patients, predict the 160 held-out patients. Inputs: TCGA in
tcga_brca.py (see experiments/README.md). Run, from any folder: python experiments/efficientnetv2s.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tcga_brca.py, beside this script

from tcga_brca import TCGA, Experiment, run  # noqa: E402

EXPERIMENT = Experiment("efficientnetv2s")  # the paper's settings; see tcga_brca.Experiment

if __name__ == "__main__":
    run(EXPERIMENT, TCGA())
