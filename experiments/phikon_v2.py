"""hist2RNA with Phikon-v2 (Owkin) features on TCGA-BRCA: the paper's method (mean of tile features ->
the paper's head) on a pathology foundation model instead of an ImageNet CNN.

Compares with: Figure 3 of Mondol et al., Cancers 2023 (the paper's five CNNs), on the same held-out
patients. Phikon-v2 (Owkin): 1024 features a tile, tiles of 224 px at 0.5 um/px (its own scale).
Weights: accept the licence at https://huggingface.co/owkin/phikon-v2 and download model.safetensors (its folder, with config.json)
to weights/phikon-v2/ under the repository (TCGA.encoder_weights). Inputs: TCGA in tcga_brca.py (see
experiments/README.md). Run, from any folder: python experiments/phikon_v2.py (on a GPU, with
Experiment(..., precision="mixed")).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tcga_brca.py, beside this script

from tcga_brca import TCGA, Experiment, run  # noqa: E402

# The same held-out patients as the EfficientNetV2S run, when it has been run first.
EXPERIMENT = Experiment("phikon-v2", split=TCGA().runs / "efficientnetv2s" / "split.csv")

if __name__ == "__main__":
    run(EXPERIMENT, TCGA())
