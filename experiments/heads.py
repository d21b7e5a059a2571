"""The heads compared on TCGA-BRCA: the paper's Conv1D head on the slide mean (`hist2rna`), MIL-Lab's
gated ABMIL on every tile (`abmil`; from FEATHER-24K's weights when you downloaded them) and SEQUOIA's
linearised transformer on each slide's 100 k-means cluster means (`sequoia`), each trained with its
source's settings, in the same 5 stratified folds of the same patients, on the same features (extracted
once, every tile's vector kept).

Writes runs/heads/<backbone>/<head>/ (a `hist2rna crossval` folder each: the paper's metrics and
SEQUOIA's test per fold and pooled), runs/heads/<backbone>/comparison.csv (a row per head: its mean
median Spearman across genes with the 95% CI, the genes significant by SEQUOIA's test out of fold, the
difference from the paper's head and the Wilcoxon p over genes) and runs/heads/<backbone>/report/
(`hist2rna report` of the paper's head's crossval with the others compared). Inputs: TCGA in
tcga_brca.py (see experiments/README.md).

    python -m experiments.heads                                # UNI's features (weights/uni/), the 138 genes
    python -m experiments.heads --backbone efficientnetv2s --genes all
    python -m experiments.heads --heads hist2rna sequoia       # some of them

Importing this module is cheap: TensorFlow loads when `main` runs a crossval.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from hist2rna_tf.config import TrainConfig
from hist2rna_tf.extract.backbones.catalog import BACKBONE_NAMES
from hist2rna_tf.model.heads import HEADS, with_head_training

from experiments.tcga_brca import TCGA, Experiment, extract, inputs_of

FOLDS, SEED = 5, 0
REFERENCE_HEAD = "hist2rna"  # the paper's: every other head is compared with it
BACKBONE = "uni"  # SEQUOIA's published models read UNI's features, and FEATHER-24K has weights for them
# FEATHER-24K's ABMIL for UNI (abmil.base.uni.pc108-24k, gated): the file its hub page offers, under
# <encoder_weights>/feather-<backbone>/; used when there and the backbone is one FEATHER was trained on.
FEATHER_ENCODERS, FEATHER_FILE = ("uni", "uni2-h", "conch-v1.5"), "model.safetensors"


def head_config(head: str, backbone: str, data: TCGA = TCGA()) -> TrainConfig:
    """The head with its source's training settings (SEQUOIA's batch 16, <= 200 epochs, patience 20; the
    paper's otherwise), and FEATHER-24K's weights for ABMIL where they are here."""
    config = with_head_training(TrainConfig(head=head))
    feather = data.encoder_weights / f"feather-{backbone}" / FEATHER_FILE
    if head == "abmil" and backbone in FEATHER_ENCODERS and feather.is_file():
        config = replace(config, head_init=str(feather))
    return config


def compared(folders: dict[str, Path]) -> list[dict]:
    """A row per head: its figures, and beside every head but the paper's its comparison with it."""
    from hist2rna_tf.model.folds import SEQUOIA_COLUMN, SUMMARY, compare, read_table

    rows = []
    for head, folder in folders.items():
        summary = read_table(folder, SUMMARY)
        row = {"head": head, **{k: summary.loc[k, "median_rho_genes"] for k in ("mean", "ci95_low", "ci95_high")},
               "sequoia_significant_out_of_fold": summary.loc["out_of_fold", SEQUOIA_COLUMN]}
        if head != REFERENCE_HEAD and REFERENCE_HEAD in folders:
            comparison = compare(folder, folders[REFERENCE_HEAD], (head, REFERENCE_HEAD))
            row.update(difference=comparison.genes["difference"].median(), wilcoxon_p=comparison.wilcoxon_p)
            print(comparison.verdict())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None, data: TCGA = TCGA()) -> Path:
    parser = argparse.ArgumentParser(prog="python -m experiments.heads", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONE_NAMES, default=BACKBONE, help=f"default {BACKBONE}")
    parser.add_argument("--heads", nargs="+", choices=list(HEADS), default=list(HEADS), help="default: all")
    parser.add_argument("--genes", default="panel", help="panel (the paper's 138, default), all, or a file")
    args = parser.parse_args(argv)  # before TensorFlow loads: --help is instant
    import pandas as pd

    from hist2rna_tf.atomic import atomic_path
    from hist2rna_tf.model.crossval import crossval
    from hist2rna_tf.report.crossval import build_crossval_report

    experiment = Experiment(args.backbone, save_tile_features=True, genes=args.genes)
    inputs = replace(inputs_of(experiment, data, extract(experiment, data)), split=None)
    root = data.runs / "heads" / args.backbone
    folders = {}
    for head in args.heads:  # the same folds: the same patients, labels, seed
        crossval(inputs, root / head, head_config(head, args.backbone, data), folds=FOLDS, seed=SEED, progress=True)
        folders[head] = root / head
    with atomic_path(root / "comparison.csv") as tmp:
        pd.DataFrame(compared(folders)).to_csv(tmp, index=False)
    first = folders.get(REFERENCE_HEAD, next(iter(folders.values())))
    path, _ = build_crossval_report(first, [f for f in folders.values() if f != first], root / "report" / "report.html")
    print(f"comparison: {root / 'comparison.csv'}; report: {path}")
    return root


if __name__ == "__main__":
    main()
