"""`hist2rna <command>`: argparse at the edge, one call into the library per command.

Every default shown in `--help` is the library's own (the dataclasses of config.py). TensorFlow is
imported only by the commands that need it, so `hist2rna --help` is instant. Exit status: 0
success; 1 when any slide failed (the others are still processed); 2 for bad usage or an error
that stops the whole run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config import (BACKBONE_NAMES, PRECISION_NAMES, RAY_CPUS_PER_WORKER, RAY_MAX_RETRIES, SPATIAL_GENES,
                     STAIN_METHODS, THUMBNAIL_MPP, BaselineConfig, DemoConfig, ExtractConfig, ReportInputs, RunInputs,
                     StainConfig, TileConfig, TrainConfig, usable_cores)
from .errors import Hist2RNAError

log = logging.getLogger("hist2rna_tf")

# The library's defaults, shown in --help and used when an option is not given.
TILES, EXTRACT, TRAIN, INPUTS = TileConfig(), ExtractConfig(), TrainConfig(), RunInputs("", "", "")
BASELINE, REPORT, DEMO = BaselineConfig(), ReportInputs(run=Path(".")), DemoConfig()


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n, got {text!r}")
    return index, count


def _writable(path: Path, folder: bool) -> Path:
    """`path` if this process can create it (or write into it): refused at parse time, with the reason,
    when it is a file where a folder is wanted (or the reverse), lies under a file, or its nearest
    existing folder is read-only."""
    if path.exists() and path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{path} is a {'file' if folder else 'folder'}; give a "
                                         f"{'folder (new or existing)' if folder else 'file name'}")
    nearest = path if path.is_dir() else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {nearest} is a file, so nothing can be written under it")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {nearest} is not writable (a read-only folder or file system); "
                                         "give a place you can write to")
    return path


def _parsed(text: str, cast, expected: str):
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive_int(text: str) -> int:
    """An integer >= 1 (tile counts, sizes, batches, epochs, devices)."""
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    """An integer >= 0 (retries)."""
    value = _parsed(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    """A finite number > 0 (microns per pixel, watts)."""
    value = _parsed(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _fraction(text: str) -> float:
    """A fraction in (0, 1]."""
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text}")
    return value


def _open_fraction(text: str) -> float:
    """A fraction in (0, 1) (some patients held back, some left to train on)."""
    value = _fraction(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def _out_folder(text: str) -> Path:
    return _writable(Path(text), folder=True)


def _out_file(text: str) -> Path:
    return _writable(Path(text), folder=False)


def _add_tile_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tiles (the paper: 224 px at 0.25 um/px, ~1000 per slide)")
    group.add_argument("--annotations", type=Path, metavar="DIR",
                       help="folder of QuPath GeoJSON exports named <slide_id>.geojson (tumour regions)")
    group.add_argument("--tumour-classes", nargs="*", default=list(TILES.tumour_classes), metavar="NAME",
                       help="QuPath classes that count as tumour (default: any class not excluded)")
    group.add_argument("--exclude-classes", nargs="*", default=list(TILES.exclude_classes), metavar="NAME",
                       help=f"QuPath classes cut out of the tumour region (default: {' '.join(TILES.exclude_classes)})")
    _add_mpp(group, "files that carry none (plain images, TMA cores); overrides the file's own")
    group.add_argument("--tile-px", type=_positive_int, default=TILES.tile_size_px,
                       help=f"tile size in pixels (default {TILES.tile_size_px})")
    group.add_argument("--target-mpp", type=_positive_float, default=TILES.target_mpp,
                       help=f"tile resolution in um/px (default {TILES.target_mpp})")
    group.add_argument("--max-tiles", type=_positive_int, default=TILES.max_tiles,
                       help=f"cap per slide, spatially spread (default {TILES.max_tiles})")
    group.add_argument("--min-region-fraction", type=_fraction, default=TILES.min_region_fraction,
                       help=f"keep a tile when this much of it is in the region (default {TILES.min_region_fraction})")


def _add_mpp(parser, which: str) -> None:
    parser.add_argument("--mpp", type=_positive_float, help=f"microns per pixel for {which} (default: the file's own)")


def _add_stain_options(parser: argparse.ArgumentParser) -> None:
    default = StainConfig().method
    parser.add_argument("--stain", choices=STAIN_METHODS, default=default,
                        help=f"stain normalisation (default {default}). macenko: the hist2RNA authors' own "
                             "normaliser, the one their pipeline ran (color_normalizer.py: optical density in log10, "
                             "Io=240, alpha=1, beta=0.15, fixed targets); macenko-henorm: the HEnorm_python reference "
                             "they adapted (natural log: with the same beta more pixels count as stained); "
                             "staintools-macenko, staintools-vahadane (slow, for comparison); none")
    parser.add_argument("--stain-reference", type=Path, metavar="IMAGE",
                        help="fit the targets to this image instead (default: the paper's fixed targets; staintools "
                             "methods: a shipped TCGA tile)")


def _add_no_progress(parser: argparse.ArgumentParser, what: str = "progress bars") -> None:
    parser.add_argument("--no-progress", action="store_true", help=f"no {what}")


def _add_run(parser: argparse.ArgumentParser, what: str = "a training run folder (hist2rna train --out)") -> None:
    parser.add_argument("run", type=Path, metavar="RUN", help=what)


def _hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """An earlier name of an option, still accepted, not shown in --help."""
    parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hist2rna",
        description="hist2RNA (Mondol et al., Cancers 2023): gene expression from H&E whole slide images.",
    )
    parser.add_argument("--version", action="version", version=f"hist2rna-tf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug detail, and TensorFlow's own start-up and C++ log lines")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_extract, _add_normalize, _add_train, _add_predict, _add_export, _add_subtype, _add_spatial,
                _add_baseline, _add_report, _add_demo):
        add(commands)
    return parser


def _add_extract(commands) -> None:
    extract = commands.add_parser(
        "extract", help="slides -> one mean feature vector per slide (TFRecords)",
        description="Tile each slide's tumour region, normalise the stain, embed each tile with a frozen "
                    "ImageNet backbone and store the per-slide mean as <out>/<backbone>/<slide_id>.tfrecord. "
                    "Re-running resumes; manifest.csv lists every slide the folder has seen: done, skipped "
                    "(already done), failed (with the reason) or pending (an interrupted run's); "
                    "extract_config.json beside it records the settings the features were made with.")
    extract.add_argument("--slides", nargs="+", required=True, metavar="PATH",
                         help="slide files, folders of slides, or pre-tiled folders (one per patient)")
    extract.add_argument("--out", type=_out_folder, required=True, help="output folder")
    extract.add_argument("--backbone", default=EXTRACT.backbone,
                         help=f"one of {', '.join(BACKBONE_NAMES)} (default {EXTRACT.backbone}, the paper's best) "
                              "or a Keras model file taking RGB in [0, 255]")
    extract.add_argument("--weights", default=EXTRACT.weights,
                         help=f"imagenet (default {EXTRACT.weights}; downloaded by Keras on first use), none (random: "
                              "testing only), or a path to a local weights file")
    _add_tile_options(extract)
    _add_stain_options(extract)
    run = extract.add_argument_group("run")
    run.add_argument("--batch-size", type=_positive_int, default=EXTRACT.batch_size,
                     help=f"tiles per backbone batch (default {EXTRACT.batch_size})")
    run.add_argument("--read-threads", type=_positive_int,
                     help="parallel tile readers (default: two per CPU core this process may use, "
                          f"{2 * usable_cores()} here)")
    run.add_argument("--save-tile-features", action="store_true",
                     help="also store each tile's features (for spatial maps and the patch baseline)")
    run.add_argument("--shard", type=_shard, default=(EXTRACT.shard_index, EXTRACT.shard_count), metavar="I/N",
                     help="process every N-th slide starting at I (0-based), e.g. 0/4 .. 3/4 (default 0/1: all)")
    run.add_argument("--overwrite", action="store_true", help="redo slides that already have a record")
    _add_no_progress(run)
    scale = extract.add_argument_group("Ray", "extraction on a Ray cluster (pip install 'hist2rna-tf[ray]'): one "
                                              "worker per GPU, or per --cpus-per-worker CPUs; slides dealt to free "
                                              "workers, largest first; this process writes every record and the "
                                              "manifest")
    scale.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="--ray alone: a private Ray instance on this machine (bound to 127.0.0.1); --ray auto: "
                            "the cluster this node belongs to; --ray HOST:PORT: that cluster's head (default: no Ray)")
    scale.add_argument("--cpus-per-worker", type=_positive_int,
                       help=f"CPUs per worker on a cluster without GPUs (default {RAY_CPUS_PER_WORKER}, or all when fewer); "
                            "with GPUs: "
                            "each GPU's share of the CPUs")
    scale.add_argument("--max-retries", type=_count, default=RAY_MAX_RETRIES,
                       help=f"times a slide is dealt again after its worker died (default {RAY_MAX_RETRIES}); a slide "
                            "that fails for its own reason is not retried")
    gpu = extract.add_argument_group("GPU", "options for a machine with a GPU (refused without one: both are "
                                            "slower on a CPU); features stay within float rounding (cosine >= "
                                            "0.999 per slide)")
    gpu.add_argument("--precision", choices=PRECISION_NAMES, default=EXTRACT.precision,
                     help=f"the backbone's arithmetic: float32 or mixed (float16 on float32 weights; stored features "
                          f"stay float32) (default {EXTRACT.precision})")
    gpu.add_argument("--xla", action="store_true", help="XLA-compile the backbone (default off)")


def _add_normalize(commands) -> None:
    normalize = commands.add_parser(
        "normalize", help="stain-normalise one image file, to see what the pipeline does to a stain",
        description="Normalise an RGB image (PNG/JPEG/TIFF) with the chosen method and write the result.")
    normalize.add_argument("input", type=Path)
    normalize.add_argument("output", type=_out_file)
    _add_stain_options(normalize)
    _hidden_alias(normalize, "--method", "stain", choices=STAIN_METHODS)
    normalize.add_argument("--components", action="store_true",
                           help="also write the H-only and E-only images (<output>_H, <output>_E; macenko variants)")


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="stored features + RNA-seq -> the paper's head, trained on a stratified split",
        description="Join per-slide features to patients' RNA-seq (12-character TCGA barcodes; several slides of "
                    "a patient are averaged), take log2(1+x), split train/test stratified by subtype (the paper's "
                    "335/160 proportions) and fit the paper's Conv1D head. Writes a self-describing run folder: "
                    "config.json, genes.txt, split.csv, best.keras, history.csv, tensorboard/, the held-out "
                    "patients' predictions and targets and their Spearman and R2 tables.")
    train.add_argument("--features", required=True, help="folder of one backbone's feature TFRecords")
    train.add_argument("--expression", required=True,
                       help="RNA-seq table: cBioPortal RSEM (Hugo_Symbol rows) or patients x genes CSV/TSV, raw RSEM. "
                            "A gene column given twice is refused; a patient's several samples are averaged "
                            "(warned, named)")
    train.add_argument("--labels", required=True, help="clinical table with a subtype column (first column: patient); "
                       "a patient with two different labels is refused")
    train.add_argument("--label-column", default=INPUTS.label_column,
                       help=f"subtype column (default {INPUTS.label_column})")
    train.add_argument("--subtypes", nargs="+", default=list(INPUTS.subtypes),
                       help=f"subtypes kept (default: the paper's {' '.join(INPUTS.subtypes)})")
    train.add_argument("--genes", default=INPUTS.genes,
                       help=f"all (the 138), an assay (pam50, oncotype, mammaprint, endopredict, bci, mammostrat) or "
                            f"a file of gene symbols (default {INPUTS.genes})")
    train.add_argument("--drop-missing-genes", action="store_true",
                       help="train without genes the table lacks (recorded in the run) instead of failing")
    train.add_argument("--split", help="reuse a split.csv from an earlier run (default: a new stratified split)")
    train.add_argument("--out", type=_out_folder, required=True, help="run folder")
    train.add_argument("--seed", type=int, default=TRAIN.seed,
                       help=f"seed of the split, initialisation and shuffling (default {TRAIN.seed})")
    train.add_argument("--deterministic", action="store_true", help="deterministic TensorFlow ops (slower)")
    train.add_argument("--max-epochs", type=_positive_int, default=TRAIN.max_epochs,
                       help=f"at most this many epochs; early stopping usually ends sooner (default {TRAIN.max_epochs}, "
                            "the paper's)")
    train.add_argument("--validation-fraction", type=_open_fraction, default=TRAIN.validation_fraction,
                       help=f"training patients held back for early stopping (default {TRAIN.validation_fraction})")
    train.add_argument("--standardize", action="store_true",
                       help="NOT in the paper: z-score features and targets with the training patients' statistics "
                            "inside the model (for features that barely vary between slides, e.g. random weights)")


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict", help="predicted log2 expression per patient, from slides or stored features",
        usage="hist2rna predict RUN (--features DIR | --slides PATH [PATH ...]) --out CSV [options]",
        description="Apply a trained run (or a head export) to stored features, or to slides (extracted first "
                    "with the run's own backbone, weights, tiling and stain settings, into <out>_features/ beside "
                    "the CSV: re-running resumes). Writes patients x genes.")
    predict.add_argument("model", nargs="?", metavar="RUN",
                         help="a training run folder, or a head SavedModel export (hist2rna export)")
    _hidden_alias(predict, "--model", "model_option")  # before 0.4.0 the run was given as --model RUN
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", help="folder of feature TFRecords (same backbone as the model)")
    source.add_argument("--slides", nargs="+", metavar="PATH",
                        help="slides to extract first (needs a run folder); their features go to <out>_features/")
    predict.add_argument("--annotations", type=Path, help="QuPath GeoJSON folder for --slides")
    _add_mpp(predict, "--slides files that carry none")
    predict.add_argument("--out", type=_out_file, required=True, help="CSV to write (patients x genes)")
    _add_no_progress(predict)


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export", help="SavedModels for serving: the head alone and end to end (tiles -> genes)",
        description="Export a training run as two TensorFlow SavedModels under <out>/<name>/<version>/ (the "
                    "TensorFlow Serving layout): <name>_head (features -> genes) and <name> (uint8 tiles of one "
                    "slide -> Macenko -> backbone -> mean -> head -> genes). Gene names and stain targets inside.")
    _add_run(export)
    export.add_argument("--out", type=_out_folder, default="saved_models", help="export root (default saved_models)")
    export.add_argument("--name", help="model name (default: the backbone's)")
    export.add_argument("--version", type=_positive_int, help="version number (default: the next free one)")


def _add_subtype(commands) -> None:
    subtype = commands.add_parser(
        "subtype", help="PAM50 subtype per sample (nearest centroid, or the paper's soft-voting classifier)",
        description="centroid: log data, median-centre each gene over the cohort, Spearman with each Parker 2009 "
                    "centroid, highest wins; writes the call and the per-centroid correlations. voting: the paper's "
                    "soft-voting classifier (RF, MLP, LDA, LR) on the PAM50 genes, trained on a labelled reference "
                    "cohort (e.g. TCGA RNA-seq) and applied to --expression (e.g. predicted genes); writes the call "
                    "and the class probabilities.")
    subtype.add_argument("--expression", required=True,
                         help="cBioPortal RSEM or samples x genes table (raw RSEM unless --no-log)")
    subtype.add_argument("--method", choices=["centroid", "voting"], default="centroid",
                         help="centroid (default; Parker 2009 nearest centroid) or voting (the paper's soft-voting "
                              "classifier, trained on --reference-expression and --reference-labels)")
    subtype.add_argument("--reference-expression",
                         help="voting: measured RNA-seq of labelled patients to train on (raw RSEM unless --no-log)")
    subtype.add_argument("--reference-labels", help="voting: table with the reference patients' PAM50 subtype")
    subtype.add_argument("--label-column", default=INPUTS.label_column,
                         help=f"subtype column of --reference-labels (default {INPUTS.label_column})")
    subtype.add_argument("--no-log", action="store_true", help="values are already logged (or microarray)")
    subtype.add_argument("--out", type=_out_file, required=True, help="CSV to write")


def _add_spatial(commands) -> None:
    spatial = commands.add_parser(
        "spatial", help="maps of tile-level predicted genes and PAM50 calls over slide thumbnails",
        description="Apply a run's head to each tile's own feature (extract with --save-tile-features) and draw, "
                    "over each slide's thumbnail, the predicted expression of the chosen genes and each tile's PAM50 "
                    "call (the paper's soft-voting classifier, trained on the run's training patients, on the tile's "
                    "predicted PAM50 genes). Writes <slide>_<gene>.png, <slide>_PAM50.png and <slide>_tiles.csv. "
                    "The head was trained on slide means: read tile values as where the signal comes from.")
    _add_run(spatial)
    spatial.add_argument("--features", type=Path, required=True, help="feature TFRecords with tile features")
    spatial.add_argument("--slides", nargs="+", required=True, metavar="PATH",
                         help="the slides (files or folders) to map")
    spatial.add_argument("--genes", nargs="+", default=list(SPATIAL_GENES),
                         help=f"genes to map (default {' '.join(SPATIAL_GENES)})")
    spatial.add_argument("--no-subtypes", action="store_true", help="no PAM50 call map")
    spatial.add_argument("--thumbnail-mpp", type=_positive_float, default=THUMBNAIL_MPP,
                         help=f"thumbnail resolution (default {THUMBNAIL_MPP:g} um/px)")
    spatial.add_argument("--out", type=_out_folder, required=True, help="folder for the PNGs and CSVs")


def _add_baseline(commands) -> None:
    baseline = commands.add_parser(
        "baseline", help="the paper's patch-based comparison (tile-level training) and both approaches' cost",
        description="Train the patch-based baseline on a hist2RNA run's patients, split, genes, head and training "
                    "settings: every tile gets its slide's RNA-seq as its target and a slide's prediction is the mean "
                    "of its tiles'. --mode frozen learns from the stored per-tile features (extract with "
                    "--save-tile-features); --mode finetune trains the backbone too, on the tile images, as the "
                    "paper's patch-based models were (slow without a GPU). Writes a run folder (held-out predictions "
                    "and metrics, for Figure 10) and costs.csv: training time and energy (time x --device-watts x "
                    "--n-devices) of both approaches (Figure 6). Pass the folder to `hist2rna report --baseline`.")
    _add_run(baseline, "the hist2RNA training run to compare with")
    baseline.add_argument("--out", type=_out_folder, required=True, help="baseline run folder")
    baseline.add_argument("--mode", choices=["frozen", "finetune"], default=BASELINE.mode,
                          help=f"frozen: head on stored tile features; finetune: backbone trained on tiles (default "
                               f"{BASELINE.mode})")
    baseline.add_argument("--slides", nargs="+", type=Path, metavar="PATH",
                          help="finetune: the slides (files or folders) the run was extracted from")
    baseline.add_argument("--annotations", type=Path, help="finetune: their QuPath GeoJSON folder")
    baseline.add_argument("--tiles-per-slide", type=_positive_int,
                          help="finetune: at most this many tiles of each slide (default: all planned)")
    baseline.add_argument("--max-epochs", type=_positive_int,
                          help=f"default: the run's (the paper's {TRAIN.max_epochs})")
    baseline.add_argument("--batch-size", type=_positive_int, help=f"default: the run's (the paper's {TRAIN.batch_size})")
    baseline.add_argument("--device-watts", type=_positive_float, default=BASELINE.device_watts,
                          help=f"power of one device in W for the energy figure (default {BASELINE.device_watts:g}, "
                               "the paper's V100)")
    baseline.add_argument("--n-devices", type=_positive_int, default=BASELINE.n_devices,
                          help=f"devices the time was spent on (default {BASELINE.n_devices})")
    baseline.add_argument("--device", default=BASELINE.device,
                          help="device description for costs.csv (default: detected)")
    _add_no_progress(baseline, "progress bar or per-epoch lines")
    _hidden_alias(baseline, "--quiet", "no_progress", action="store_true")  # its name before 0.4.0


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="one self-contained HTML report of a run (metrics, figures, subtypes, clinical analysis)",
        description="Write <run>/report/report.html: the run's config, held-out Spearman across patients and genes "
                    "with bootstrap CIs (Figures 3-5), the soft-voting subtype classifier on the predicted PAM50 "
                    "genes, and with an external cohort the biomarker checks (Figures 7-8), LumA/LumB "
                    "reclassification, Tables 1-2 and Kaplan-Meier curves (Figure 9); the paper's figures beside. "
                    "Every figure and table is also written beside it as PNG and CSV.")
    _add_run(report)
    report.add_argument("--compare", type=Path, nargs="+", metavar="RUN",
                        help="other runs (e.g. other backbones) for Figure 3")
    report.add_argument("--external-predictions", type=Path, help="predicted genes of an external cohort (hist2rna predict)")
    report.add_argument("--clinical", type=Path, help="the external cohort's clinical table (CSV/TSV)")
    report.add_argument("--clinical-columns", type=Path,
                        help='JSON mapping our names to your columns, e.g. {"os_months": "OS_MONTHS", "ki67_percent": '
                             'null}; keys: patient os_months os_event grade size_mm age node_positive er pr her2 '
                             "ki67_percent ihc_subtype (default: our names)")
    report.add_argument("--run-clinical", type=Path,
                        help="clinical table of the run's own cohort (e.g. TCGA: ER/PR/HER2 status, grade): Figure 7's "
                             "rows for its held-out patients, predicted and measured")
    report.add_argument("--run-clinical-columns", type=Path, help="JSON mapping for --run-clinical (as --clinical-columns)")
    report.add_argument("--baseline", type=Path,
                        help="a `hist2rna baseline` folder: patch-based vs hist2RNA (Figure 10) and cost (Figure 6)")
    report.add_argument("--spatial-maps", type=Path,
                        help="a `hist2rna spatial` folder: its PNG maps are embedded in the report")
    report.add_argument("--costs", type=Path, help="CSV approach,hours,kwh (default: the --baseline's costs.csv)")
    report.add_argument("--n-boot", type=_positive_int, default=REPORT.n_boot,
                        help=f"bootstrap resamples for the CIs (default {REPORT.n_boot})")
    report.add_argument("--out", type=_out_file, help="HTML file (default <run>/report/report.html)")


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole pipeline on the embedded SYNTHETIC demo cohort",
        description="Everything, on a SYNTHETIC cohort, under --out: (1) cohort/: demo slides assembled from 25 "
                    "real TCGA-BRCA tiles of four tumours, with QuPath annotations, synthetic RNA-seq tied to each "
                    "slide's mix of tumours, PAM50 labels and a synthetic clinical table; (2) features/: per-slide "
                    "mean features (and per-tile ones); (3) run/: the paper's head on a stratified split "
                    "(--standardize with random weights), with held-out Spearman and R2; controls/: the same "
                    f"trained on shuffled targets ({DEMO.n_controls}); (4) baseline/: the patch-based comparison "
                    "(frozen tile features) and both approaches' cost; (5) predictions.csv for every patient; "
                    f"(6) external/: a second cohort of {DEMO.n_external} TMA-core-sized slides with a synthetic "
                    "clinical table, predicted with the run; (7) saved_models/: both SavedModel exports; (8) "
                    "spatial/: tile maps of a held-out slide; (9) report/report.html, and demo_summary.json. "
                    "Re-running reuses the cohort and the features. Random backbone weights unless --weights "
                    "imagenet.")
    demo.add_argument("--out", type=_out_folder, default=str(DEMO.out), help=f"output folder (default {DEMO.out})")
    demo.add_argument("--n-slides", type=_positive_int, default=DEMO.n_slides,
                      help=f"slides in the cohort (default {DEMO.n_slides})")
    demo.add_argument("--backbone", default=DEMO.backbone, help=f"backbone (default {DEMO.backbone})")
    demo.add_argument("--weights", default=DEMO.weights,
                      help=f"none (random, offline), imagenet or a weights file (default {DEMO.weights})")
    _add_no_progress(demo)


# --- commands -------------------------------------------------------------------------------------


def cmd_extract(args) -> int:
    from .features import extract_cohort

    config = ExtractConfig(
        backbone=args.backbone, weights=args.weights, batch_size=args.batch_size, read_threads=args.read_threads,
        save_tile_features=args.save_tile_features, shard_index=args.shard[0], shard_count=args.shard[1],
        overwrite=args.overwrite, precision=args.precision, xla=args.xla,
        tiles=replace(TILES, tile_size_px=args.tile_px, target_mpp=args.target_mpp, max_tiles=args.max_tiles,
                      min_region_fraction=args.min_region_fraction, tumour_classes=tuple(args.tumour_classes),
                      exclude_classes=tuple(args.exclude_classes), mpp_override=args.mpp),
        stain=_stain(args),
    )
    if not args.gpus and args.ray is None:
        log.info("TensorFlow sees no GPU here: the backbone runs on the CPU.")
    start = time.perf_counter()
    if args.ray is None:
        results = extract_cohort(args.slides, args.out, config, args.annotations, progress=not args.no_progress)
    else:
        from .distributed import RayWorkers

        with RayWorkers.start(config, None if args.ray == "local" else args.ray, args.cpus_per_worker,
                              max_retries=args.max_retries) as workers:
            results = extract_cohort(args.slides, args.out, config, args.annotations, progress=not args.no_progress,
                                     extractor=workers)
    return _report_extraction(results, time.perf_counter() - start, args.out)


def _stain(args) -> StainConfig:
    return replace(StainConfig(), method=args.stain,
                   reference_image=str(args.stain_reference) if args.stain_reference else None)


def _report_extraction(results, seconds: float, out: Path) -> int:
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed", "pending")}
    tiles = sum(r.n_tiles for r in results if r.status == "done")
    rate = f", {tiles / seconds:.1f} tiles/s" if tiles and seconds > 0 else ""
    others = f", {counts['pending']} left to another run into the same folder" if counts["pending"] else ""
    print(f"{len(results)} slides: {counts['done']} done, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed{others}; {tiles} tiles in {seconds:.1f} s{rate}. Output: {out}")
    for r in results:
        if r.status == "failed":
            print(f"  FAILED {r.slide_id}: {r.reason}")
    if not results:
        print("no slides found.")
        return 1
    return 1 if counts["failed"] or counts["done"] + counts["skipped"] + counts["pending"] == 0 else 0


def cmd_normalize(args) -> int:
    from .stain import normalise_image_file

    written, stained = normalise_image_file(args.input, args.output, _stain(args), components=args.components)
    if not stained:
        print(f"{args.input}: too little stain to estimate; written unchanged.")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_train(args) -> int:
    from .train import train_run

    inputs = RunInputs(features=str(args.features), expression=args.expression, labels=args.labels,
                       label_column=args.label_column, subtypes=tuple(args.subtypes), genes=args.genes,
                       drop_missing_genes=args.drop_missing_genes, split=args.split)
    config = replace(TRAIN, seed=args.seed, deterministic=args.deterministic, max_epochs=args.max_epochs,
                     validation_fraction=args.validation_fraction, standardize=args.standardize)
    summary = train_run(inputs, args.out, config)
    genes, patients = summary["metrics"]["across_genes"], summary["metrics"]["across_patients"]
    print(f"{summary['patients']['train']} training / {summary['patients']['test']} held-out patients, "
          f"{summary['genes']} genes, {summary['epochs']} epochs (best validation MSE {summary['best_val_loss']:.3f}).")
    print(f"held-out Spearman: across genes median {genes['median']:.2f} (IQR {genes['q25']:.2f}-{genes['q75']:.2f}), "
          f"{genes['significant']}/{genes['total']} genes at FDR < 0.05; across patients median "
          f"{patients['median']:.2f}; {summary['metrics']['r2_at_least_0.1']} genes with R2 >= 0.1. Folder: {args.out}")
    return 0


def cmd_predict(args) -> int:
    from .atomic import write_table
    from .predict import Predictor, predict_patients, predict_slides, slides_features_dir

    if bool(args.model) == bool(args.model_option):
        raise Hist2RNAError("give the model once: `hist2rna predict RUN --features ... --out ...` (RUN: a training "
                            "run folder or a head export).")
    predictor = Predictor(args.model or args.model_option)
    if predictor.trained_on_random_weights:
        print("warning: the model was trained on features of a backbone with random weights (--weights none): "
              "these predictions demonstrate the pipeline, not biology.", file=sys.stderr)
    if args.slides:
        features = slides_features_dir(args.out)
        start = time.perf_counter()
        table, results = predict_slides(predictor, args.slides, features, args.annotations, args.mpp,
                                        progress=not args.no_progress)
        status = _report_extraction(results, time.perf_counter() - start, features)
        if table is None:
            return status
    else:
        table = predict_patients(predictor, args.features)
    write_table(table, args.out)
    print(f"predicted {table.shape[1]} genes for {table.shape[0]} patients: {args.out}")
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    head_dir, full_dir = export_run(args.run, args.out, args.name, args.version)
    print(f"exported {head_dir} (features -> genes) and {full_dir} (tiles of one slide -> genes)")
    return 0


def cmd_subtype(args) -> int:
    from .atomic import write_table
    from .subtype import subtype_table

    calls = subtype_table(args.expression, args.method, args.reference_expression, args.reference_labels,
                          args.label_column, logged=args.no_log)
    write_table(calls, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in calls["call"].value_counts().items())
    print(f"{len(calls)} samples: {counts}. Written to {args.out}")
    if "n_genes" in calls and (calls["n_genes"] < 50).any():
        partial = calls["n_genes"][calls["n_genes"] < 50]
        print(f"{len(partial)} samples called on fewer than 50 PAM50 genes (their measured ones; as few as "
              f"{partial.min()}): see the n_genes column.")
    return 0


def cmd_spatial(args) -> int:
    from .spatial import write_spatial_maps

    written = write_spatial_maps(args.run, args.features, args.slides, args.out, args.genes,
                                 subtypes=not args.no_subtypes, thumbnail_mpp=args.thumbnail_mpp)
    slides = {p.name.rsplit("_", 1)[0] for p in written}
    print(f"{len(written)} files for {len(slides)} slides in {args.out}")
    return 0


def cmd_baseline(args) -> int:
    from .baseline import train_patch_baseline

    config = replace(BASELINE, mode=args.mode, max_epochs=args.max_epochs, batch_size=args.batch_size,
                     tiles_per_slide=args.tiles_per_slide, device_watts=args.device_watts,
                     n_devices=args.n_devices, device=args.device)
    summary = train_patch_baseline(args.run, args.out, config, slides=args.slides, annotations_dir=args.annotations,
                                   verbose=0 if args.no_progress else 1 if sys.stdout.isatty() else 2)  # bar on a tty
    genes = summary["metrics"]["across_genes"]
    print(f"{summary['epochs']} epochs; {genes['significant']}/{genes['total']} genes at FDR < 0.05.")
    _print_costs(Path(args.out))
    return 0


def _print_costs(baseline: Path) -> None:
    """The patch-based baseline's held-out median and both approaches' training time and energy."""
    from . import runs

    summary = runs.read_config(baseline)
    genes = runs.metrics(baseline)["across_genes"]["rho"]
    print(f"patch-based baseline ({summary['baseline']['mode']}, {summary['tiles']['train']} training tiles): "
          f"held-out median across genes {genes.median():.2f} -> {baseline}")
    for row in runs.read_costs(baseline).itertuples():
        print(f"  {row.approach}: {row.seconds:.1f} s training, {row.kwh * 1000:.3g} Wh at {row.watts:g} W x "
              f"{row.n_devices} ({row.device})")


def cmd_report(args) -> int:
    from .report import build_report
    from .spatial import map_figures

    if bool(args.external_predictions) != bool(args.clinical):
        raise Hist2RNAError("--external-predictions and --clinical go together (predicted genes and the clinical "
                            "table of the same external cohort).")
    inputs = replace(REPORT, run=args.run, compare=args.compare or [], external_predictions=args.external_predictions,
                     clinical=args.clinical, clinical_columns=args.clinical_columns, costs=args.costs,
                     baseline=args.baseline, run_clinical=args.run_clinical,
                     run_clinical_columns=args.run_clinical_columns, n_boot=args.n_boot,
                     extra_figures=map_figures(args.spatial_maps) if args.spatial_maps else {})
    path = build_report(inputs, args.out)
    print(f"report: {path} (figures and tables as PNG/CSV beside it)")
    return 0


def cmd_demo(args) -> int:
    from .demo import SYNTHETIC_NOTE
    from .demo_chain import run_demo

    print(SYNTHETIC_NOTE)
    if args.weights == "none":
        print("backbone weights: random (--weights none, seeded); the head is trained with --standardize (not the "
              "paper: random-weight features barely differ between slides).")
    result = run_demo(replace(DEMO, out=args.out, n_slides=args.n_slides, backbone=args.backbone, weights=args.weights,
                              progress=not args.no_progress))
    _print_demo(result)
    return 0


def _print_demo(result) -> None:
    genes, patients = result.metrics["across_genes"], result.metrics["across_patients"]
    controls = ", ".join(f"{c:.2f}" for c in result.control_medians)
    print(f"cohort: {result.n_slides} slides, {result.n_tiles} tiles, features in {result.extraction_s:.0f} s "
          f"-> {result.paths['features']}")
    print(f"held-out Spearman across genes: median {genes['median']:.2f} (IQR {genes['q25']:.2f} to {genes['q75']:.2f}), "
          f"{genes['significant']}/{genes['total']} genes at FDR < 0.05; across patients median {patients['median']:.2f}.")
    print(f"control (trained on shuffled targets, same split): median across genes {controls}.")
    verdict = "beats" if result.learned_median > max(result.control_medians, default=-1) else "does NOT beat"
    print(f"the model {verdict} every shuffled control. These numbers say nothing about real biology: the expression "
          "is synthetic, tied to which real tumours each demo slide's tiles come from.")
    print(f"run: {result.paths['run']}; predictions: {result.paths['predictions']}")
    if "baseline" in result.paths:
        _print_costs(Path(result.paths["baseline"]))
    if "export_end_to_end" in result.paths:
        print(f"exports: {result.paths['export_head']} (features -> genes), {result.paths['export_end_to_end']} "
              "(tiles -> genes)")
    if "external_predictions" in result.paths:
        print(f"external demo cohort (SYNTHETIC clinical table): {result.paths['external_predictions']}")
    print(f"report: {result.paths['report']}")


COMMANDS = {"extract": cmd_extract, "normalize": cmd_normalize, "train": cmd_train, "predict": cmd_predict,
            "export": cmd_export, "subtype": cmd_subtype, "spatial": cmd_spatial, "baseline": cmd_baseline,
            "report": cmd_report, "demo": cmd_demo}
# The commands that run TensorFlow: it is started (quietly, unless -v) before they run.
TENSORFLOW_COMMANDS = {"extract", "normalize", "train", "predict", "export", "spatial", "baseline", "demo"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in TENSORFLOW_COMMANDS:
            from .tfenv import start_tensorflow

            args.gpus = start_tensorflow(verbose=args.verbose)
        return COMMANDS[args.command](args)
    except Hist2RNAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
