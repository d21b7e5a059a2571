"""Plain, frozen configuration for each stage; saved as JSON beside every output."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from hist2rna_tf.arguments import (Count, Fraction, OneOf, OpenFraction, PositiveFloat, PositiveInt, Within,
                                   check_fields)
from hist2rna_tf.errors import ArgumentError

# The fixed Macenko targets of the hist2RNA authors' normaliser (raktim-mondol/hist2RNA
# color_normalizer.py, the values of schaugf/HEnorm_python): the H and E optical-density vectors
# (columns) and the 99th-percentile concentrations of a reference slide.
PAPER_HE_REF = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))
PAPER_MAX_C_REF = (1.9705, 1.0308)

# The two Macenko variants, by the logarithm their optical density takes (the only difference: it
# decides which pixels count as stained, OD >= beta; angles, concentrations and the recomposition
# do not depend on the base). `macenko` is the authors' own normaliser, the one their pipeline ran.
MACENKO_OD_LOG = {"macenko": "log10", "macenko-henorm": "log"}  # numpy's function for each

# Every stain normalisation `hist2rna extract --stain` offers (StainConfig.method).
STAIN_METHODS = (*MACENKO_OD_LOG, "staintools-macenko", "staintools-vahadane", "none")
# The backbone's arithmetic (extract.backbones.build.PRECISIONS: the Keras dtype policy of each).
PRECISION_NAMES = ("float32", "mixed", "bfloat16")

# The label table's subtype column (TCGA's, as cBioPortal names it) and the paper's four subtypes
# (no Normal-like): what a run is split and its subtype classifier trained on.
PAM50_LABEL_COLUMN = "BRCA_Subtype_PAM50"
PAPER_SUBTYPES = ("LumA", "LumB", "Basal", "Her2")
# Each PAM50 subtype's colour in our figures and in the QuPath objects (report/figures.py, report/qupath.py).
SUBTYPE_COLOURS = {"LumA": "#2c7bb6", "LumB": "#abd9e9", "Her2": "#fdae61", "Basal": "#d7191c", "Normal": "#999999"}


def option(default, help: str):
    """A field that is also a command-line option: its default and the option's help in one place
    (`cli.options.add_option` makes the option; `{default}` in the help shows the default)."""
    return field(default=default, metadata={"help": help})


def required_option(help: str):
    """A field without a default that is also a command-line option, then required."""
    return field(metadata={"help": help})


# The largest tile (px a side) and seed the pipeline takes: a tile is read whole into memory, a batch at once;
# numpy and TensorFlow take seeds of 32 bits.
MAX_TILE_PX = 4096
MAX_SEED = 2 ** 32 - 1
TilePx = Annotated[int, Within(1, MAX_TILE_PX)]
Seed = Annotated[int, Within(0, MAX_SEED)]


class Checked:
    """A config dataclass whose fields are checked when it is made (arguments.check_fields): a wrong type or
    a value out of range is one ArgumentError naming the field, as the command line refuses the option."""

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class TileConfig(Checked):
    """Where tiles come from: the paper's 224 px at 0.25 um/px, ~1000 per slide, in the tumour region."""

    tile_size_px: TilePx = option(224, "tile size in pixels (default: the backbone's own: {default} for the paper's CNNs, "
                                       "the encoder's input size for a pathology encoder), or 'trident': the size "
                                       "TRIDENT's README extracts the encoder from (256 for UNI, UNI2-h and "
                                       "Prov-GigaPath, 512 for CONCH v1.5, 224 for the others), resized to the model's "
                                       "input as TRIDENT does")
    target_mpp: PositiveFloat = option(0.25, "tile resolution in um/px (default: the backbone's own: {default} for the "
                                             "paper's CNNs, the scale a pathology encoder was trained at, 0.5 for "
                                             "most)")
    max_tiles: PositiveInt = option(1000, "cap per slide, spatially spread (default {default})")
    # A tile is kept when at least this fraction of it lies in tissue (and in the tumour annotation).
    min_region_fraction: Fraction = option(0.5, "keep a tile when this much of it is in the region (default {default})")
    # Resolution of the tissue mask (um/px); 8 um/px puts 7x7 mask pixels on one 56 um tile.
    mask_mpp: PositiveFloat = 8.0
    # QuPath classification names that count as tumour; empty: every annotation not excluded.
    tumour_classes: tuple[str, ...] = option((), "QuPath classes that count as tumour (default: any class not excluded)")
    exclude_classes: tuple[str, ...] = option(("Necrosis",), "QuPath classes cut out of the tumour region (default: "
                                                             "{default})")
    # Microns per pixel to assume when a file carries none (plain images, TMA cores).
    mpp_override: PositiveFloat | None = None

    @property
    def tile_size_um(self) -> float:
        return self.tile_size_px * self.target_mpp


