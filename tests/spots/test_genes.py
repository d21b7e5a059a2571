"""A spot run's genes (spots/genes.py): `hvg:N` is HEST's own choice (get_k_genes, criteria 'var', run on
three synthetic samples by tests/fixtures/make_hvg_fixture.py), made from each sample's sums without the
stacked matrix; a file or 'all' names what a sample lacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.genes import common_genes, dispersion_table, highly_variable_genes, spot_genes
from hist2rna_tf.spots.sample import SpotSample

DATA = Path(__file__).resolve().parents[1] / "data" / "spots"


@pytest.fixture(scope="module")
def reference():
    arrays = np.load(DATA / "hvg.npz")
    genes = tuple(str(g) for g in arrays["genes"])
    samples = []
    for i in range(3):
        counts = arrays[f"sample{i}"]
        samples.append(SpotSample(f"S{i}", np.array([f"b{j}" for j in range(len(counts))]), np.zeros((len(counts), 2)),
                                  sparse.csr_matrix(counts.astype(np.float64)), genes, Path("none.tif"), 0.5, f"S{i}"))
    return samples, json.loads((DATA / "hvg.json").read_text())


def test_hvg_are_hests_genes(reference):
    samples, expected = reference
    assert common_genes(samples) == expected["common_genes"]
    for k, genes in expected["chosen"].items():
        assert highly_variable_genes(samples, int(k)) == genes
        assert spot_genes(f"hvg:{k}", samples) == genes
    table = dispersion_table(samples, expected["common_genes"])
    np.testing.assert_allclose(table["means"], expected["means"], rtol=1e-6)
    np.testing.assert_allclose(table["dispersions"], np.array(expected["dispersions"], float), rtol=1e-6)
    np.testing.assert_allclose(table["dispersions_norm"], np.array(expected["dispersions_norm"], float), rtol=1e-5)


def test_hvg_depend_on_the_samples_given(reference):
    """Chosen on the training samples only: leaving a sample out changes the genes (HEST issue 89)."""
    samples, _ = reference
    assert highly_variable_genes(samples[:2], 20) != highly_variable_genes(samples, 20)


def test_a_gene_file_and_all(reference, tmp_path):
    samples, _ = reference
    assert spot_genes("all", samples) == list(samples[0].genes)
    listed = tmp_path / "genes.txt"
    listed.write_text("G001\nG002\nG001\n")
    assert spot_genes(str(listed), samples) == ["G001", "G002"]
    listed.write_text("G001\nNOPE1\n")
    with pytest.raises(SpotError, match=r"not measured in sample S0.*NOPE1"):
        spot_genes(str(listed), samples)
    with pytest.raises(SpotError, match="hvg50: no such file; give all, hvg:N"):
        spot_genes("hvg50", samples)
