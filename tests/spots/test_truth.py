"""A map scored against measured spots (spots/truth.py): the spin null keeps a map's patches, so a smooth
map that merely resembles the section by chance is not called significant, and one that follows the
measurement is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.truth import map_scores, spin_permutations

from spatial_samples import hex_centres


def _smooth(centres: np.ndarray, seed: int, scale: float = 900.0) -> np.ndarray:
    """A smooth random field over the spots (a few broad bumps)."""
    rng = np.random.default_rng(seed)
    bumps = rng.uniform(centres.min(0), centres.max(0), (4, 2))
    return sum(np.exp(-((centres - b) ** 2).sum(1) / (2 * scale ** 2)) * rng.choice([-1, 1]) for b in bumps)


@pytest.fixture(scope="module")
def grid():
    return hex_centres(size=(6000, 5000), mpp=0.25)  # Visium's grid: 100 um apart, ~200 spots


def test_a_spin_is_a_rotation_matched_to_the_nearest_spot(grid):
    spins = spin_permutations(grid, n=6, seed=0)
    assert spins.shape == (6, len(grid)) and spins.min() >= 0 and spins.max() < len(grid)
    assert all(len(set(spin)) > 0.6 * len(grid) for spin in spins)  # mostly one spot each, edges shared
    assert not (spins == np.arange(len(grid))).all(axis=1).any()  # every spin moves the map


def test_on_a_small_section_no_spin_leaves_the_map_in_place():
    """~50 spots (the demo's sections): a turn of a few degrees would map most spots onto themselves and
    put a floor under every p; such spins are drawn again, so a map equal to the measurement reaches the
    least p a spin test has, 1/(n+1)."""
    small = hex_centres(size=(3200, 2500), mpp=0.25)
    spins = spin_permutations(small, n=199, seed=0)
    assert (spins == np.arange(len(small))).mean(axis=1).max() <= 0.5
    field = pd.DataFrame({"A": _smooth(small, 7, scale=400.0)}, index=[f"s{i}" for i in range(len(small))])
    assert map_scores(field, field, small, n_spins=199)["p_spin"]["A"] == pytest.approx(1 / 200)


def test_a_map_that_follows_the_measurement_is_significant_and_a_chance_one_is_not(grid):
    measured_field, chance_field = _smooth(grid, 7), _smooth(grid, 8)  # two unrelated fields, r 0.66 by chance
    rng = np.random.default_rng(0)
    index = pd.Index([f"s{i}" for i in range(len(grid))])
    measured = pd.DataFrame({"A": measured_field + rng.normal(0, 0.1, len(grid)),
                             "B": measured_field + rng.normal(0, 0.1, len(grid))}, index=index)
    predicted = pd.DataFrame({"A": measured_field + rng.normal(0, 0.3, len(grid)), "B": chance_field}, index=index)
    scores = map_scores(predicted, measured, grid, n_spins=99)
    assert scores.loc["A", "pearson"] > 0.8 and scores.loc["A", "p_spin"] <= 0.02
    assert scores.loc["B", "pearson"] > 0.5 and scores.loc["B", "p_spin"] > 0.05  # smooth against smooth: chance
    shuffled = [np.corrcoef(predicted["B"].to_numpy()[rng.permutation(len(grid))], measured["B"])[0, 1]
                for _ in range(99)]
    assert (1 + sum(r >= scores.loc["B", "pearson"] for r in shuffled)) / 100 <= 0.01  # which a shuffle calls real
    assert list(scores.columns) == ["n_spots", "pearson", "spearman", "p_spin", "fdr_spin"]
    assert scores.index[0] == "A" and scores["n_spots"].eq(len(grid)).all()


def test_spots_must_match(grid):
    index = pd.Index([f"s{i}" for i in range(len(grid))])
    a = pd.DataFrame({"A": np.arange(len(grid), dtype=float)}, index=index)
    with pytest.raises(SpotError, match="match them by barcode"):
        map_scores(a, a.iloc[::-1], grid)
    with pytest.raises(SpotError, match="share none"):
        map_scores(a, a.rename(columns={"A": "Z"}), grid)


def test_a_runs_map_is_scored_at_the_spots_it_was_extracted_for(tiny_run, tmp_path, capsys):
    """`extract-spots --like RUN`, then the run's head on each spot against the sample's counts: every
    gene both have, matched by barcode; a record made at HEST's scale is refused as made otherwise."""
    from pathlib import Path

    from hist2rna_tf.cli import main
    from hist2rna_tf.errors import SettingsError
    from hist2rna_tf.report.spot_truth import spot_scores
    from hist2rna_tf.spots.hest import read_hest_sample

    samples = Path(__file__).resolve().parents[1] / "data" / "spots" / "hest_samples"
    assert main(["extract-spots", "--hest", str(samples), "--samples", "SYN2", "--like", str(tiny_run / "run"),
                 "--out", str(tmp_path / "like"), "--no-progress"]) == 0, capsys.readouterr().err
    sample = read_hest_sample(samples, "SYN2")
    scores = spot_scores(tiny_run / "run", tmp_path / "like" / "tiny" / "SYN2.tfrecord", sample, n_spins=19)
    from hist2rna_tf.model.predict import Predictor

    shared = set(Predictor(tiny_run / "run").genes) & set(sample.genes)
    assert set(scores.index) == shared and len(shared) >= 6  # every gene both have (the panel's of its 8)
    assert scores["n_spots"].eq(sample.n_spots).all() and scores["pearson"].between(-1, 1).all()
    assert scores["p_spin"].between(1 / 20, 1).all()
    assert main(["extract-spots", "--hest", str(samples), "--samples", "SYN2", "--backbone", "efficientnetv2s",
                 "--weights", "none", "--out", str(tmp_path / "hest"), "--no-progress", "--crop"]) == 0
    made = next((tmp_path / "hest").glob("*/SYN2.tfrecord"))
    with pytest.raises(SettingsError, match="made with other settings"):
        spot_scores(tiny_run / "run", made, sample)
