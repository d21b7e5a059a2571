"""`hist2rna`'s parsers of spatial transcriptomics: extract-spots, train-spots, hest-bench, and the
options naming where samples are read from (spatial --truth uses them too), and `--backbone` / `--weights`
(extract's too)."""

from __future__ import annotations

from hist2rna_tf.cli.options import (EXTRACT, SCALE, TRAIN, add_features, add_no_progress, add_option, add_out,
                                     add_overwrite)
from hist2rna_tf.cli.settings import HestBenchInputs, SpotInputs
from hist2rna_tf.config import HestBenchConfig
from hist2rna_tf.extract.backbones.catalog import BACKBONES, ENCODERS
from hist2rna_tf.spot_run.cohort import SpotRunConfig


def add_backbone_options(parser) -> None:
    """`--backbone` and `--weights` (ExtractConfig's), with the catalog's names and weights files."""
    add_option(parser, "--backbone", EXTRACT, "backbone", metavar="NAME",
               help_values={"cnns": ", ".join(BACKBONES), "encoders": ", ".join(ENCODERS)})
    add_option(parser, "--weights", EXTRACT, "weights", metavar="W", help_values={"files": "; ".join(
        f"{name}: {spec.weights_file}" for name, spec in ENCODERS.items())})


def add_spot_sources(parser, samples: bool = True) -> None:
    """Where spatial samples are read from (SpotInputs): HEST's folder (and its --samples), or Space
    Ranger folders with their images; their pixel size and duplicate genes."""
    sources = [("--hest", "hest", "DIR"), ("--samples", "samples", "ID"), ("--spaceranger", "spaceranger", "DIR"),
               ("--image", "image", "FILE")]
    for flag, name, metavar in sources if samples else [s for s in sources if s[1] != "samples"]:
        add_option(parser, flag, SpotInputs, name, metavar=metavar)
    add_option(parser, "--bin-um", SpotInputs, "bin_um", metavar="UM")
    add_option(parser, "--mpp", SpotInputs, "mpp", metavar="UM_PER_PX")
    add_option(parser, "--duplicate-genes", SpotInputs, "duplicate_genes")


def add_extract_spots(commands) -> None:
    spots = commands.add_parser(
        "extract-spots", help="spatial transcriptomics samples -> each spot's features (HEST-1k, Space Ranger)",
        usage="hist2rna extract-spots (--hest DIR --samples ID [ID ...] | --spaceranger DIR [DIR ...] --image FILE "
              "[FILE ...]) (--backbone NAME --weights W | --like RUN) --out DIR [options]",
        description="Embed every spot of each sample: its patch as HEST cuts it (224 px at 0.5 um/px centred on "
                    "the spot, equal to HEST's dump_patches), through the stain normaliser (none by default, as "
                    "HEST) and the frozen backbone. Writes one feature record a sample, <out>/<backbone>/<sample_id>"
                    ".tfrecord, as `extract` writes a slide's: each spot a tile (its features, its patch's "
                    "top-left, its barcode), the sample's mean the record's feature. Every sample is read and "
                    "checked before anything is written; a re-run resumes.")
    add_spot_sources(spots)
    add_backbone_options(spots)
    add_out(spots, "features folder (a record a sample under <out>/<backbone>/)")
    add_option(spots, "--stain", SpotInputs, "stain")
    add_option(spots, "--like", SpotInputs, "like", metavar="RUN")
    add_option(spots, "--crop", SpotInputs, "crop")
    add_option(spots, "--batch-size", EXTRACT, "batch_size")
    add_no_progress(spots)
    scale = spots.add_argument_group("Ray", "spot extraction on a Ray cluster (pip install 'hist2rna-tf[ray]'): one "
                                            "worker per GPU, or per --cpus-per-worker CPUs; samples dealt to free "
                                            "workers; this process writes every record")
    add_option(scale, "--ray", SCALE, "ray", nargs="?", const="local", metavar="ADDRESS")
    add_option(scale, "--cpus-per-worker", SCALE, "cpus_per_worker", metavar="N")
    add_option(scale, "--max-retries", SCALE, "max_retries", metavar="N")


