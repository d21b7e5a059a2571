"""`hist2rna`'s parser: one `add_<command>` per command, every default the library's own."""

from __future__ import annotations

import argparse

from hist2rna_tf import __version__
from hist2rna_tf.cli.options import (BASELINE, CROSSVAL, DEMO, EXPORT, EXTRACT, INPUTS, REPORT, SCALE, SPATIAL, TRAIN,
                                     Parser, add_annotations, add_features, add_mpp, add_no_progress, add_option,
                                     add_out, add_overwrite, add_run, add_slides, add_stain_options, add_tile_options,
                                     hidden_alias, out_file, out_folder, shard_spec)
from hist2rna_tf.cli.settings import (FoldsInputs, ImportInputs, NormalizeInputs, PredictInputs, RobustnessInputs,
                                      SubtypeInputs)
from hist2rna_tf.config import STAIN_METHODS, usable_cores
from hist2rna_tf.extract.settings import extract_command, sequoia_extraction
from hist2rna_tf.model.heads import HEADS
from hist2rna_tf.cli.spot_parser import (add_backbone_options, add_extract_spots, add_hest_bench, add_spot_sources,
                                         add_train_spots)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hist2rna",
        description="hist2RNA (Mondol et al., Cancers 2023): gene expression from H&E whole slide images.",
    )
    parser.add_argument("--version", action="version", version=f"hist2rna-tf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug detail, and TensorFlow's own start-up and C++ log lines")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_extract, add_normalize, add_train, add_crossval, add_import_run, add_predict, add_export,
                add_subtype, add_spatial, add_extract_spots, add_train_spots, add_hest_bench, add_folds, add_robustness,
                add_baseline, add_report, add_demo):
        add(commands)
    return parser


def add_extract(commands) -> None:
    extract = commands.add_parser(
        "extract", help="slides -> one mean feature vector per slide (TFRecords)",
        description="Tile each slide's tumour region, normalise the stain, embed each tile with a frozen "
                    "backbone (the paper's ImageNet CNNs or a pathology encoder) and store the per-slide mean as <out>/<backbone>/<slide_id>.tfrecord. "
                    "Re-running resumes; manifest.csv lists every slide the folder has seen: done, skipped "
                    "(already done), failed (with the reason) or pending (an interrupted run's); "
                    "extract_config.json beside it records the settings the features were made with.")
    add_slides(extract, "slide files, folders of slides, or pre-tiled folders (one per patient)")
    add_out(extract, "output folder")
    add_backbone_options(extract)
    add_tile_options(extract)
    add_stain_options(extract)
    run = extract.add_argument_group("run")
    add_option(run, "--batch-size", EXTRACT, "batch_size")
    add_option(run, "--read-threads", EXTRACT, "read_threads", help_values={"here": 2 * usable_cores()})
    add_option(run, "--save-tile-features", EXTRACT, "save_tile_features")
    add_option(run, "--shard", SCALE, "shard", type=shard_spec, nargs=None, metavar="I/N")
    add_option(run, "--overwrite", EXTRACT, "overwrite")
    add_no_progress(run)
    scale = extract.add_argument_group("Ray", "extraction on a Ray cluster (pip install 'hist2rna-tf[ray]'): one "
                                              "worker per GPU, or per --cpus-per-worker CPUs; slides dealt to free "
                                              "workers, largest first; this process writes every record and the "
                                              "manifest")
    add_option(scale, "--ray", SCALE, "ray", nargs="?", const="local", metavar="ADDRESS")
    add_option(scale, "--cpus-per-worker", SCALE, "cpus_per_worker", metavar="N")
    add_option(scale, "--max-retries", SCALE, "max_retries", metavar="N")
    gpu = extract.add_argument_group("GPU", "options for a machine with a GPU (refused without one: both are "
                                            "slower on a CPU); features stay within float rounding (cosine >= "
                                            "0.999 per slide)")
    add_option(gpu, "--precision", EXTRACT, "precision")
    add_option(gpu, "--xla", EXTRACT, "xla")


