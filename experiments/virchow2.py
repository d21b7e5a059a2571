"""hist2RNA with Virchow2 (Paige) features on TCGA-BRCA: the paper's method (mean of tile features ->
the paper's head) on a pathology foundation model instead of an ImageNet CNN.

Compares with: Figure 3 of Mondol et al., Cancers 2023 (the paper's five CNNs), on the same held-out
patients. Virchow2 (Paige): 2560 features a tile, tiles of 224 px at 0.5 um/px (its own scale).
Weights: accept the licence at https://huggingface.co/paige-ai/Virchow2 and download pytorch_model.bin
to weights/virchow2/pytorch_model.bin under the repository (TCGA.encoder_weights). Inputs: TCGA in tcga_brca.py (see
experiments/README.md). Run, from any folder: python experiments/virchow2.py (on a GPU, with
Experiment(..., precision="mixed")).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tcga_brca.py, beside this script

from tcga_brca import TCGA, Experiment, run  # noqa: E402

# The same held-out patients as the EfficientNetV2S run, when it has been run first.
EXPERIMENT = Experiment("virchow2", split=TCGA().runs / "efficientnetv2s" / "split.csv")

if __name__ == "__main__":
    run(EXPERIMENT, TCGA())
