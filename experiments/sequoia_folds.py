"""SEQUOIA's TCGA-BRCA folds here (Pizurica et al., Nat Commun 2024): for each of their 5 folds, with
their published patient splits (gevaertlab/sequoia-pub's pre_processing/patient_splits.zip),

  1. their published model of the fold (gevaertlab/sequoia-brca-<k> on the Hugging Face hub, MIT:
     `huggingface-cli download gevaertlab/sequoia-brca-<k> --local-dir weights/sequoia-brca-<k>`)
     imported as a run (`hist2rna import-run --from sequoia`) and evaluated on the fold's test patients;
  2. SEQUOIA's head trained here (`--head sequoia`, their settings) on the fold's training and
     validation patients (10% of them held back for early stopping, as their 85 of 847) and evaluated
     on the same test patients, on SEQUOIA's genes that the expression table has;

each with the paper's metrics and SEQUOIA's test (all_genes.csv, sig_genes.csv), then
runs/sequoia_folds/comparison.csv: a row per fold and model (test patients, median Spearman across
genes, genes significant by SEQUOIA's test, median r of the top 1,000 genes, genes with r > 0.4).

Features: what their models read (extract.settings.sequoia_extraction, the recipe's one home), with UNI's
weights at weights/uni/pytorch_model.bin, of every tile of the tissue (their max_patches_per_slide=None);
extracted once from TCGA's slides (tcga_brca.py).
Targets: their models were trained on ln(1 + FPKM-UQ) of GDC's STAR counts
(pre_processing/download_RNASeq_TCGAbiolinks.R); TCGA in tcga_brca.py gives log2(1 + RSEM). Correlations
(Spearman, Pearson, Steiger's test) do not depend on the scale; SEQUOIA's RMSE condition does, so for
their published folds give an expression table of FPKM-UQ (--expression) to hold them to their own
scale. Patients need a PAM50 label (the run's subtype classifier); the others are left out, named.

    python -m experiments.sequoia_folds --splits patient_splits.zip            # every fold with weights
    python -m experiments.sequoia_folds --splits TCGA-BRCA.npy --folds 0 1

Importing this module is cheap: TensorFlow loads when a fold runs.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from dataclasses import replace
from pathlib import Path

from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.extract.settings import sequoia_extraction
from hist2rna_tf.model.heads import with_head_training

from experiments.tcga_brca import TCGA

CANCER, FOLDS = "BRCA", 5
SPLITS_MEMBER = f"patient_splits/TCGA-{CANCER}.npy"  # inside their patient_splits.zip
# SEQUOIA's tiles (pre_processing/patch_gen_hdf5.py: 256 px at 20x, every tile; compute_features_hdf5.py:
# UNI, resized to 224, ImageNet-normalised, no stain normalisation)


def read_splits(path: str | Path) -> dict[int, dict[str, list[str]]]:
    """Their patient splits: fold -> {"train", "val", "test"} -> sorted unique TCGA patient barcodes;
    from patient_splits.zip (its TCGA-BRCA.npy) or the .npy itself. The file pickles pandas objects of
    pandas 1 (pandas.read_pickle reads them under pandas 2)."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file; give sequoia-pub's pre_processing/patient_splits.zip or its "
                         f"{Path(SPLITS_MEMBER).name}.")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if SPLITS_MEMBER not in archive.namelist():
                raise SystemExit(f"{path}: no {SPLITS_MEMBER}; give sequoia-pub's pre_processing/patient_splits.zip.")
            data = archive.read(SPLITS_MEMBER)
    else:
        data = path.read_bytes()
    handle = io.BytesIO(data)
    version = np.lib.format.read_magic(handle)  # the .npy header, then the pickle
    np.lib.format.read_array_header_1_0(handle) if version == (1, 0) else np.lib.format.read_array_header_2_0(handle)
    splits = pd.read_pickle(io.BytesIO(handle.read()))  # a 0-d object array holding the dict
    splits = splits.item() if isinstance(splits, np.ndarray) else splits
    return {int(name.split("_")[1]): {part: sorted(set(map(str, patients))) for part, patients in fold.items()}
            for name, fold in splits.items()}


def sequoia_features(data: TCGA = TCGA(), batch_size: int = 32):
    """The extraction of what SEQUOIA's models read (see the module)."""
    return sequoia_extraction(str(data.encoder_weights / "uni" / "pytorch_model.bin"), batch_size=batch_size)