def add_normalize(commands) -> None:
    normalize = commands.add_parser(
        "normalize", help="stain-normalise one image file, to see what the pipeline does to a stain",
        usage="hist2rna normalize INPUT --out FILE [options]",
        description="Normalise an RGB image (PNG/JPEG/TIFF) with the chosen method and write the result.")
    add_option(normalize, "input", NormalizeInputs, "input", metavar="INPUT")
    add_out(normalize, "the image to write (.png keeps every grey level)", file=True, required=False)
    normalize.add_argument("output", type=out_file, nargs="?", help=argparse.SUPPRESS)  # before 0.7.0: positional
    add_stain_options(normalize)
    hidden_alias(normalize, "--method", "method", choices=STAIN_METHODS)
    add_option(normalize, "--components", NormalizeInputs, "components")
    add_overwrite(normalize, "image (and its components)")


def add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="stored features + RNA-seq -> the paper's head, trained on a stratified split",
        description="Join per-slide features to patients' RNA-seq (12-character TCGA barcodes; several slides of "
                    "a patient are averaged), take log2(1+x), split train/test stratified by subtype (the paper's "
                    "335/160 proportions) and fit a head (--head: the paper's Conv1D head by default). Writes a run folder that stands alone: "
                    "config.json (what it read and how its features were made, so that predict --slides and export "
                    "never need the features folder again), genes.txt, split.csv, best.keras, history.csv, "
                    "tensorboard/, the training patients' targets, the held-out patients' predictions and targets "
                    "and their Spearman and R2 tables.")
    add_training_options(train)
    add_option(train, "--split", INPUTS, "split", metavar="CSV")
    add_out(train, "run folder (a new one, unless --overwrite)")
    add_overwrite(train, "run")
    add_no_progress(train, "progress bar of epochs")


def add_crossval(commands) -> None:
    crossval = commands.add_parser(
        "crossval", help="k-fold cross-validation of a head (the paper's by default): every patient predicted once, "
                         "out of fold",
        description="Beyond the paper (one held-out split): K patient-level folds stratified by subtype (or each "
                    "patient's fold from --folds-file: `hist2rna folds --site-preserved`' table, a published split), each a "
                    "complete run folder <out>/fold-<k>/ (the files of `train`; its held-out patients the fold; early "
                    "stopping on a patient-level validation share of its training patients), then summary.csv (per fold the median "
                    "Spearman across genes and patients, genes at FDR < 0.05 and with R2 >= 0.1; their mean over folds "
                    "with a 95% CI; the out-of-fold pool), genes.csv (each gene's mean correlation and in how many "
                    "folds it is significant) and every patient's out-of-fold prediction. The same --seed gives the "
                    "same folds; re-running the same command resumes a killed crossval; `hist2rna report OUT "
                    "--compare OTHER` compares two (same patients, same folds) gene by gene, or a patient-level and a "
                    "site-preserved crossval of the same patients: the site-leak gap.")
    add_training_options(crossval)
    add_option(crossval, "--folds", CROSSVAL, "folds", default=None)  # None: CROSSVAL's (refused with --folds-file)
    add_option(crossval, "--folds-file", CROSSVAL, "folds_file", metavar="CSV")
    add_option(crossval, "--folds-column", CROSSVAL, "folds_column", metavar="COL")
    add_out(crossval, "crossval folder (a new one, or the same command's to resume)")
    add_no_progress(crossval, "progress bar")


def add_training_options(train) -> None:
    """The options `train` and `crossval` share: the inputs and the head's training."""
    add_features(train, "folder of one backbone's feature TFRecords")
    add_option(train, "--expression", INPUTS, "expression", metavar="TABLE")
    add_option(train, "--labels", INPUTS, "labels", metavar="TABLE")
    add_option(train, "--label-column", INPUTS, "label_column")
    add_option(train, "--site-column", INPUTS, "site_column", metavar="COL")
    add_option(train, "--subtypes", INPUTS, "subtypes")
    add_option(train, "--genes", INPUTS, "genes")
    add_option(train, "--drop-missing-genes", INPUTS, "drop_missing_genes")
    add_option(train, "--seed", TRAIN, "seed")
    add_option(train, "--deterministic", TRAIN, "deterministic")
    add_option(train, "--max-epochs", TRAIN, "max_epochs", default=None)  # None: the head's (with_head_training)
    add_option(train, "--validation-fraction", TRAIN, "validation_fraction")
    add_option(train, "--standardize", TRAIN, "standardize")
    add_option(train, "--head", TRAIN, "head", choices=list(HEADS))
    add_option(train, "--head-init", TRAIN, "head_init", metavar="FILE")
    add_option(train, "--head-option", TRAIN, "head_options", metavar="NAME=VALUE", action="extend")  # repeatable


