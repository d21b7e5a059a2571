"""The command bodies of sites (issue 38: `folds`, `robustness`): each turns parsed arguments into one library call and
prints what it did."""

from __future__ import annotations

from pathlib import Path

from hist2rna_tf.cli.options import counted, from_args
from hist2rna_tf.errors import SettingsError
from hist2rna_tf.outputs import refuse_overlap, refuse_replacing_file


def cmd_folds(args) -> int:
    import json

    import numpy as np

    from hist2rna_tf.analysis.sites import fold_table, howard_objective, known_sites, patient_sites, site_preserved_folds
    from hist2rna_tf.atomic import write_table, write_text
    from hist2rna_tf.cli.settings import FoldsInputs
    from hist2rna_tf.expression import read_labels

    given = from_args(FoldsInputs(labels=args.labels), args)
    if given.stratified and given.site_preserved:
        raise SettingsError("--stratified and --site-preserved: give one (patient-level folds, or every site in one).")
    summary = Path(args.out).with_suffix(".json")
    refuse_overlap(args.out, {"--labels": given.labels})
    refuse_replacing_file(args.out, args.overwrite)
    refuse_replacing_file(summary, args.overwrite)
    labels = read_labels(given.labels, given.label_column).dropna()
    table = read_labels(given.labels, given.site_column) if given.site_column else None
    sites = patient_sites(labels.index, table) if given.site_preserved or table is not None else known_sites(labels.index)
    if given.site_preserved:
        result = site_preserved_folds(labels, sites, given.folds, given.time_limit)
        folds, info = result.folds, {"kind": "site-preserved", "objective": result.objective, "status": result.status,
                                     "bound": result.bound if np.isfinite(result.bound) else None,  # JSON has no NaN
                                     "seconds": round(result.seconds, 2)}
    else:
        from hist2rna_tf.model.folds import fold_of

        folds = fold_of(labels, given.folds, given.seed)
        info = {"kind": "patient-level, stratified", "objective": howard_objective(labels, folds, given.folds),
                "seed": given.seed}
    table = fold_table(labels, sites, folds)
    write_table(table, args.out, index=False)
    write_text(summary, json.dumps({**info, "folds": given.folds, "label_column": given.label_column}, indent=1))
    counts = fold_counts(table)
    of_sites = f" of {counted(table['site'].nunique(), 'site')}" if table["site"].notna().any() else ""
    print(f"{counted(len(table), 'patient')}{of_sites} in {given.folds} "
          f"{info['kind']} folds: Howard's objective {info['objective']:g}"
          + (f" ({info['status']}, bound {'none' if info['bound'] is None else format(info['bound'], 'g')}, "
             f"{info['seconds']:g} s)" if given.site_preserved else "")
          + f"; per fold: {counts}. Written to {args.out} (and {summary.name})")
    return 0


def fold_counts(table) -> str:
    """Each fold's patients per label, in words: "1: LumA 179, LumB 69; 2: ..."."""
    import pandas as pd

    counts = pd.crosstab(table["fold"], table["label"])
    return "; ".join(f"{fold}: " + ", ".join(f"{label} {n}" for label, n in row.items()) for fold, row in counts.iterrows())


def cmd_robustness(args) -> int:
    from hist2rna_tf.analysis.encoder_robustness import encoder_robustness, write_robustness
    from hist2rna_tf.cli.settings import RobustnessInputs
    from hist2rna_tf.expression import read_labels

    given = from_args(RobustnessInputs(features=tuple(args.features), labels=args.labels), args)
    refuse_overlap(args.out, {"--labels": given.labels, "FEATURES": list(given.features)})
    labels = read_labels(given.labels, given.label_column).dropna()
    sites = read_labels(given.labels, given.site_column) if given.site_column else None
    table, found = encoder_robustness(list(given.features), labels, sites, given.k, given.tiles_per_slide,
                                      given.bootstrap, given.seed)
    path = write_robustness(args.out, table, found, keep=(given.labels, *given.features))
    for name, row in table.iterrows():
        spread = f" (bootstrap {row['bootstrap_mean']:.3f} +- {row['bootstrap_std']:.3f})" if given.bootstrap else ""
        print(f"{name} ({row['backbone']}, {row['samples']}): robustness index {row['robustness_index']:.3f}{spread} at "
              f"k = {row['k']}, {row['subsets']} subsets of 2 {given.label_column} classes x 2 sites, "
              f"{row['n_samples']} samples; kNN balanced accuracy {row['balanced_accuracy']:.2f}")
    print(f"1: the class orders the features' neighbours; 0: the site does; 0.5: both alike. Written: {path} (and "
          "robustness_pairs.csv, robustness_curves.csv, robustness.png beside it)")
    return 0
