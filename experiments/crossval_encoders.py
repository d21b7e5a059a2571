"""Figure 3 of Mondol et al., Cancers 2023 as a cross-validated table: every backbone (the paper's five
ImageNet CNNs, and each pathology foundation model whose weights you downloaded under weights/) in the
same 5 stratified folds of the same TCGA-BRCA patients, then each compared with EfficientNetV2S (the
paper's best) gene by gene: which predicts better, and whether the difference is significant (Wilcoxon
signed-rank over the genes' fold-mean correlations).

Writes runs/crossval/<backbone>/ (a `hist2rna crossval` folder each), runs/crossval/comparison.csv (a
row per backbone: its mean median Spearman across genes with the 95% CI, the difference from
EfficientNetV2S, the Wilcoxon p) and runs/crossval/report/ (`hist2rna report` of EfficientNetV2S's
crossval with every other's compared). Inputs: TCGA in tcga_brca.py (see experiments/README.md).
Run from the repository's folder: python -m experiments.crossval_encoders
"""

from dataclasses import replace

from experiments.tcga_brca import REFERENCE, TCGA, Experiment, extract, inputs_of, missing_inputs, with_weights

FOLDS, SEED = 5, 0


def main(data: TCGA = TCGA()) -> None:
    import pandas as pd

    from hist2rna_tf.model.crossval import crossval
    from hist2rna_tf.model.folds import SUMMARY, compare, read_table
    from hist2rna_tf.report.crossval import build_crossval_report

    root = data.runs / "crossval"
    folders = {}
    for name in with_weights(data):
        experiment = Experiment(name)
        inputs = replace(inputs_of(experiment, data, extract(experiment, data)), split=None)
        crossval(inputs, root / name, experiment.train, folds=FOLDS, seed=SEED, progress=True)
        folders[name] = root / name
    rows = []
    for name, folder in folders.items():
        summary = read_table(folder, SUMMARY)
        row = {"backbone": name, **{k: summary.loc[k, "median_rho_genes"] for k in ("mean", "ci95_low", "ci95_high")}}
        if name != REFERENCE:
            comparison = compare(folder, folders[REFERENCE], (name, REFERENCE))
            row.update(difference=comparison.genes["difference"].median(), wilcoxon_p=comparison.wilcoxon_p)
            print(comparison.verdict())
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "comparison.csv", index=False)
    others = [folder for name, folder in folders.items() if name != REFERENCE]
    path, _ = build_crossval_report(folders[REFERENCE], others, root / "report" / "report.html")
    print(f"comparison: {root / 'comparison.csv'}; report: {path}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m experiments.crossval_encoders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()  # --help: this, no run
    if missing_inputs(TCGA()):
        parser.exit(2, f"{parser.prog}: error: {'; '.join(missing_inputs(TCGA()))}: download them as "
                       f"experiments/README.md says.\n")
    main()