@dataclass(frozen=True)
class StainConfig(Checked):
    """Stain normalisation. `macenko` is the authors' (optical density in log10, fixed targets);
    `macenko-henorm` is HEnorm_python's natural-log variant; both run as TensorFlow ops."""

    method: Annotated[str, OneOf(STAIN_METHODS)] = option(
        "macenko", "stain normalisation (default {default}). macenko: the hist2RNA authors' own normaliser, the one "
                   "their pipeline ran (color_normalizer.py: optical density in log10, Io=240, alpha=1, beta=0.15, "
                   "fixed targets); macenko-henorm: the HEnorm_python reference they adapted (natural log: with the "
                   "same beta more pixels count as stained); staintools-macenko, staintools-vahadane (slow, for "
                   "comparison); none")
    io: PositiveFloat = 240.0
    alpha: Annotated[float, Within(0, 50, low_open=True, high_open=True)] = 1.0  # percentile of the angles
    beta: Annotated[float, Within(0)] = 0.15
    he_ref: tuple[tuple[float, float], ...] = PAPER_HE_REF
    max_c_ref: tuple[float, float] = PAPER_MAX_C_REF
    # A tile with fewer stained pixels (all OD >= beta) than this fraction passes through unchanged.
    min_stained_fraction: Annotated[float, Within(0, 1)] = 0.01
    # Image the targets were fitted to (None: the paper's fixed targets); staintools fits to it.
    reference_image: str | None = option(None, "fit the targets to this image instead (default: the paper's fixed "
                                                "targets; staintools methods: a shipped TCGA tile)")

    @property
    def tag(self) -> str:
        return self.method if self.reference_image is None else f"{self.method}:{self.reference_image}"

    @property
    def is_macenko(self) -> bool:
        """One of the TensorFlow Macenko variants (not staintools')."""
        return self.method in MACENKO_OD_LOG