def add_import_run(commands) -> None:
    imported = commands.add_parser(
        "import-run", help="a published model (a SEQUOIA fold from the hub) -> a run folder (predict, export, spatial, "
                           "report)",
        usage="hist2rna import-run --from sequoia FOLDER --out DIR [--features DIR [--expression TABLE --labels TABLE]] "
              "[options]",
        description="Turn a SEQUOIA fold downloaded from the Hugging Face hub (`huggingface-cli download "
                    "gevaertlab/sequoia-brca-0 --local-dir FOLDER`: config.json + model.safetensors) into a run folder "
                    "that stands alone: its linearised transformer in Keras with the fold's weights, its 20,820 genes "
                    "in output order (SEQUOIA's list, shipped) and what it reads: features extracted with "
                    f"`{extract_command(sequoia_extraction())}`, each slide's 100 k-means cluster means. With "
                    "--features (a folder extracted so) the run also records how to extract new slides alike; with --expression and "
                    "--labels too, the fold is evaluated on those patients (all held out: the paper's metrics and "
                    "SEQUOIA's test against the untrained model), and `hist2rna report RUN` reports it.")
    add_option(imported, "--from", ImportInputs, "source")
    add_option(imported, "folder", ImportInputs, "folder", metavar="FOLDER")
    add_out(imported, "run folder to write (a new one)")
    add_option(imported, "--genes", ImportInputs, "genes", metavar="FILE")
    add_features(imported, "a features folder extracted as the model's were (UNI)", required=False)
    add_option(imported, "--expression", ImportInputs, "expression", metavar="TABLE")
    add_option(imported, "--labels", ImportInputs, "labels", metavar="TABLE")
    add_option(imported, "--label-column", INPUTS, "label_column")
    add_no_progress(imported)


def add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict", help="predicted log2 expression per patient, from slides or stored features",
        usage="hist2rna predict RUN (--features DIR | --slides PATH [PATH ...]) --out CSV [options]",
        description="Apply a trained run (or a head export) to stored features, or to slides (extracted first "
                    "with the run's own backbone, weights, tiling and stain settings, into <out>_features/ beside "
                    "the CSV: re-running resumes). Writes patients x genes; with a spot run (train-spots), a row "
                    "a tile: slide_id, tile, x, y (its level-0 top-left) and each gene's predicted spot-level "
                    "expression, a virtual spatial map of each slide.")
    add_option(predict, "model", PredictInputs, "model", nargs="?", metavar="RUN")
    hidden_alias(predict, "--model", "model_option")  # before 0.4.0 the run was given as --model RUN
    source = predict.add_mutually_exclusive_group(required=True)
    add_features(source, "folder of feature TFRecords (same backbone as the model)", required=False)
    add_slides(source, "slides to extract first (needs a run folder); their features go to <out>_features/",
               required=False)
    add_annotations(predict, "QuPath GeoJSON folder for --slides")
    add_mpp(predict, "--slides files that carry none")
    add_out(predict, "CSV to write (patients x genes)", file=True, metavar="CSV")
    add_overwrite(predict, "CSV")
    add_no_progress(predict)


def add_export(commands) -> None:
    export = commands.add_parser(
        "export", help="SavedModels for serving: the head alone and end to end (tiles -> genes)",
        description="Export a training run as two TensorFlow SavedModels in the TensorFlow Serving layout: "
                    "<out>/<name>_head/<version>/ (features -> genes) and <out>/<name>/<version>/ (uint8 tiles of one "
                    "slide -> Macenko -> backbone -> mean -> head -> genes), both at one version, with the run's "
                    "own backbone, weights and stain settings (its features folder is not needed). Gene names, stain "
                    "targets, the head and its settings inside. That is the paper's head's; another head's exports "
                    "serve what it reads: --head abmil one bag (a slide's tile features; its tiles end to end) and "
                    "each tile's attention, --head sequoia one slide's cluster means (end to end: the tiles' features, "
                    "to cluster); the README's serving table.")
    add_run(export)
    add_out(export, "export root, e.g. saved_models (the models go in <out>/<name>[_head]/<version>/)")
    add_option(export, "--name", EXPORT, "name")
    add_option(export, "--version", EXPORT, "version")
    add_no_progress(export, "progress bar of its stages")


