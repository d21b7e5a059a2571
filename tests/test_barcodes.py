"""TCGA barcodes (barcodes.py): slides and RNA-seq samples of one patient meet on one id."""

from __future__ import annotations

from pathlib import Path

import pytest

from hist2rna_tf.barcodes import patient_barcode, patient_id


@pytest.mark.parametrize("identifier, patient", [
    ("TCGA-A2-A04R-01Z-00-DX1.BE3661A3-A2A0-4248-B7D5-D8986E529B6C", "TCGA-A2-A04R"),  # a slide
    ("tcga-a2-a04r-01", "TCGA-A2-A04R"), ("TCGA-A2-A04R", "TCGA-A2-A04R"),  # a sample; a patient
    ("core_017", "core_017"), ("TCGA-A2", "TCGA-A2")])  # a cohort's own names are kept as they are
def test_slides_and_rna_seq_meet_on_one_patient_id(identifier, patient):
    from hist2rna_tf.extract.slides import SlideRef

    assert patient_id(identifier) == patient
    assert SlideRef(Path(f"/slides/{identifier}.svs"), "openslide").patient_id == patient


def test_a_barcode_only_for_tcga_ids():
    assert patient_barcode("TCGA-E2-A15K-06A") == "TCGA-E2-A15K"  # a metastasis sample: still the patient
    assert patient_barcode("core_017") is None and patient_barcode("TCGA-A2") is None