@dataclass(frozen=True)
class ExtractConfig(Checked):
    """Backbone and the streaming pipeline that turns slides into stored mean features."""

    backbone: str = option("efficientnetv2s", "the paper's CNNs ({cnns}; default {default}, its best), a pathology "
                                              "encoder ({encoders}), or a Keras model file taking RGB in [0, 255]")
    weights: str = option("imagenet", "imagenet (default {default}; downloaded by Keras on first use), none (random: "
                                      "testing only), or a path to a local weights file; for a pathology encoder the "
                                      "file its page offers, downloaded after accepting its licence: {files}")
    batch_size: PositiveInt = option(32, "tiles per backbone batch (default {default})")
    read_threads: PositiveInt | None = option(None, "parallel tile readers (default: two per CPU core this process may "
                                                    "use, {here} here)")
    save_tile_features: bool = option(False, "also store each tile's features (what --head abmil and sequoia read, "
                                             "and spatial maps and the patch baseline)")
    shard_index: Count = 0
    shard_count: PositiveInt = 1
    overwrite: bool = option(False, "redo slides that already have a record")
    # GPU options: the backbone in mixed_float16 (stored features stay float32), and XLA-compiled.
    # Neither changes which features a slide gets beyond float rounding (tested: cosine >= 0.999).
    precision: Annotated[str, OneOf(PRECISION_NAMES)] = option(
        "float32", "the backbone's arithmetic: float32, mixed (float16 on float32 weights) or bfloat16 (as TRIDENT "
                   "runs UNI2-h); stored features stay float32 (default {default})")
    xla: bool = option(False, "XLA-compile the backbone (default off)")
    tiles: TileConfig = field(default_factory=TileConfig)
    stain: StainConfig = field(default_factory=StainConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.shard_index >= self.shard_count:
            raise ArgumentError(f"ExtractConfig(shard_index={self.shard_index}, shard_count={self.shard_count}): "
                                "shard_index takes 0 to shard_count - 1.")


@dataclass(frozen=True)
class TrainConfig(Checked):
    """The head's training (paper section 2.4): Adam, MSE, minibatches of 12, early stopping with
    patience 4 on the validation patients' loss, at most 150 epochs."""

    learning_rate: PositiveFloat = 1e-3
    batch_size: PositiveInt = 12
    patience: Count = 4
    max_epochs: PositiveInt = option(150, "at most this many epochs; early stopping usually ends sooner (default: the "
                                          "head's: {default}, the paper's; sequoia 200, SEQUOIA's)")
    validation_fraction: OpenFraction = option(0.1, "training patients held back for early stopping (default "
                                                    "{default})")
    seed: Seed = option(0, "seed of the split, initialisation and shuffling (default {default})")
    deterministic: bool = option(False, "deterministic TensorFlow ops (slower)")
    # NOT the paper: z-score features and targets inside the model (see model/heads/base.py)
    standardize: bool = option(False, "NOT in the paper: z-score features and targets with the training patients' "
                                      "statistics inside the model (for features that barely vary between slides, "
                                      "e.g. random weights)")
    # The head (model/heads/: its registry); the paper's by default. Its settings are the head's own (recorded).
    head: str = option("hist2rna", "the head: hist2rna (the paper's, on the slide mean; default), abmil (attention "
                                   "over every tile) or sequoia (SEQUOIA's transformer on each slide's k-means "
                                   "cluster means; trained with SEQUOIA's batch 16, <= 200 epochs, patience 20 unless "
                                   "--max-epochs says otherwise); abmil and sequoia need features extracted with "
                                   "--save-tile-features")
    head_init: str | None = option(None, "abmil: start from a FEATHER-24K / MIL-Lab checkpoint (model.safetensors; "
                                         "its classifier left out)")
    # Any field of the head's Settings (model/heads/<head>.py), as NAME=VALUE; the defaults are its source's.
    head_options: tuple[str, ...] = option((), "the head's own settings as NAME=VALUE (a tuple: values separated by "
                                                "commas; the option may be given more than once), its source's "
                                                "defaults otherwise, recorded in the run: "
                                                "hist2rna: filters=256,512,512 kernel_size=5 (the paper's); abmil: "
                                                "embed_dim=512 attn_dim=384 dropout=0.25 gate=true (MIL-Lab's); "
                                                "sequoia: depth=6 heads=16 dim_f=64 dim_s=64 dim_c=64 clusters=100 "
                                                "(SEQUOIA's; clusters: k-means clusters a slide, which needs at least "
                                                "as many tiles)")


# What `--genes` takes.
GeneSelection = Annotated[str, "text: panel, all, an assay (pam50, oncotype, ...) or the path of a file of gene "
                               "symbols, one a line"]


@dataclass(frozen=True)
class RunInputs(Checked):
    """What a training run reads: stored features, an expression table, a label table for the split."""

    features: str
    expression: str = required_option("RNA-seq table: cBioPortal RSEM (Hugo_Symbol rows) or patients x genes CSV/TSV, "
                                      "raw RSEM. A gene column given twice is refused; a patient's several samples are "
                                      "averaged (warned, named)")
    labels: str = required_option("clinical table with a subtype column (first column: patient); a patient with two "
                                  "different labels is refused")
    label_column: str = option(PAM50_LABEL_COLUMN, "subtype column (default {default})")
    subtypes: tuple[str, ...] = option(PAPER_SUBTYPES, "subtypes kept (default: the paper's {default})")
    genes: GeneSelection = option("panel", "panel (the paper's 138), all (every gene of the table: the whole "
                                           "transcriptome), an assay (pam50 or prosigna, oncotype, mammaprint, "
                                           "endopredict, bci, mammostrat) or a file of gene symbols (default "
                                           "{default})")
    drop_missing_genes: bool = option(False, "train without genes the table lacks (recorded in the run) instead of "
                                             "failing")
    split: str | None = option(None, "reuse a split.csv from an earlier run (default: a new stratified split)")
    site_column: str | None = option(None, "the --labels table's column of each patient's site, recorded in the "
                                           "run (default: a TCGA barcode's tissue source site, TCGA-XX-)")
    test_fraction: OpenFraction = 160 / 495


def absolute_inputs(inputs: RunInputs) -> RunInputs:
    """The inputs with absolute paths: the run records where its data came from, from any folder."""
    def absolute(path):
        return str(Path(path).resolve()) if path else path

    return dataclasses.replace(inputs, features=absolute(inputs.features), expression=absolute(inputs.expression),
                   labels=absolute(inputs.labels), split=absolute(inputs.split))


PAPER_WATTS = 300.0  # the paper's figure for one Nvidia Tesla V100 32GB
# The energy figure when training ran on a CPU: a server CPU's power per core (Xeon Gold 6248: 150 W
# over 20 cores), times the cores used. An assumption, as the V100's is; --device-watts sets your own.
CPU_WATTS_PER_CORE = 7.5


@dataclass(frozen=True)
class BaselineConfig(Checked):
    """The patch-based comparison (model/baseline.py)."""

    mode: Annotated[str, OneOf(("frozen", "finetune"))] = option(
        "frozen", "frozen: head on stored tile features; finetune: backbone trained on tiles (default {default})")
    max_epochs: PositiveInt | None = option(None, f"default: the run's (the paper's {TrainConfig.max_epochs})")
    batch_size: PositiveInt | None = option(None, f"default: the run's (the paper's {TrainConfig.batch_size})")
    shuffle_buffer: PositiveInt = 8192  # tile features (frozen; slides are also interleaved 16 at a time)
    image_shuffle_buffer: PositiveInt = 2048  # tile images (finetune): 2048 x 224 x 224 x 3 bytes = 0.3 GB
    tiles_per_slide: PositiveInt | None = option(None, "finetune: at most this many tiles of each slide (default: all "
                                                       "planned)")
    device_watts: PositiveFloat | None = option(None, f"power of one device in W for the energy figure (default: "
                                                      f"{PAPER_WATTS:g} a GPU, the paper's V100, when one ran; else "
                                                      f"{CPU_WATTS_PER_CORE:g} a CPU core used)")
    n_devices: PositiveInt = option(1, "devices the time was spent on (default {default})")
    device: str = option("", "device description for costs.csv (default: detected)")


@dataclass
class ReportInputs(Checked):
    """What one report shows: a run, and optionally other runs, an external cohort, a baseline."""

    run: Path
    compare: list[Path] = field(default_factory=list, metadata={
        "help": "other runs (e.g. other backbones) for Figure 3 (default: none)"})
    external_predictions: Path | None = option(None, "predicted genes of an external cohort (hist2rna predict)")
    clinical: Path | None = option(None, "the external cohort's clinical table (CSV/TSV)")
    clinical_columns: Path | None = option(None, 'JSON mapping our names to your columns, e.g. {{"os_months": '
                                                 '"OS_MONTHS", "ki67_percent": null}}; keys: patient_id os_months '
                                                 "os_event grade size_mm age node_positive er pr her2 ki67_percent "
                                                 "ihc_subtype (default: our names)")
    run_clinical: Path | None = option(None, "clinical table of the run's own cohort (e.g. TCGA: ER/PR/HER2 status, "
                                             "grade): Figure 7's rows for its held-out patients, predicted and "
                                             "measured")
    run_clinical_columns: Path | None = option(None, "JSON mapping for --run-clinical (as --clinical-columns)")
    baseline: Path | None = option(None, "a `hist2rna baseline` folder: patch-based vs hist2RNA (Figure 10) and cost "
                                         "(Figure 6)")
    costs: Path | None = option(None, "CSV approach,hours,kwh (default: the --baseline's costs.csv)")
    spatial_maps: Path | None = option(None, "a `hist2rna spatial` folder: its PNG maps are embedded in the report, "
                                             "its QuPath objects linked")
    hest_bench: tuple[Path, ...] = option((), "`hist2rna hest-bench` folders: each task's encoders beside HEST's "
                                              "published figures (labelled theirs) (default: none)")
    robustness: Path | None = option(None, "a `hist2rna robustness` folder: each encoder's PathoROB robustness index, "
                                           "its figure and table (default: none)")
    extra_figures: dict[str, Path] = field(default_factory=dict)  # title -> PNG (e.g. spatial maps)
    extra_files: dict[str, Path] = field(default_factory=dict)  # title -> a file put beside the report and linked
    title: str = "hist2RNA report"
    note: str = ""  # shown at the top (e.g. SYNTHETIC)
    n_boot: PositiveInt = option(1000, "bootstrap resamples for the CIs (default {default})")


# The fewest demo slides whose stratified split leaves enough patients to train, stop early and evaluate.
MIN_DEMO_SLIDES = 12


@dataclass(frozen=True)
class DemoConfig(Checked):
    """The demo chain (demo/chain.py) on the SYNTHETIC demo cohort."""

    out: Path = option(Path("demo_output"), "output folder (default {default})")
    n_slides: PositiveInt = option(36, f"slides in the cohort (default {{default}}; at least {MIN_DEMO_SLIDES})")
    backbone: str = option("efficientnetv2s", "backbone (default {default})")
    weights: str = option("none", "none (random, offline), imagenet or a weights file (default {default})")
    head: str = option("hist2rna", "the head the demo's run trains (default {default}, the paper's; abmil: attention "
                                   "over every tile; sequoia: SEQUOIA's transformer on 4 cluster means a slide)")
    n_controls: Count = 3
    n_external: Count = 60  # TMA-core-sized slides of a second, "external" demo cohort (0: none)
    seed: Seed = 0
    progress: bool = True
    export: bool = True
    baseline: bool = True  # the patch-based comparison (frozen tile features) and both approaches' cost
    sections: Count = 4  # synthetic Visium sections (demo/spots.py): the map scored at their spots, a spot run (0: none)
    sites: bool = True  # a patient-level and a site-preserved crossval, the site-leak gap, the robustness index


@dataclass(frozen=True)
class HestBenchConfig(Checked):
    """HEST-Benchmark on a task (spots/hest_bench.py): the encoders, how their patches are embedded, and
    the probe (HEST's BenchmarkConfig defaults: PCA to 256, seed 1)."""

    backbones: tuple[str, ...] = required_option("the backbones to benchmark, side by side (e.g. uni virchow2 "
                                                 "h-optimus-0 resnet50)")
    weights: tuple[str, ...] = option(("imagenet",), "one per backbone, or one for all: imagenet, none (random: "
                                                     "testing only) or a weights file, as `extract --weights` "
                                                     "(default {default})")
    stain: Annotated[str, OneOf(STAIN_METHODS)] = option("none", "stain normalisation of the patches (default "
                                                                 "{default}, as HEST)")
    batch_size: PositiveInt = option(32, "patches per backbone batch (default {default})")
    latent_dim: PositiveInt = option(256, "PCA components before the ridge (default {default}, HEST's)")
    seed: Seed = option(1, "the PCA's random_state and the ridge's (default {default}, HEST's)")

    def __post_init__(self):
        super().__post_init__()
        if len(self.weights) not in (1, len(self.backbones)):
            raise ArgumentError(f"HestBenchConfig(weights={self.weights!r}): give one weights value for all "
                                f"{len(self.backbones)} backbones, or one each.")

    def weights_of(self, backbone: str) -> str:
        return self.weights[0] if len(self.weights) == 1 else self.weights[self.backbones.index(backbone)]


# Cross-validation's folds unless told (model/crossval.py, `hist2rna crossval --folds`).
CROSSVAL_FOLDS = 5

# Spatial maps (report/spatial.py): the genes `hist2rna spatial` maps unless told; the thumbnail's um/px.
SPATIAL_GENES = ("ESR1", "PGR", "ERBB2", "MKI67")
THUMBNAIL_MPP = 8.0

# Ray extraction (extract/distributed.py): CPUs per worker on a cluster without GPUs; times a slide is dealt
# again after its worker died.
RAY_CPUS_PER_WORKER = 4
RAY_MAX_RETRIES = 3


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity: a Slurm or container allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def to_dict(config: Any) -> dict:
    """A config dataclass (nested ones too) as plain JSON-ready data."""
    return dataclasses.asdict(config)


def changed_fields(before: dict, after: dict, prefix: str = "") -> list[str]:
    """"name: before -> after" for every setting that differs between two records of settings (nested
    dicts walked as `outer.inner`; values compared as JSON, so a tuple equals the list a file read back),
    in their order: the one form of every "made with other settings" message."""
    import json

    found = []
    for key in {**before, **after}:
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += changed_fields(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def known_fields(kind: type, data: dict) -> dict[str, Any]:
    """The fields of dataclass `kind` found in `data` (saved JSON: lists back to tuples), to build one
    from a file of another version: fields added since keep their defaults, fields since removed are
    ignored. Nested dataclasses are the caller's to build."""
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(data).items() if k in names}
