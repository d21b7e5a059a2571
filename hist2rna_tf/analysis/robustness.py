"""PathoROB's Robustness Index of a feature space (Kömen, de Jong, Hense et al. 2025, "Towards Robust Foundation
Models for Digital Pathology", arXiv 2507.17845), ported from bifold-pathomics/PathoROB (BSD-3-Clause) at commit
46594e9: pathorob/robustness_index/robustness_index.py (`compute`, `reduce_dataset`, `get_median_k_opt_given_dataset`),
robustness_index_paired.py (`evaluate_model_pairs`, `select_optimal_k_value_pairs`) and robustness_index_utils.py
(`evaluate_knn_accuracy`, `filter_out_query_case_from_neighbors`, `calculate_fraction_same_class_per_k_value`,
`calculate_fractions`, `aggregate_stats`, `get_cumulative_sum`, `compute_robustness_index`,
`bootstrapped_robustness_index`, `save_balanced_accuracies`, `save_total_stats`, `get_k_values`).

What it measures: for each sample, its k nearest neighbours are sorted into four kinds by (biological class,
medical centre) against the sample's own: SS (same class, same centre), SO (same class, Other centre), OS (Other
class, Same centre) and OO. Counting over all samples and the first k neighbours, RI = SO / (SO + OS): of the
neighbours that share exactly one of class and centre, the share that share the class. 1: biology alone orders
the space; 0: the centre alone does; 0.5: class and centre pull equally. With the class labels shuffled, RI falls
to the share of other-centre neighbours (SO + OO), about 0.5 in a space that ignores the centre too.

How PathoROB computes it (TCGA, the paired evaluation, `compute`'s defaults):
- each feature vector is scaled to unit L2 norm (sklearn `Normalizer`); a zero vector is refused;
- the samples are split into subsets of 2 classes x 2 centres (PathoROB reads them from its metadata's `subset`
  column, data/metadata/tcga_2x2.csv; here: every pair of classes with every pair of centres at which both classes
  occur, in sorted order, a sample entering every subset its class and centre belong to);
- within each subset, its k + m nearest (Euclidean, sklearn's default search; m: the largest group's size),
  the sample itself and every sample of its own group (slide) dropped, every row cut to the shortest one's length:
  the neighbours ranked 1..w;
- the four kinds' counts, cumulated over the first j = 1..w neighbours, are summed over all subsets' samples
  (truncated to the narrowest subset's w) and divided by their total: the curves SS, SO, OS, OO, RI over j;
- the reported number is RI at PathoROB's k: 61 for TCGA (`get_median_k_opt_given_dataset`; 11 Camelyon, 46
  Tolkach ESCA), PATHOROB_K here; k=-1 picks k (PathoROB's `k_opt_param=-1`) as the one of their grid
  (1, 3, 5, 7, 9, 11, 21, ..., 1191) at which the kNN classifier's balanced accuracy (majority vote of the first
  k neighbours' classes, ties to the first class), averaged over the subsets, is highest.
Not ported: the logistic-regression AUCs in PathoROB's summary (cross-validated on folds drawn from an arbitrary
row order), the per-class curves and `max_patches_per_combi`. The optional bootstrap is theirs (rows of the pooled
table drawn with replacement, mean and std of RI) with rows in subset order, then input order, and numpy's legacy
generator seeded by `seed`; PathoROB draws from the global one, its rows shuffled (and `compute` fails in
`save_total_stats` when asked to bootstrap), so its draws cannot be repeated, only its procedure.

PathoROB is Copyright (c) 2025, BIFOLD Pathomics, under the BSD 3-Clause License; this port follows its
computation (no file of theirs is shipped), and keeps their notice: redistributions must retain the copyright
notice, this list of conditions and the disclaimer; the names of the copyright holder and contributors may not
be used to endorse products derived from it without permission; it is provided "as is", without warranty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from hist2rna_tf.errors import ArgumentError

PATHOROB_K = 61  # get_median_k_opt_given_dataset("tcga")
PATHOROB_K_GRID = (1, 3, 5, 7, 9, *range(11, 1200, 10))  # get_k_values("tcga", paired_evaluation=True)
KINDS = ("SS", "SO", "OS", "OO")  # (same or other class, same or other centre) of a neighbour


@dataclass(frozen=True)
class RobustnessIndex:
    """RI at `k` (PathoROB's `robustness_index` at `k_opt`); `curves`: the cumulative shares SS, SO, OS, OO and
    RI over k = 1..w (index k); `pairs`: each 2 x 2 subset (class_a, class_b, centre_a, centre_b), its samples,
    its own RI and kNN balanced accuracy at k; `n_samples`: distinct samples in any subset; `balanced_accuracy`:
    the kNN balanced accuracy at k, averaged over the subsets, and `accuracies` the same at each candidate k (k=-1:
    PathoROB's grid; else k alone); the bootstrap mean and std (ddof 1) of RI at k (None without)."""

    index: float
    k: int
    curves: pd.DataFrame
    pairs: pd.DataFrame
    n_samples: int
    balanced_accuracy: float
    accuracies: pd.Series
    bootstrap_mean: float | None = None
    bootstrap_std: float | None = None

    @property
    def curve(self) -> pd.Series:
        """RI over k = 1..w."""
        return self.curves["robustness_index"]

    def summary(self) -> dict[str, float | int]:
        """PathoROB's results_summary.json (`save_total_stats`) for these features, under its keys."""
        ss, so, os_, oo = (float(self.curves.loc[self.k, kind]) for kind in KINDS)
        last = self.curves.iloc[-1]
        result = {"k_opt": self.k, "balanced_accuracy": self.balanced_accuracy, "robustness_index": self.index,
                  "ID_performance": ss / (ss + os_), "OOD_performance": so / (so + oo),
                  "generalization_index": (ss * so + so * os_) / (ss * so + ss * oo),
                  "bio_vs_confounding": (ss + so) / (ss + os_), "confounder_insensitivity": (so + oo) / (ss + os_),
                  "normalized_confounder_insensitivity":
                      ((so + oo) / (last["SO"] + last["OO"])) / ((ss + os_) / (last["SS"] + last["OS"])),
                  "prediction_performance": (ss + so) / (ss + so + os_ + oo)}
        if self.bootstrap_mean is not None:
            result.update({"robustness_index-mean": self.bootstrap_mean, "robustness_index-std": self.bootstrap_std})
        return {key: value if key == "k_opt" else float(value) for key, value in result.items()}


@dataclass(frozen=True)
class PairNeighbours:
    """One 2 x 2 subset: its samples (row numbers), per sample the kind of each of its first w neighbours
    (`kinds`: name -> samples x w, booleans), each candidate k (cut to w) and its kNN balanced accuracy there."""

    key: tuple[str, str, str, str]
    members: np.ndarray
    kinds: dict[str, np.ndarray]
    ks: list[int]
    accuracies: list[float]

    @property
    def width(self) -> int:
        return self.kinds["SS"].shape[1]


def unit_rows(features) -> np.ndarray:
    """The features scaled to unit L2 norm per row (sklearn `normalize`, PathoROB's `Normalizer`); an
    ArgumentError for anything but a finite 2-D array without zero rows."""
    from sklearn.preprocessing import normalize

    x = np.asarray(features)
    if x.ndim != 2 or not len(x) or not x.shape[1]:
        raise ArgumentError(f"robustness index: features must be a samples x dimensions array; got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ArgumentError(f"robustness index: features hold NaN or infinite values in {int(bad.sum())} row(s) "
                            f"(first: row {int(np.flatnonzero(bad)[0])}); drop or fix those samples.")
    zero = ~x.any(axis=1)
    if zero.any():
        raise ArgumentError(f"robustness index: features have {int(zero.sum())} all-zero row(s) (first: row "
                            f"{int(np.flatnonzero(zero)[0])}), which have no direction; drop those samples.")
    return normalize(x, norm="l2")


def label_array(values: Sequence, name: str, n: int) -> np.ndarray:
    """`values` as strings, one per sample; an ArgumentError if the count differs or one is missing."""
    series = pd.Series(list(values), dtype=object)
    if len(series) != n:
        raise ArgumentError(f"robustness index: {name} has {len(series)} values for {n} feature rows; give one each.")
    if series.isna().any():
        raise ArgumentError(f"robustness index: {name} is missing for {int(series.isna().sum())} sample(s) "
                            f"(first: row {int(np.flatnonzero(series.isna())[0])}); give every sample one.")
    return series.astype(str).to_numpy()


def pathorob_pairs(biology: np.ndarray, centre: np.ndarray) -> list[tuple[str, str, str, str]]:
    """Every (class_a, class_b, centre_a, centre_b), sorted, whose four class-centre cells all hold samples; an
    ArgumentError naming what is missing when there is none."""
    classes, centres = sorted(set(biology)), sorted(set(centre))
    if len(centres) < 2:
        raise ArgumentError(f"robustness index: needs samples from 2 centres or more; found {len(centres)} "
                            f"({', '.join(centres)}).")
    if len(classes) < 2:
        raise ArgumentError(f"robustness index: needs 2 biological classes or more; found {len(classes)} "
                            f"({', '.join(classes)}).")
    cells = set(zip(biology, centre))
    pairs = [(a, b, x, y) for a, b in combinations(classes, 2) for x, y in combinations(centres, 2)
             if {(a, x), (a, y), (b, x), (b, y)} <= cells]
    if not pairs:
        found = []
        for c in classes:
            at = sorted(s for s in centres if (c, s) in cells)
            found.append(f"{c} at {len(at)} centre(s) ({', '.join(at[:4])}{', ...' if len(at) > 4 else ''})")
        raise ArgumentError("robustness index: needs 2 classes that both occur at the same 2 centres; found "
                            + "; ".join(found) + ".")
    return pairs


def group_excluded_neighbours(x: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Each row's neighbours, nearest first, with its own group (itself included) removed: PathoROB's
    `evaluate_knn_accuracy` (k + largest group searched) and `filter_out_query_case_from_neighbors` (rows cut
    to the shortest)."""
    from sklearn.neighbors import NearestNeighbors

    margin = int(np.bincount(groups).max())
    found = NearestNeighbors(n_neighbors=min(k + margin, len(x))).fit(x).kneighbors(x, return_distance=False)
    keep = groups[found] != groups[:, None]
    width = int(keep.sum(axis=1).min())
    return np.array([row[mask][:width] for row, mask in zip(found, keep)]).reshape(len(x), width)


def neighbour_kinds(neighbours: np.ndarray, biology: np.ndarray, centre: np.ndarray) -> dict[str, np.ndarray]:
    """Per sample and neighbour rank, whether the neighbour is of each kind SS, SO, OS, OO (`calculate_fractions`)."""
    same_class = biology[neighbours] == biology[:, None]
    same_centre = centre[neighbours] == centre[:, None]
    return {"SS": same_class & same_centre, "SO": same_class & ~same_centre,
            "OS": ~same_class & same_centre, "OO": ~same_class & ~same_centre}


def knn_balanced_accuracy(neighbours: np.ndarray, biology: np.ndarray, k: int) -> float:
    """Balanced accuracy (the mean of the two classes' recalls, as sklearn's) of the majority vote of the first k
    neighbours' classes (a tie: the class first in sorted order, as scipy's `mode`; `evaluate_knn_accuracy`)."""
    codes = np.unique(biology, return_inverse=True)[1].reshape(-1)
    votes = codes[neighbours[:, :k]]
    predicted = (2 * votes.sum(axis=1) > votes.shape[1]).astype(np.int64)
    recalls = [np.sum(predicted[codes == c] == c) / np.sum(codes == c) for c in (0, 1)]
    return float(np.mean(recalls))


class TooFewNeighbours(ArgumentError):
    """A subset with fewer neighbours outside each sample's group than k."""


def largest_k(biology: np.ndarray, centre: np.ndarray, groups: np.ndarray, keys: list) -> int:
    """The largest k every subset allows: its samples less its largest group, the fewest over the subsets."""
    sizes = []
    for a, b, s, t in keys:
        members = np.isin(biology, (a, b)) & np.isin(centre, (s, t))
        sizes.append(int(members.sum()) - int(pd.Series(groups[members]).value_counts().max()))
    return min(sizes)


def pair_neighbours(x, biology, centre, groups, key, k: int) -> PairNeighbours:
    """The neighbourhoods of one 2 x 2 subset, scored at k (or, k=-1, at each of PathoROB's grid that fits);
    an ArgumentError when the subset is too small for k."""
    a, b, s, t = key
    members = np.flatnonzero(np.isin(biology, (a, b)) & np.isin(centre, (s, t)))
    n = len(members)
    ks = [c for c in PATHOROB_K_GRID if c <= n] if k == -1 else [k]
    group_codes = np.unique(groups[members], return_inverse=True)[1].reshape(-1)
    neighbours = group_excluded_neighbours(x[members], group_codes, max(ks))
    width, need = neighbours.shape[1], max(k, 1)  # k=-1: PathoROB scores a candidate beyond w at w
    if width < need:
        largest = int(np.bincount(group_codes).max())
        raise TooFewNeighbours(f"robustness index: k={need} needs that many neighbours outside each sample's own "
                               f"group, but pair ({a}, {b}, {s}, {t}) has {n} samples (largest group {largest}), "
                               f"leaving {width}.")
    bio = biology[members]
    return PairNeighbours(key, members, neighbour_kinds(neighbours, bio, centre[members]),
                          [min(c, width) for c in ks], [knn_balanced_accuracy(neighbours, bio, c) for c in ks])


def cumulative_shares(tables: list[dict[str, np.ndarray]], width: int) -> pd.DataFrame:
    """SS, SO, OS, OO cumulated over neighbour ranks 1..width, summed over all samples and divided by their
    total, and RI = SO / (SO + OS) (`aggregate_stats`, `compute_robustness_index`; whole numbers summed over
    samples, then ranks: the same counts as their per-sample cumulative sums); index k."""
    counts = {kind: np.cumsum(sum(t[kind][:, :width].sum(axis=0, dtype=np.int64) for t in tables))
              for kind in KINDS}
    total = sum(counts.values())
    curves = pd.DataFrame({kind: counts[kind] / total for kind in KINDS}, index=pd.RangeIndex(1, width + 1, name="k"))
    curves["robustness_index"] = curves["SO"] / (curves["SO"] + curves["OS"])
    return curves


def mean_accuracies(pairs: list[PairNeighbours]) -> pd.Series:
    """The kNN balanced accuracy at each candidate k, averaged over the subsets (PathoROB's
    balanced-accuracies-bio.csv, `save_balanced_accuracies`): rows cut to the shortest, each candidate named
    by the last subset's effective k."""
    length = min(min(len(p.accuracies) for p in pairs), len(pairs[-1].ks))
    means = np.mean([p.accuracies[:length] for p in pairs], axis=0)
    return pd.Series(means, index=pd.Index(pairs[-1].ks[:length], name="k"), name="balanced_accuracy")


def bootstrap_index(so: np.ndarray, os_: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """Mean and std (ddof 1) of SO / (SO + OS) over rows drawn with replacement (`bootstrapped_robustness_index`,
    with numpy's legacy generator seeded by `seed`); `so`, `os_`: per row, the counts within the first k."""
    rng = np.random.RandomState(seed)
    values = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        drawn = rng.choice(len(so), size=len(so), replace=True)
        values[i] = so[drawn].sum() / (so[drawn].sum() + os_[drawn].sum())
    return float(values.mean()), float(values.std(ddof=1))


def check_k(k, n_bootstrap) -> None:
    """An ArgumentError unless k is a positive whole number or -1 and n_bootstrap a whole number, 0 or more."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or (k < 1 and k != -1):
        raise ArgumentError(f"robustness index: k={k!r}; give a whole number of neighbours, 1 or more "
                            f"(PathoROB's TCGA k: {PATHOROB_K}), or -1 to pick it by kNN balanced accuracy.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ArgumentError(f"robustness index: n_bootstrap={n_bootstrap!r}; give 0 (none) or a positive number "
                            "of resamples (PathoROB draws 1000).")


def robustness_index(features: np.ndarray, biology: Sequence, centre: Sequence, groups: Sequence | None = None,
                     k: int = PATHOROB_K, n_bootstrap: int = 0, seed: int = 0) -> RobustnessIndex:
    """PathoROB's paired robustness index of `features` (samples x dimensions) with each sample's biological
    class, centre and group (slide or patient, whose other samples are never its neighbours; None: each sample
    its own), read at k (PathoROB's TCGA k, 61; -1: chosen by kNN balanced accuracy); see the module.
    `n_bootstrap` > 0 adds the bootstrap mean and std of RI at k (PathoROB: 1000), drawn with `seed`."""
    check_k(k, n_bootstrap)
    x = unit_rows(features)
    biology, centre = label_array(biology, "biology", len(x)), label_array(centre, "centre", len(x))
    groups = np.arange(len(x)).astype(str) if groups is None else label_array(groups, "groups", len(x))
    keys = pathorob_pairs(biology, centre)
    try:
        pairs = [pair_neighbours(x, biology, centre, groups, key, int(k)) for key in keys]
    except TooFewNeighbours as exc:
        most = largest_k(biology, centre, groups, keys)
        raise TooFewNeighbours(f"{exc} The largest k every subset allows here is {most}: give k (--k) {most} or less, "
                               "or more samples.") from None
    width = min(p.width for p in pairs)
    accuracies = mean_accuracies(pairs)
    best = int(np.argmax(accuracies.to_numpy()))  # the first best
    k_opt = int(accuracies.index[best])
    if k_opt > width:
        raise ArgumentError(f"robustness index: the chosen k={k_opt} exceeds the {width} neighbours every subset "
                            "has outside each sample's group; give a fixed, smaller k.")
    curves = cumulative_shares([p.kinds for p in pairs], width)
    rows = []
    for p in pairs:
        own = cumulative_shares([p.kinds], p.width)
        rows.append((*p.key, len(p.members), float(own.loc[k_opt, "robustness_index"]), p.accuracies[best]))
    table = pd.DataFrame(rows, columns=["class_a", "class_b", "centre_a", "centre_b", "n_samples",
                                        "robustness_index", "balanced_accuracy"])
    mean = std = None
    if n_bootstrap:
        so = np.concatenate([p.kinds["SO"][:, :k_opt].sum(axis=1) for p in pairs])
        os_ = np.concatenate([p.kinds["OS"][:, :k_opt].sum(axis=1) for p in pairs])
        mean, std = bootstrap_index(so, os_, int(n_bootstrap), seed)
    n_samples = len(np.unique(np.concatenate([p.members for p in pairs])))
    return RobustnessIndex(float(curves.loc[k_opt, "robustness_index"]), k_opt, curves, table, n_samples,
                           float(accuracies.iloc[best]), accuracies, mean, std)
