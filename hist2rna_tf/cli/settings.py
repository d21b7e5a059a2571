"""The settings of the commands whose library calls take plain arguments (normalize, crossval's folds,
import-run, predict, export, subtype, spatial, extract's shards and Ray): plain frozen dataclasses, each
field one option's default, help and type (options.add_option), as config.py's configs are; the command
bodies (commands.py) pass their values to the library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from hist2rna_tf.arguments import Count, OneOf, PositiveFloat, PositiveInt, at_least
from hist2rna_tf.config import (CROSSVAL_FOLDS, PAM50_LABEL_COLUMN, RAY_CPUS_PER_WORKER, RAY_MAX_RETRIES, SPATIAL_GENES,
                                THUMBNAIL_MPP, Checked, Seed, option, required_option)


@dataclass(frozen=True)
class ScaleConfig(Checked):
    """How `extract` spreads a cohort: a shard of it in this process, or over a Ray cluster (extract/distributed.py)."""

    shard: tuple[int, int] = option((0, 1), "process every N-th slide starting at I (0-based), e.g. 0/4 .. 3/4 "
                                            "(default 0/1: all)")
    ray: str | None = option(None, "--ray alone: a private Ray instance on this machine (bound to 127.0.0.1); --ray "
                                   "auto: the cluster this node belongs to; --ray HOST:PORT: that cluster's head "
                                   "(default: no Ray)")
    cpus_per_worker: PositiveInt | None = option(None, f"CPUs per worker on a cluster without GPUs (default "
                                                       f"{RAY_CPUS_PER_WORKER}, or all when fewer); with GPUs: each "
                                                       "GPU's share of the CPUs")
    max_retries: Count = option(RAY_MAX_RETRIES, "times a slide is dealt again after its worker died (default "
                                                 "{default}); a slide that fails for its own reason is not retried")


@dataclass(frozen=True)
class NormalizeInputs(Checked):
    """`hist2rna normalize`: one image, and whether its stain components are written too."""

    input: Path = required_option("the image to normalise")
    components: bool = option(False, "also write the H-only and E-only images (<output>_H, <output>_E; macenko "
                                     "variants)")


@dataclass(frozen=True)
class CrossvalConfig(Checked):
    """`hist2rna crossval`'s folds (model/crossval.py; the training settings are TrainConfig's)."""

    folds: int = option(CROSSVAL_FOLDS, "folds (default {default}; at most the smallest subtype's patient count); "
                                        "not with --folds-file, whose folds are the file's")
    folds_file: Path | None = option(None, "each patient's fold from a table (first column: patient or slide barcode): "
                                           "`hist2rna folds`' (site-preserved or not), Howard's published TCGA splits "
                                           "or any other; patients it lacks are left out (default: K patient-level "
                                           "folds stratified by subtype, shuffled by --seed)")
    folds_column: str = option("fold", "--folds-file's column of folds, whole numbers (e.g. Howard's "
                                       "CV3_subtype_preserved_site); blank: the patient is left out (default {default})")


@dataclass(frozen=True)
class ImportInputs(Checked):
    """`hist2rna import-run`: a published model's folder (model/import_run.py) and what to evaluate it on."""

    source: Annotated[str, OneOf(("sequoia",))] = required_option("the model's kind")
    folder: Path = required_option("the downloaded model folder")
    genes: Path | None = option(None, "the outputs' gene symbols in order, one a line (default: SEQUOIA's 20,820)")
    expression: Path | None = option(None, "RNA-seq table to evaluate the model on (needs --features)")
    labels: Path | None = option(None, "clinical table with a subtype column (with --expression)")


@dataclass(frozen=True)
class PredictInputs(Checked):
    """`hist2rna predict`'s model (model/predict.py's Predictor reads either)."""

    model: str | None = option(None, "a training run folder, or a head SavedModel export (hist2rna export)")


@dataclass(frozen=True)
class ExportConfig(Checked):
    """`hist2rna export`'s name and version of the two SavedModels (model/export.py's export_run)."""

    name: str | None = option(None, "model name, one folder name (default: the backbone's; with the head's for a head "
                                    "other than the paper's, e.g. uni_abmil: its signature differs, so it is another "
                                    "model, not a version)")
    version: PositiveInt | None = option(None, "version number (default: the next one free for both)")


@dataclass(frozen=True)
class SubtypeInputs(Checked):
    """`hist2rna subtype` (analysis/subtype.py's subtype_table): the expression to call, and how."""

    expression: str = required_option("cBioPortal RSEM or samples x genes table (raw RSEM unless --no-log)")
    method: Annotated[str, OneOf(("centroid", "voting"))] = option(
        "centroid", "centroid (default; Parker 2009 nearest centroid) or voting (the paper's soft-voting classifier, "
                    "trained on --reference-expression and --reference-labels)")
    reference_expression: str | None = option(None, "voting: measured RNA-seq of labelled patients to train on (raw "
                                                    "RSEM unless --reference-no-log)")
    reference_labels: str | None = option(None, "voting: table with the reference patients' PAM50 subtype")
    no_log: bool = option(False, "--expression is already logged (or microarray), e.g. `hist2rna predict`'s genes")
    reference_no_log: bool = option(False, "--reference-expression is already logged (default: raw RSEM, as TCGA's)")


