"""Where the TCGA-BRCA inputs live (see experiments/README.md for what to download).

Shared by the per-backbone experiment scripts; override with HIST2RNA_DATA and HIST2RNA_WEIGHTS.
"""

import os
from pathlib import Path

DATA = Path(os.environ.get("HIST2RNA_DATA", "data/tcga_brca"))
SLIDES = DATA / "slides"  # GDC diagnostic slides (*.svs)
ANNOTATIONS = DATA / "annotations" if (DATA / "annotations").is_dir() else None  # QuPath GeoJSON, optional
EXPRESSION = DATA / "data_mrna_seq_v2_rsem.txt"  # cBioPortal brca_tcga RSEM
LABELS = DATA / "subtypes.csv"  # patient barcode, BRCA_Subtype_PAM50
WEIGHTS = os.environ.get("HIST2RNA_WEIGHTS", "imagenet")  # or a local weights file