def add_subtype(commands) -> None:
    subtype = commands.add_parser(
        "subtype", help="PAM50 subtype per sample (nearest centroid, or the paper's soft-voting classifier)",
        description="centroid: log data, median-centre each gene over the cohort, Spearman with each Parker 2009 "
                    "centroid, highest wins; writes the call and the per-centroid correlations. voting: the paper's "
                    "soft-voting classifier (RF, MLP, LDA, LR) on the PAM50 genes, trained on a labelled reference "
                    "cohort (e.g. TCGA RNA-seq) and applied to --expression (e.g. predicted genes); writes the call "
                    "and the class probabilities.")
    for flag, metavar in (("--expression", "TABLE"), ("--method", None), ("--reference-expression", "TABLE"),
                          ("--reference-labels", "TABLE")):
        add_option(subtype, flag, SubtypeInputs, flag[2:].replace("-", "_"), **({"metavar": metavar} if metavar else {}))
    add_option(subtype, "--label-column", INPUTS, "label_column")  # of --reference-labels
    add_option(subtype, "--no-log", SubtypeInputs, "no_log")
    add_option(subtype, "--reference-no-log", SubtypeInputs, "reference_no_log")
    add_out(subtype, "CSV to write", file=True, metavar="CSV")
    add_overwrite(subtype, "CSV")


def add_spatial(commands) -> None:
    spatial = commands.add_parser(
        "spatial", help="maps of tile-level predicted genes and PAM50 calls over slide thumbnails; --truth: the map "
                        "scored against a sample's measured spots",
        usage="hist2rna spatial RUN --features DIR (--slides PATH [PATH ...] | --truth SAMPLE (--hest DIR | "
              "--spaceranger DIR --image FILE)) --out DIR [options]",
        description="Apply a run's head to each tile's own feature (extract with --save-tile-features) and draw, "
                    "over each slide's thumbnail, the predicted expression of the chosen genes and each tile's PAM50 "
                    "call (the paper's soft-voting classifier, trained on the run's training patients, on the tile's "
                    "predicted PAM50 genes). Writes <slide>_<gene>.png, <slide>_PAM50.png, <slide>_tiles.csv and "
                    "<slide>_tiles.geojson: every tile as a QuPath tile object (its genes and PAM50 probabilities as "
                    "measurements, its PAM50 call as its class); drag it onto the slide open in QuPath, or File > "
                    "Import objects. TensorFlow, the head and the classifier are made once for all slides. The "
                    "paper's head was trained on slide means: read tile values as where the signal comes from. A run "
                    "of --head abmil also maps each tile's attention (<slide>_attention.png, a column and a QuPath "
                    "measurement); --head sequoia maps SEQUOIA's sliding windows of tiles. With --truth SAMPLE, the map is "
                    "checked against measurement instead: the head on each spot's own patch (the sample's record in "
                    "--features, made by `extract-spots --like RUN`) against the log1p of its counts, per gene "
                    "Pearson, Spearman and a spin test's p (the spots rotated against the map: a null that keeps its "
                    "autocorrelation) with FDR: <sample>_truth.csv, <sample>_spots.csv, <sample>_spots.geojson (QuPath "
                    "detections with both values) and <sample>_<gene>_truth.png (measured | predicted).")
    add_run(spatial)
    add_features(spatial, "feature TFRecords with tile features (--truth: the sample's spot record's folder)")
    add_slides(spatial, "the slides (files or folders) to map (not with --truth)", required=False)
    add_option(spatial, "--genes", SPATIAL, "genes", metavar="GENE")
    add_option(spatial, "--no-gene-maps", SPATIAL, "no_gene_maps")
    add_option(spatial, "--no-subtypes", SPATIAL, "no_subtypes")
    add_no_progress(spatial, "progress bar")
    add_option(spatial, "--thumbnail-mpp", SPATIAL, "thumbnail_mpp", metavar="UM_PER_PX")
    add_out(spatial, "folder for the PNGs, CSVs and GeoJSON")
    add_option(spatial, "--truth", SPATIAL, "truth", metavar="SAMPLE")
    add_spot_sources(spatial, samples=False)
    add_option(spatial, "--spins", SPATIAL, "spins", metavar="N")


