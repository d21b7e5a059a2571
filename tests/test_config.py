"""Configuration (config.py): units derived, not stored twice; the stain tag a record carries; the
machine's cores as the process may use them."""

from __future__ import annotations

import os

import pytest

from hist2rna_tf.config import (PAM50_LABEL_COLUMN, PAPER_SUBTYPES, ExtractConfig, RunInputs, StainConfig, TileConfig,
                                to_dict, usable_cores)


def test_tile_size_in_microns_follows_pixels_and_resolution():
    assert TileConfig().tile_size_um == pytest.approx(56.0)  # the paper's 224 px at 0.25 um/px
    assert TileConfig(tile_size_px=256, target_mpp=0.5).tile_size_um == pytest.approx(128.0)


def test_the_stain_tag_names_the_method_and_its_reference():
    assert StainConfig().tag == "macenko" and StainConfig().is_macenko
    assert StainConfig(method="staintools-vahadane", reference_image="/r.png").tag == "staintools-vahadane:/r.png"
    assert not StainConfig(method="none").is_macenko


def test_a_run_splits_by_the_papers_subtypes_in_tcgas_column():
    inputs = RunInputs("f", "e", "l")
    assert (inputs.label_column, inputs.subtypes) == (PAM50_LABEL_COLUMN, PAPER_SUBTYPES) == (
        "BRCA_Subtype_PAM50", ("LumA", "LumB", "Basal", "Her2"))


def test_configs_are_plain_data():
    data = to_dict(ExtractConfig())
    assert data["tiles"]["tile_size_px"] == 224 and data["stain"]["method"] == "macenko"


def test_usable_cores_are_this_processs_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert usable_cores() == 2