def add_train_spots(commands) -> None:
    train = commands.add_parser(
        "train-spots", help="spot features + their counts -> a head trained on spots, HEST's ridge beside it",
        usage="hist2rna train-spots --features DIR (--hest DIR --samples ID [ID ...] | --spaceranger DIR [DIR ...] "
              "--image FILE [FILE ...]) --out RUN [options]",
        description="Train the paper's head on spatial transcriptomics: each spot an example, its features its "
                    "patch's (`hist2rna extract-spots`), its targets the log1p of its counts (of --genes: HEST's most "
                    "variable genes chosen on the training samples only, by default 50). Samples are split by "
                    "patient (a patient's spots never on both sides; early stopping on whole training patients). "
                    "HEST's ridge probe (StandardScaler, PCA to 256, ridge) and the untrained head are scored on "
                    "the same held-out spots. Writes a run folder like `train`'s (a row a spot, SAMPLE:BARCODE) "
                    "with per_sample.csv: per held-out sample and gene, each model's Pearson (HEST's figure), p, "
                    "FDR and Spearman. `predict`, `spatial`, `export` and `report` take it: on a slide, each tile's "
                    "predicted spot-level expression.")
    add_features(train, "spot records of one backbone (extract-spots' <out>/<backbone>)")
    add_spot_sources(train)
    for flag, name, metavar in (("--genes", "genes", "hvg:N|all|FILE"), ("--normalize-total", "normalize_total", "N"),
                                ("--context-um", "context_um", "UM"), ("--test-samples", "test_samples", "ID"),
                                ("--test-fraction", "test_fraction", "F"), ("--patients", "patients", "CSV"),
                                ("--batch-size", "batch_size", "N"), ("--folds", "folds", "K")):
        add_option(train, flag, SpotRunConfig, name, metavar=metavar)
    add_option(train, "--seed", TRAIN, "seed", metavar="N")
    add_option(train, "--max-epochs", TRAIN, "max_epochs", metavar="N",
               help="at most this many epochs; early stopping usually ends sooner (default {}, the paper's)".format(
                   TRAIN.max_epochs))
    add_option(train, "--validation-fraction", TRAIN, "validation_fraction", metavar="F",
               help="training patients held back, whole, for early stopping (default {})".format(
                   TRAIN.validation_fraction))
    add_option(train, "--standardize", TRAIN, "standardize",
               help="NOT in the paper: z-score features and targets with the training spots' statistics inside the "
                    "model (needed for features that barely vary, e.g. random weights; the demo's spot run uses it)")
    add_option(train, "--deterministic", TRAIN, "deterministic")
    add_option(train, "--head-option", TRAIN, "head_options", metavar="NAME=VALUE", action="extend",
               help="the paper's head's settings as NAME=VALUE, recorded in the run: filters=256,512,512 "
                    "kernel_size=5 (the paper's, the default)")
    add_out(train, "run folder (a new one, unless --overwrite)")
    add_overwrite(train, "run")
    add_no_progress(train, "progress bar of epochs")


def add_hest_bench(commands) -> None:
    bench = commands.add_parser(
        "hest-bench", help="HEST-Benchmark on a task folder with any of the tool's encoders, as HEST runs it",
        usage="hist2rna hest-bench TASK --backbone NAME [NAME ...] --weights W [W ...] --out DIR [options]",
        description="HEST-Benchmark (Jaume et al., NeurIPS 2024) exactly as HEST's benchmark.py runs it: each "
                    "sample's patches (patches/<id>.h5: 224 px at 0.5 um/px around each spot) embedded by each "
                    "backbone into <out>/embeddings/<backbone>/<id>.h5 (HEST's embeddings files: its code reads "
                    "ours; a re-run keeps them), then per split log1p of the task's 50 genes, StandardScaler + "
                    "PCA fit on the training samples, ridge (lsqr, alpha 100/(D x G), no intercept) and Pearson's "
                    "r per gene on the test sample; <out>/results/<backbone>/ holds HEST's results_kfold.json, "
                    "each split's results.json and pearson_by_gene.csv. <out>/hest_bench.csv and .png set the "
                    "backbones side by side with HEST's published figures for the task (their README, labelled "
                    "theirs). Download a task with HEST's instructions (huggingface.co/datasets/MahmoodLab/hest-bench).")
    add_option(bench, "task", HestBenchInputs, "task", metavar="TASK")
    add_option(bench, "--backbone", HestBenchConfig, "backbones", metavar="NAME")
    add_option(bench, "--weights", HestBenchConfig, "weights", metavar="W")
    add_out(bench, "output folder (embeddings/, results/, hest_bench.csv, hest_bench.png)")
    add_option(bench, "--stain", HestBenchConfig, "stain")
    add_option(bench, "--batch-size", HestBenchConfig, "batch_size")
    add_option(bench, "--latent-dim", HestBenchConfig, "latent_dim")
    add_option(bench, "--seed", HestBenchConfig, "seed")
    add_no_progress(bench)