def add_baseline(commands) -> None:
    baseline = commands.add_parser(
        "baseline", help="the paper's patch-based comparison (tile-level training) and both approaches' cost",
        description="Train the patch-based baseline on a hist2RNA run's patients, split, genes and training settings, "
                    "with the paper's head (the run's own when it is the paper's, with its layers; for a run of "
                    "another head, the paper's on each tile, said so): every tile gets its slide's RNA-seq as its target and a slide's prediction is the mean "
                    "of its tiles'. --mode frozen learns from the stored per-tile features (extract with "
                    "--save-tile-features); --mode finetune trains the backbone too, on the tile images, as the "
                    "paper's patch-based models were (slow without a GPU). Writes a run folder (held-out predictions "
                    "and metrics, for Figure 10) and costs.csv: training time and energy (time x --device-watts x "
                    "--n-devices) of both approaches (Figure 6). Pass the folder to `hist2rna report --baseline`.")
    add_run(baseline, "the hist2RNA training run to compare with")
    add_out(baseline, "baseline run folder (a new one, unless --overwrite)")
    add_overwrite(baseline, "baseline")
    add_option(baseline, "--mode", BASELINE, "mode")
    add_features(baseline, "frozen: the folder of the run's feature records, with tile features (default: the one it "
                           "was trained on, as its config.json records it; give this when it has moved)", required=False)
    add_slides(baseline, "finetune: the slides (files or folders) the run was extracted from", required=False)
    add_annotations(baseline, "finetune: their QuPath GeoJSON folder")
    add_option(baseline, "--tiles-per-slide", BASELINE, "tiles_per_slide")
    add_option(baseline, "--max-epochs", BASELINE, "max_epochs")
    add_option(baseline, "--batch-size", BASELINE, "batch_size")
    add_option(baseline, "--device-watts", BASELINE, "device_watts")
    add_option(baseline, "--n-devices", BASELINE, "n_devices")
    add_option(baseline, "--device", BASELINE, "device")
    add_no_progress(baseline, "progress bar or per-epoch lines")
    hidden_alias(baseline, "--quiet", "no_progress", action="store_true")  # its name before 0.4.0


def add_folds(commands) -> None:
    folds = commands.add_parser(
        "folds", help="a cohort's cross-validation folds: patient-level, or site-preserved (Howard et al. 2021)",
        usage="hist2rna folds --labels TABLE [--folds K] [--stratified | --site-preserved] [--site-column COL] --out "
              "CSV [options]",
        description="Deal a labelled cohort's patients into K folds and write patient_id, label, site, fold. By "
                    "default patient-level folds stratified by the label (crossval's own). With --site-preserved, "
                    "every site's patients in one fold (a TCGA patient's site: the two characters after TCGA- in "
                    "its barcode; else --site-column), the label's proportions as balanced as whole sites allow: "
                    "Howard's objective (the sum over labels and folds of (K x count in fold - count in cohort)^2) "
                    "solved exactly as a mixed-integer program (scipy's HiGHS), its objective and whether it was "
                    "proven optimal printed and written beside the CSV (its name with .json: folds.csv, "
                    "folds.json). `hist2rna crossval --folds-file CSV` trains on them; `hist2rna report` of a "
                    "patient-level and a site-preserved crossval gives the site-leak gap.")
    for flag, name, metavar in (("--labels", "labels", "TABLE"), ("--label-column", "label_column", "COL"),
                                ("--folds", "folds", "K"), ("--stratified", "stratified", None),
                                ("--site-preserved", "site_preserved", None),
                                ("--site-column", "site_column", "COL"), ("--time-limit", "time_limit", "SECONDS"),
                                ("--seed", "seed", "N")):
        add_option(folds, flag, FoldsInputs, name, **({"metavar": metavar} if metavar else {}))
    add_out(folds, "CSV to write (patient_id, label, site, fold)", file=True, metavar="CSV")
    add_overwrite(folds, "CSV")


