"""TCGA barcodes: the one place that reads a patient (and a sample type) out of a slide or sample id.

A TCGA slide or sample id starts with the 12-character patient barcode (`TCGA-A2-A04R`), then the
sample (`-01`: primary tumour); slides and RNA-seq of one patient meet on that barcode.
"""

from __future__ import annotations

import re

TCGA_SAMPLE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2}))?", re.IGNORECASE)


def patient_barcode(identifier: str) -> str | None:
    """The 12-character patient barcode (upper case) of a TCGA slide, sample or patient id, else None."""
    match = TCGA_SAMPLE.match(str(identifier))
    return match.group(1).upper() if match else None


def patient_id(identifier: str) -> str:
    """The patient barcode when the id is a TCGA one, else the id itself (a cohort's own naming)."""
    return patient_barcode(identifier) or identifier