@dataclass(frozen=True)
class SpatialConfig(Checked):
    """What `hist2rna spatial` draws (report/spatial.py's write_spatial_maps)."""

    genes: tuple[str, ...] = option(SPATIAL_GENES, "genes to map and to measure in the QuPath objects, or 'all' "
                                                   "(every gene of the run) (default {default}, those the run "
                                                   "predicts, else its first four; with --truth: the four best "
                                                   "scored)")
    no_gene_maps: bool = option(False, "no PNG a gene (the genes stay in the CSV and the QuPath objects): e.g. with "
                                       "--genes all")
    no_subtypes: bool = option(False, "no PAM50 call map")
    thumbnail_mpp: PositiveFloat = option(THUMBNAIL_MPP, "thumbnail resolution (default {default} um/px)")
    truth: str | None = option(None, "score the map against this spatial sample's measured spots instead of drawing "
                                     "slides: its id (with --hest DIR, or --spaceranger DIR --image FILE), its spot "
                                     "record in --features (`extract-spots --like RUN`) (default: no scoring)")
    spins: PositiveInt = option(199, "--truth: spins of the spin test's null (default {default})")


@dataclass(frozen=True)
class HestBenchInputs(Checked):
    """`hist2rna hest-bench`'s task (spots/hest_bench.py; the rest is config.HestBenchConfig)."""

    task: Path = required_option("a HEST-Bench task folder, as HEST's download lays it out (bench_data/<TASK>: "
                                 "splits/, adata/, patches/, var_50genes.json), e.g. bench_data/IDC")


@dataclass(frozen=True)
class SpotInputs(Checked):
    """`hist2rna extract-spots`: the samples (HEST-1k's, or Space Ranger folders with their images), read by
    spots/hest.py and spots/spaceranger.py, and how their patches are normalised."""

    hest: Path | None = option(None, "a HEST-1k download folder (st/, wsis/, metadata/)")
    samples: tuple[str, ...] = option((), "with --hest: the sample ids to read, e.g. TENX95 NCBI783 (default: none)")
    spaceranger: tuple[Path, ...] = option((), "Space Ranger output folders (outs/: filtered_feature_bc_matrix.h5, "
                                               "spatial/), each with its --image (default: none)")
    image: tuple[Path, ...] = option((), "with --spaceranger: the full-resolution H&E of each folder, in order (default: none)")
    bin_um: Annotated[int, OneOf((2, 8, 16))] | None = option(
        None, "Visium HD (--spaceranger folders holding binned_outputs/): the bins read as spots, 2, 8 or 16 um "
              "(default: 16)")
    mpp: PositiveFloat | None = option(None, "microns per full-resolution pixel (default: HEST's metadata; for Space "
                                             "Ranger the image's own, else 55 um over the spot diameter)")
    duplicate_genes: Annotated[str, OneOf(("refuse", "sum"))] = option(
        "refuse", "a gene symbol naming several columns: refuse (default, named) or sum their counts")
    stain: Annotated[str, OneOf(("none", "macenko", "macenko-henorm"))] = option(
        "none", "stain normalisation of the patches (default {default}, as HEST)")
    like: Path | None = option(None, "extract as this training run's features were made (its backbone, weights, stain, "
                                     "tile size and um/px), so that its maps can be scored at the spots; "
                                     "--backbone, --weights and --stain then come from it (default: HEST's 224 px at "
                                     "0.5 um/px with --backbone and --weights)")
    crop: bool = option(False, "with --hest: cut each spot's patch from the image even where the sample's HEST "
                               "patches file (patches/<id>.h5) is there (default: its own patches, the benchmark's "
                               "exactly)")


@dataclass(frozen=True)
class FoldsInputs(Checked):
    """`hist2rna folds` (analysis/sites.py): a labelled cohort's folds, patient-level or site-preserved."""

    labels: Path = required_option("clinical table with a label column (first column: patient)")
    label_column: str = option(PAM50_LABEL_COLUMN, "the column the folds are balanced on (default {default})")
    folds: Annotated[int, at_least(2)] = option(CROSSVAL_FOLDS, "folds (default {default})")
    stratified: bool = option(False, "patient-level folds stratified by the label, crossval's own (the default, "
                                     "said explicitly)")
    site_preserved: bool = option(False, "every site's patients in one fold (Howard et al. 2021), the label's "
                                         "proportions as balanced as whole sites allow, solved exactly (default: "
                                         "patient-level folds stratified by the label, as crossval's)")
    site_column: str | None = option(None, "the table's column of sites (default: each TCGA barcode's tissue source "
                                           "site, TCGA-XX-)")
    time_limit: PositiveFloat = option(60.0, "--site-preserved: seconds the solver may take; the best folds found by "
                                             "then are kept, said so (default {default})")
    seed: Seed = option(0, "patient-level folds' shuffling (default {default})")


@dataclass(frozen=True)
class RobustnessInputs(Checked):
    """`hist2rna robustness` (analysis/encoder_robustness.py): PathoROB's robustness index of features folders."""

    features: tuple[Path, ...] = required_option("features folders, one per encoder, of the same patients")
    labels: Path = required_option("clinical table with the class column (first column: patient)")
    label_column: str = option(PAM50_LABEL_COLUMN, "the biological class (default {default})")
    site_column: str | None = option(None, "the table's column of sites, the centre (default: each TCGA barcode's "
                                           "tissue source site, TCGA-XX-)")
    k: Annotated[int, at_least(-1)] = option(61, "neighbours the index is read at (default {default}, PathoROB's for "
                                                 "TCGA; -1: the k of their grid where the kNN classifier's balanced "
                                                 "accuracy is highest)")
    tiles_per_slide: Count = option(0, "samples: this many of each slide's tile features, drawn with --seed (the "
                                       "records need --save-tile-features), as PathoROB's patches (default {default}: "
                                       "each slide's mean features)")
    bootstrap: Count = option(0, "bootstrap resamples of the index at k, its mean and std (default {default}; "
                                 "PathoROB: 1000)")
    seed: Seed = option(0, "the tiles drawn and the bootstrap (default {default})")