def fold_weights(data: TCGA, fold: int) -> Path:
    return data.encoder_weights / f"sequoia-{CANCER.lower()}-{fold}"


def fold_files(out: Path, fold: dict[str, list[str]], labels_path: Path) -> tuple[Path, Path]:
    """The fold's split file (train + val -> train, test -> test) and the labels of its test patients
    alone (what the published fold is evaluated on)."""
    import pandas as pd

    from hist2rna_tf.atomic import atomic_path
    from hist2rna_tf.barcodes import patient_id
    from hist2rna_tf.expression import read_labels, save_split

    labels = read_labels(labels_path)
    subset = pd.Series({**{p: "train" for p in fold["train"] + fold["val"]}, **{p: "test" for p in fold["test"]}})
    split = save_split(subset, labels, out / "split.csv")
    table = pd.read_csv(labels_path, sep=None, engine="python", dtype=str)
    test = table[table[table.columns[0]].map(patient_id).isin(set(fold["test"]))]
    with atomic_path(out / "test_labels.csv") as tmp:
        test.to_csv(tmp, index=False)
    return split, out / "test_labels.csv"


def run_fold(k: int, fold: dict[str, list[str]], features: Path, data: TCGA, expression: Path, out: Path) -> dict:
    """Fold k: the published model and SEQUOIA's head trained here, on its test patients."""
    from hist2rna_tf.model.import_run import import_sequoia, sequoia_genes
    from hist2rna_tf.model.train import train_run

    out.mkdir(parents=True, exist_ok=True)
    split, test_labels = fold_files(out, fold, data.labels)
    genes = out / "sequoia_genes.txt"
    genes.write_text("\n".join(sequoia_genes()) + "\n")
    folders = {}
    weights = fold_weights(data, k)
    if weights.is_dir():
        folders["published"] = import_sequoia(weights, out / "published", evaluate=RunInputs(
            str(features), str(expression), str(test_labels)), overwrite=True, progress=True)
    else:
        print(f"fold {k}: no published weights at {weights}; its model is skipped (download them to include it)")
    config = replace(with_head_training(TrainConfig(head="sequoia")), validation_fraction=0.1)
    inputs = RunInputs(str(features), str(expression), str(data.labels), genes=str(genes), drop_missing_genes=True,
                       split=str(split))
    folders["trained"] = train_run(inputs, out / "trained", config, verbose=2, overwrite=True).folder
    return folders


def figures(run_dir: Path) -> dict:
    """A run's held-out figures: the paper's and SEQUOIA's test."""
    import pandas as pd

    from hist2rna_tf.analysis import sequoia
    from hist2rna_tf.model import runs

    genes = runs.metrics(run_dir)["across_genes"]
    table = pd.read_csv(Path(run_dir) / runs.SEQUOIA_TABLES["all_genes"], index_col=0)
    return {"test_patients": runs.read_record(run_dir).patients["test"], "median_rho_genes": genes["rho"].median(),
            **sequoia.summary(table)}


def main(argv: list[str] | None = None, data: TCGA = TCGA()) -> Path:
    parser = argparse.ArgumentParser(prog="python -m experiments.sequoia_folds", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=Path, required=True,
                        help="sequoia-pub's pre_processing/patient_splits.zip, or its TCGA-BRCA.npy")
    parser.add_argument("--folds", type=int, nargs="+", choices=range(FOLDS), default=list(range(FOLDS)))
    parser.add_argument("--expression", type=Path, default=data.expression,
                        help="expression table (default: TCGA's RSEM; FPKM-UQ holds the published folds to theirs)")
    args = parser.parse_args(argv)  # before TensorFlow loads: --help is instant
    import pandas as pd

    from hist2rna_tf.atomic import atomic_path
    from hist2rna_tf.extract.cohort import extract_cohort

    splits = read_splits(args.splits)
    features_root = data.features.with_name(data.features.name + "_sequoia")
    extract_cohort([data.slides], features_root, sequoia_features(data), None, progress=True)  # done ones skipped
    root = data.runs / "sequoia_folds"
    rows = []
    for k in args.folds:
        for model, run_dir in run_fold(k, splits[k], features_root / "uni", data, args.expression,
                                       root / f"fold-{k}").items():
            rows.append({"fold": k, "model": model, **figures(run_dir)})
    with atomic_path(root / "comparison.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"comparison: {root / 'comparison.csv'}; each run: {root}/fold-<k>/(published|trained)/ (hist2rna report)")
    return root


if __name__ == "__main__":
    main()
