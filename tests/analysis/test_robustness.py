"""PathoROB's robustness index: equal to PathoROB's own code (bifold-pathomics/PathoROB at 46594e9, run by
tests/fixtures/make_pathorob_fixture.py on a synthetic cohort: tests/fixtures/pathorob_ri.npz), ordered as a
user expects (biology over centre), and refusing, with what is missing, the cohorts it cannot pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pandas as pd

from hist2rna_tf.analysis.robustness import PATHOROB_K, robustness_index
from hist2rna_tf.extract.records import read_record
from hist2rna_tf.errors import Hist2RNAError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pathorob_ri.npz"
K_PARAM = {"k61": PATHOROB_K, "k11": 11, "kopt": -1}  # fixture tag -> our k (PathoROB's k_opt_param 0, 11, -1)
RTOL = 1e-9


def relative_difference(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape and np.isfinite(theirs).all()
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """sklearn spreads each small neighbour search over OpenMP threads: seconds lost on a busy machine."""
    import sklearn.neighbors  # noqa: F401 - loads the OpenMP runtime that the limit applies to
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def ours(reference):
    inputs = (reference["features"], reference["biology"], reference["centre"], reference["groups"])
    return {tag: robustness_index(*inputs, k=k) for tag, k in K_PARAM.items()}


@pytest.mark.parametrize("tag", list(K_PARAM))
def test_index_and_curves_equal_pathorob(reference, ours, tag):
    result = ours[tag]
    assert result.k == int(reference[f"{tag}_k"])
    assert relative_difference(result.index, reference[f"{tag}_index"]) <= RTOL
    assert list(result.curves.index) == list(reference[f"{tag}_curve_k"])
    assert relative_difference(result.curve, reference[f"{tag}_curve"]) <= RTOL
    for kind in ("SS", "SO", "OS", "OO"):
        assert relative_difference(result.curves[kind], reference[f"{tag}_{kind}"]) <= RTOL
    assert list(result.accuracies.index) == list(reference[f"{tag}_accuracy_k"])
    assert relative_difference(result.accuracies, reference[f"{tag}_accuracy"]) <= RTOL
    summary = result.summary()
    theirs = dict(zip(reference[f"{tag}_summary_keys"].tolist(), reference[f"{tag}_summary_values"]))
    assert set(theirs) - set(summary) == {"confounder_log_reg_AUC"}  # not ported (see the module)
    for key, value in theirs.items():
        if key in summary:
            assert relative_difference(summary[key], value) <= RTOL, key
    assert result.n_samples == len(reference["features"])


@pytest.mark.parametrize("tag", ["k61", "k11"])
def test_pairs_equal_pathorob(reference, ours, tag):
    pairs = ours[tag].pairs
    keys = [tuple(row) for row in pairs[["class_a", "class_b", "centre_a", "centre_b"]].itertuples(index=False)]
    assert keys == [tuple(row) for row in reference["pairs"].tolist()]
    assert relative_difference(pairs["robustness_index"], reference[f"{tag}_pair_index"]) <= RTOL
    assert relative_difference(pairs["balanced_accuracy"], reference[f"{tag}_pair_accuracy"]) <= RTOL
    biology, centre = reference["biology"], reference["centre"]
    sizes = [int((np.isin(biology, (a, b)) & np.isin(centre, (s, t))).sum()) for a, b, s, t in keys]
    assert list(pairs["n_samples"]) == sizes


def test_bootstrap_equals_pathorob(reference):
    k, seed = int(reference["boot_k"]), int(reference["boot_seed"])
    result = robustness_index(reference["features"], reference["biology"], reference["centre"], reference["groups"],
                              k=k, n_bootstrap=int(reference["boot_n"]), seed=seed)
    assert relative_difference(result.curve, reference["boot_curve"]) <= RTOL
    assert relative_difference(result.bootstrap_mean, reference["boot_mean"][k - 1]) <= RTOL
    assert relative_difference(result.bootstrap_std, reference["boot_std"][k - 1]) <= RTOL
    again = robustness_index(reference["features"], reference["biology"], reference["centre"], reference["groups"],
                             k=k, n_bootstrap=50, seed=seed)
    assert again.bootstrap_std == robustness_index(reference["features"], reference["biology"], reference["centre"],
                                                   reference["groups"], k=k, n_bootstrap=50, seed=seed).bootstrap_std


def cohort(class_weight: float, centre_weight: float, seed: int = 3, per_cell: int = 24):
    """3 classes x 4 centres, slides of 4; features: class signal + centre signal + noise, weighted."""
    rng = np.random.default_rng(seed)
    classes, centres, dim = ["Basal", "LumA", "LumB"], ["A2", "AR", "BH", "E2"], 32
    class_mean, centre_mean = rng.normal(size=(3, dim)), rng.normal(size=(4, dim))
    biology = np.repeat(np.arange(3), 4 * per_cell)
    centre = np.tile(np.repeat(np.arange(4), per_cell), 3)
    groups = np.arange(len(biology)) // 4
    x = class_weight * class_mean[biology] + centre_weight * centre_mean[centre] + rng.normal(size=(len(biology), dim))
    return x, np.array(classes)[biology], np.array(centres)[centre], groups


def test_biology_over_centre_orders_the_index():
    biological = robustness_index(*cohort(0.6, 0.2), k=11)
    technical = robustness_index(*cohort(0.2, 0.6), k=11)
    assert biological.k == 11 and len(biological.pairs) == 18 and biological.n_samples == 288
    assert biological.index > 0.8 and technical.index < 0.3
    assert (biological.pairs["robustness_index"] > technical.pairs["robustness_index"]).all()


def test_shuffled_classes_fall_to_chance():
    x, biology, centre, groups = cohort(0.6, 0.2)
    shuffled = robustness_index(x, np.random.default_rng(0).permutation(biology), centre, groups, k=11)
    chance = float(shuffled.curves.loc[11, ["SO", "OO"]].sum())  # the share of other-centre neighbours
    assert abs(shuffled.index - chance) < 0.05 and 0.35 < shuffled.index < 0.6
    assert robustness_index(x, biology, centre, groups, k=11).index - shuffled.index > 0.35


def test_deterministic_and_independent_of_label_types():
    x, biology, centre, groups = cohort(1.0, 1.0, per_cell=20)
    first = robustness_index(x, biology, centre, groups, k=11)
    again = robustness_index(x.astype(np.float64), list(biology), list(centre), list(groups), k=11)
    assert first.index == again.index and first.curve.equals(again.curve)


def small(biology, centre, n_each: int = 6):
    rows = [(b, c) for b, c in zip(biology, centre) for _ in range(n_each)]
    x = np.random.default_rng(1).normal(size=(len(rows), 8))
    return x, [r[0] for r in rows], [r[1] for r in rows]


@pytest.mark.parametrize("cells, message", [
    ((["LumA", "LumB"], ["A2", "A2"]), r"needs samples from 2 centres or more; found 1 \(A2\)"),
    ((["LumA", "LumA"], ["A2", "BH"]), r"needs 2 biological classes or more; found 1 \(LumA\)"),
    ((["LumA", "LumB", "LumB"], ["A2", "A2", "BH"]),
     (r"needs 2 classes that both occur at the same 2 centres; found LumA at 1 centre\(s\) \(A2\); "
      r"LumB at 2 centre\(s\) \(A2, BH\)\.")),
    ((["LumA", "LumA", "LumB", "LumB"], ["A2", "AR", "BH", "E2"]),
     r"found LumA at 2 centre\(s\) \(A2, AR\); LumB at 2 centre\(s\) \(BH, E2\)\."),
])
def test_impossible_pairing_names_what_is_missing(cells, message):
    with pytest.raises(Hist2RNAError, match=message):
        robustness_index(*small(*cells), k=1)


def test_too_few_samples_for_k_names_the_pair():
    x, biology, centre = small(["LumA", "LumA", "LumB", "LumB"], ["A2", "BH", "A2", "BH"], n_each=10)
    groups = np.arange(len(x)) // 5
    with pytest.raises(Hist2RNAError, match=r"k=61 needs that many neighbours .* pair \(LumA, LumB, A2, BH\) has "
                                            r"40 samples \(largest group 5\), leaving 35\. The largest k every "
                                            r"subset allows here is 35: give k \(--k\) 35 or less"):
        robustness_index(x, biology, centre, groups)
    assert robustness_index(x, biology, centre, groups, k=35).k == 35


@pytest.mark.parametrize("change, message", [
    ("nan", r"NaN or infinite values in 1 row\(s\) \(first: row 3\)"),
    ("zero", r"1 all-zero row\(s\) \(first: row 3\)"),
    ("short", r"biology has 23 values for 24 feature rows"),
    ("missing", r"centre is missing for 1 sample\(s\) \(first: row 3\)"),
    ("k", r"k=0; give a whole number of neighbours"),
])
def test_bad_inputs_are_refused(change, message):
    x, biology, centre = small(["LumA", "LumA", "LumB", "LumB"], ["A2", "BH", "A2", "BH"])
    k = 0 if change == "k" else 3
    if change == "nan":
        x[3, 2] = np.nan
    if change == "zero":
        x[3] = 0
    if change == "short":
        biology = biology[:-1]
    if change == "missing":
        centre[3] = None
    with pytest.raises(Hist2RNAError, match=message):
        robustness_index(x, biology, centre, k=k)


def test_the_command_ranks_folders_by_what_orders_their_neighbours(tmp_path, capsys):
    """`hist2rna robustness BIO SITE --labels`: two features folders of the same 48 TCGA patients at four
    tissue source sites (read from their barcodes), one carrying the subtype, one the site: side by side in
    one table, the subtype's far above; the slide means' index is the library's; tiles drawn alike."""
    from hist2rna_tf.analysis.encoder_robustness import CURVES, FIGURE, PAIRS, TABLE
    from hist2rna_tf.cli import main

    from synthetic import record, write_labels, write_records

    rng = np.random.default_rng(3)
    patients = [f"TCGA-{site}-{i:04d}" for i in range(48) for site in [("A1", "B2", "C3", "D4")[i % 4]]]
    classes = np.array(["LumA", "Basal"])[rng.permutation(np.arange(48) % 2)]
    signal = {"LumA": np.r_[1.0, 0.0], "Basal": np.r_[0.0, 1.0]}
    sites = np.eye(4)[np.arange(48) % 4]
    folders = {}
    for name, weights in (("bio", (2.0, 0.2)), ("site", (0.2, 2.0))):
        records = []
        for i, patient in enumerate(patients):
            centre = np.r_[np.array([signal[classes[i]]]).ravel() * weights[0], sites[i] * weights[1]]
            tiles = centre + 0.3 * rng.normal(size=(4, 6))
            records.append(record(f"{patient}-01Z-00-DX1", tiles.mean(0), tiles=tiles, backbone=name))
        folders[name] = write_records(tmp_path / "features", records)
    labels = write_labels(tmp_path / "clinical.csv", patients, classes)
    out = tmp_path / "ri"
    assert main(["robustness", str(folders["bio"]), str(folders["site"]), "--labels", str(labels), "--k", "5",
                 "--out", str(out)]) == 0
    table = pd.read_csv(out / TABLE, index_col=0)
    assert list(table.index) == ["bio", "site"] and (table["subsets"] == 6).all()  # 1 class pair x 6 site pairs
    assert table.loc["bio", "robustness_index"] > 0.9 and table.loc["site", "robustness_index"] < 0.2
    mean = np.stack([read_record(folders["bio"] / f"{p}-01Z-00-DX1.tfrecord").feature for p in patients])
    direct = robustness_index(mean, classes, [p[5:7] for p in patients], patients, k=5)
    assert table.loc["bio", "robustness_index"] == pytest.approx(direct.index, rel=1e-12)
    assert all((out / name).is_file() for name in (PAIRS, CURVES, FIGURE))
    assert "bio (bio, slide means): robustness index" in capsys.readouterr().out
    tiles = tmp_path / "ri_tiles"
    assert main(["robustness", str(folders["bio"]), "--labels", str(labels), "--k", "5", "--tiles-per-slide", "3",
                 "--out", str(tiles)]) == 0
    drawn = pd.read_csv(tiles / TABLE, index_col=0)
    assert drawn.loc["bio", "n_samples"] == 3 * 48 and drawn.loc["bio", "samples"] == "3 tiles a slide"
    one_class = write_labels(tmp_path / "one.csv", patients, ["LumA"] * 48)
    assert main(["robustness", str(folders["bio"]), "--labels", str(one_class), "--out", str(tmp_path / "no")]) == 2
    assert "needs 2 biological classes or more; found 1 (LumA)" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