def add_robustness(commands) -> None:
    robustness = commands.add_parser(
        "robustness", help="PathoROB's robustness index of features folders: do the neighbours share the subtype "
                           "or the site?",
        usage="hist2rna robustness FEATURES [FEATURES ...] --labels TABLE [--site-column COL] [--k K] --out DIR "
              "[options]",
        description="PathoROB's robustness index (Koemen et al. 2025; bifold-pathomics/PathoROB, exact to their code "
                    "at 46594e9) of each features folder, side by side: the samples (slides' mean features, or "
                    "--tiles-per-slide tiles of each) in every subset of 2 classes x 2 sites, each sample's k nearest "
                    "neighbours outside its own patient or slide; RI = SO / (SO + OS), of the neighbours that share "
                    "exactly one of class and site, the share that share the class (1: biology orders the space; 0: "
                    "the site does). Writes robustness.csv (a row a folder), robustness_pairs.csv, "
                    "robustness_curves.csv and robustness.png under --out.")
    add_option(robustness, "features", RobustnessInputs, "features", metavar="FEATURES", nargs="+")
    for flag, name, metavar in (("--labels", "labels", "TABLE"), ("--label-column", "label_column", "COL"),
                                ("--site-column", "site_column", "COL"), ("--k", "k", "K"),
                                ("--tiles-per-slide", "tiles_per_slide", "N"), ("--bootstrap", "bootstrap", "N"),
                                ("--seed", "seed", "N")):
        add_option(robustness, flag, RobustnessInputs, name, metavar=metavar)
    add_out(robustness, "folder to write the four files in (an earlier robustness's are replaced; a file of yours of "
                        "the same name is refused)")


def add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="one self-contained HTML report of a run (metrics, figures, subtypes, clinical analysis)",
        description="Write <run>/report/report.html: the run's config, held-out Spearman across patients and genes "
                    "with bootstrap CIs (Figures 3-5), the soft-voting subtype classifier on the predicted PAM50 "
                    "genes, and with an external cohort the biomarker checks (Figures 7-8), LumA/LumB "
                    "reclassification, Tables 1-2 and Kaplan-Meier curves (Figure 9); the paper's figures beside. "
                    "Every figure and table is also written beside it as PNG and CSV. RUN may be a crossval folder "
                    "(hist2rna crossval --out): its summary, Figure 3 per fold and pooled, and with --compare of "
                    "other crossvals of the same patients and folds the paired comparison gene by gene (Wilcoxon "
                    "signed-rank over genes), printed too. A spot run (hist2rna train-spots --out): each held-out "
                    "sample's Pearson per gene, the head beside HEST's ridge and the untrained head. --hest-bench "
                    "adds HEST-Benchmark tables (hist2rna hest-bench --out).")
    add_run(report, "a training run folder (hist2rna train or train-spots --out) or a crossval folder (hist2rna "
                    "crossval --out)")
    add_option(report, "--compare", REPORT, "compare", metavar="RUN")
    for flag, metavar in (("--external-predictions", "CSV"), ("--clinical", "TABLE"), ("--clinical-columns", "JSON"),
                          ("--run-clinical", "TABLE"), ("--run-clinical-columns", "JSON"), ("--baseline", "DIR")):
        add_option(report, flag, REPORT, flag[2:].replace("-", "_"), metavar=metavar)
    add_option(report, "--spatial-maps", REPORT, "spatial_maps", metavar="DIR")
    add_option(report, "--hest-bench", REPORT, "hest_bench", metavar="DIR")
    add_option(report, "--robustness", REPORT, "robustness", metavar="DIR")
    add_option(report, "--costs", REPORT, "costs", metavar="CSV")
    add_option(report, "--n-boot", REPORT, "n_boot", metavar="N")
    add_out(report, "HTML file (default <run>/report/report.html)", file=True, required=False)
    add_no_progress(report, "progress bar of its stages")


def add_demo(commands) -> None:
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
                    "spatial/: tile maps and QuPath objects of every held-out slide (the report shows one); (9) "
                    "report/report.html, and demo_summary.json. "
                    "Re-running reuses the cohort and the features. Random backbone weights unless --weights "
                    "imagenet.")
    add_option(demo, "--out", DEMO, "out", type=out_folder)
    add_option(demo, "--n-slides", DEMO, "n_slides")
    add_option(demo, "--backbone", DEMO, "backbone")
    add_option(demo, "--weights", DEMO, "weights")
    add_option(demo, "--head", DEMO, "head", choices=list(HEADS))
    add_no_progress(demo)
