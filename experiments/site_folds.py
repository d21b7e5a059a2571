"""Site-preserved folds here against Howard et al.'s published ones (Nat Commun 2021, 12:4423;
fmhoward/PreservedSiteCV, GPL: read as a reference, nothing of it shipped): on the patients their TCGA-BRCA
split and our PAM50 labels share, Howard's objective (the sum over subtypes and folds of (K x count in
fold - count in cohort)^2) of their folds and of ours (`hist2rna_tf.analysis.sites.site_preserved_folds`,
solved exactly with scipy's HiGHS), both checked to keep every site in one fold. Prints both objectives,
our solver's status and time, and the patients of each subtype in each fold.

    git clone https://github.com/fmhoward/PreservedSiteCV   # its "Annotation Files/brca_splits.csv"
    python -m experiments.site_folds --splits "PreservedSiteCV/Annotation Files/brca_splits.csv" \\
        --column CV3_subtype_preserved_site --labels tests/data/tcga_labels/tcga_brca_subtype_receptors.csv

Their split lists one slide a row (its barcode's patient taken) and each patient's fold in the column
named; they made it with CPLEX on their labels of 2021, so part of any difference may be labels.
Measured (2026-12-07, 2-core VM, AMD EPYC): 1,048 shared patients, theirs 1,734, ours 132 (optimal, 13 s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hist2rna_tf.config import PAM50_LABEL_COLUMN

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "tcga_labels" / \
    "tcga_brca_subtype_receptors.csv"


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.site_folds", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=Path, required=True, help="PreservedSiteCV's brca_splits.csv")
    parser.add_argument("--column", default="CV3_subtype_preserved_site",
                        help="its column of folds (default %(default)s)")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS,
                        help="clinical table with the PAM50 column (default: the tests' TCGA labels)")
    parser.add_argument("--label-column", default=PAM50_LABEL_COLUMN, help="(default %(default)s)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds for our solver (default %(default)s)")
    return parser.parse_args(argv)


def compare_folds(splits: Path, column: str, labels_path: Path, label_column: str, time_limit: float) -> dict:
    """Both fold sets' objectives on the shared patients, and each set's subtype counts per fold."""
    import pandas as pd

    from hist2rna_tf.analysis.sites import howard_objective, is_site_preserved, patient_sites, site_preserved_folds
    from hist2rna_tf.expression import read_labels
    from hist2rna_tf.model.folds import folds_from_file

    theirs = folds_from_file(splits, column)
    labels = read_labels(labels_path, label_column).dropna()
    shared = labels.index.intersection(theirs.index)
    labels, theirs = labels.loc[shared], theirs.loc[shared]
    sites = patient_sites(shared)
    k = int(theirs.max())
    ours = site_preserved_folds(labels, sites, k, time_limit)
    assert is_site_preserved(theirs, sites) and is_site_preserved(ours.folds, sites)
    return {"patients": len(shared), "k": k, "theirs": howard_objective(labels, theirs, k), "ours": ours.objective,
            "status": ours.status, "seconds": ours.seconds,
            "counts": {"theirs": pd.crosstab(theirs, labels), "ours": pd.crosstab(ours.folds, labels)}}


def main(argv=None) -> None:
    args = arguments(argv)
    result = compare_folds(args.splits, args.column, args.labels, args.label_column, args.time_limit)
    print(f"{result['patients']} patients shared, {result['k']} site-preserved folds: Howard's objective theirs "
          f"{result['theirs']:g}, ours {result['ours']:g} ({result['status']}, {result['seconds']:.1f} s)")
    for name, counts in result["counts"].items():
        print(f"{name}, patients per fold (rows) and subtype:\n{counts.to_string()}")


if __name__ == "__main__":
    main()
