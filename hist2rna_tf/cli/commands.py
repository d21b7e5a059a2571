"""The command bodies: each turns parsed arguments into one library call and prints what it did."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from hist2rna_tf.cli.options import (BASELINE, CROSSVAL, DEMO, EXPORT, EXTRACT, INPUTS, REPORT, SCALE, SPATIAL, TILES,
                                     TRAIN, counted, from_args)
from hist2rna_tf.cli.site_commands import cmd_folds, cmd_robustness
from hist2rna_tf.cli.spot_commands import cmd_extract_spots, cmd_hest_bench, cmd_train_spots
from hist2rna_tf.config import RunInputs, StainConfig, TrainConfig
from hist2rna_tf.errors import Hist2RNAError, SettingsError, SpatialError
from hist2rna_tf.outputs import refuse_overlap, refuse_replacing_file

log = logging.getLogger("hist2rna_tf")


def cmd_extract(args) -> int:
    from hist2rna_tf.extract.cohort import extract_cohort
    from hist2rna_tf.extract.settings import for_backbone

    given = from_args(EXTRACT, args, skip=("stain",))  # the StainConfig is _stain's
    scale = from_args(SCALE, args)
    config = for_backbone(args.backbone, args.weights, tile_size_px=args.tile_size_px, target_mpp=args.target_mpp,
                          tiles=from_args(TILES, args, skip=("tile_size_px", "target_mpp"), mpp_override="mpp"),
                          stain=_stain(args),
                          **{f: getattr(given, f) for f in ("batch_size", "read_threads", "save_tile_features",
                                                             "overwrite", "precision", "xla")},
                          shard_index=scale.shard[0], shard_count=scale.shard[1])
    if not args.gpus and scale.ray is None:
        log.info("TensorFlow sees no GPU here: the backbone runs on the CPU.")
    start = time.perf_counter()
    if scale.ray is None:
        results = extract_cohort(args.slides, args.out, config, args.annotations, progress=not args.no_progress)
    else:
        from hist2rna_tf.extract.distributed import RayWorkers

        with RayWorkers.start(config, None if scale.ray == "local" else scale.ray, scale.cpus_per_worker,
                              max_retries=scale.max_retries) as workers:
            results = extract_cohort(args.slides, args.out, config, args.annotations, progress=not args.no_progress,
                                     extractor=workers)
    return _report_extraction(results, time.perf_counter() - start, args.out)


def _stain(args) -> StainConfig:
    return replace(from_args(StainConfig(), args, skip=("reference_image",)),
                   reference_image=str(args.reference_image) if args.reference_image else None)


def _report_extraction(results, seconds: float, out: Path) -> int:
    """Print what an extraction did; its exit status (1 when any slide failed, or none was done)."""
    if not results:
        print(f"no slides to extract in this shard (--shard); the others hold them. Output: {out}")
        return 0
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed", "pending")}
    tiles = sum(r.n_tiles for r in results if r.status == "done")
    rate = f", {tiles / seconds:.1f} tiles/s" if tiles and seconds > 0 else ""
    others = f", {counts['pending']} left to another run into the same folder" if counts["pending"] else ""
    print(f"{counted(len(results), 'slide')}: {counts['done']} done, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed{others}; {counted(tiles, 'tile')} in {seconds:.1f} s{rate}. Output: {out}")
    for r in results:
        if r.status == "failed":
            print(f"  FAILED {r.slide_id}: {r.reason}")
    return 1 if counts["failed"] or counts["done"] + counts["skipped"] + counts["pending"] == 0 else 0


def cmd_normalize(args) -> int:
    from hist2rna_tf.extract.stain.normalisers import normalise_image_file

    if bool(args.out) == bool(args.output):
        raise Hist2RNAError("give the output once: `hist2rna normalize INPUT --out OUTPUT`.")
    written, stained = normalise_image_file(args.input, args.out or args.output, _stain(args),
                                            components=args.components, overwrite=args.overwrite)
    if not stained:
        print(f"{args.input}: too little stain to estimate; written unchanged.")
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _training(args) -> tuple[RunInputs, TrainConfig]:
    """`train`'s and `crossval`'s inputs and training settings."""
    from hist2rna_tf.model.heads import with_head_training

    config = with_head_training(from_args(TRAIN, args, skip=("max_epochs",)))  # SEQUOIA's for sequoia
    if args.max_epochs:
        config = replace(config, max_epochs=args.max_epochs)
    return from_args(replace(INPUTS, features=str(args.features)), args, skip=("features",)), config


def cmd_crossval(args) -> int:
    from hist2rna_tf.model.crossval import crossval

    inputs, config = _training(args)
    given = from_args(CROSSVAL, args, skip=("folds",))
    if given.folds_file and args.folds is not None:
        raise SettingsError(f"--folds {args.folds} and --folds-file: the file gives the folds (and K); leave --folds "
                            "out.")
    given = replace(given, folds=args.folds or CROSSVAL.folds)
    summary = crossval(inputs, args.out, config, folds=given.folds, seed=args.seed, progress=not args.no_progress,
                       folds_file=given.folds_file, folds_column=given.folds_column)
    mean, low, high = (summary.loc[row, "median_rho_genes"] for row in ("mean", "ci95_low", "ci95_high"))
    patients = summary.loc["mean", "median_rho_patients"]
    made = (f"folds of {given.folds_file} (column {given.folds_column}; early stopping on a patient-level share of each "
            "fold's training patients)" if given.folds_file else "patient-level folds")
    print(f"{len(summary.index[summary.index.str.startswith('fold-')])} {made}: median Spearman across genes {mean:.2f} "
          f"a fold (95% CI {low:.2f} to {high:.2f}), across patients {patients:.2f}; out of fold, every patient once: "
          f"{summary.loc['out_of_fold', 'median_rho_genes']:.2f} across genes, "
          f"{int(summary.loc['out_of_fold', 'genes_fdr_0.05'])} genes at FDR < 0.05. Folder: {args.out} (summary.csv, "
          "genes.csv, oof_predictions.csv, fold-<k>/)")
    return 0


def cmd_train(args) -> int:
    from hist2rna_tf.model.train import train_run

    inputs, config = _training(args)
    run = train_run(inputs, args.out, config, overwrite=args.overwrite, progress=not args.no_progress)
    record, genes, patients = run.record, run.metrics["across_genes"], run.metrics["across_patients"]
    print(f"{record.patients['train']} training / {counted(record.patients['test'], 'held-out patient')}, "
          f"{counted(record.genes, 'gene')}, {counted(record.epochs, 'epoch')} (best validation MSE "
          f"{record.best_val_loss:.3f}).")
    print(f"held-out Spearman: across genes median {genes['median']:.2f} (IQR {genes['q25']:.2f} to {genes['q75']:.2f}), "
          f"{genes['significant']}/{genes['total']} genes at FDR < 0.05; across patients median "
          f"{patients['median']:.2f}; {counted(run.metrics['r2_at_least_0.1'], 'gene')} with R2 >= 0.1. Folder: {args.out}")
    test = run.metrics["sequoia"]
    print(f"SEQUOIA's test (Pearson, Steiger against the untrained head): {test['significant']}/{test['total']} genes "
          f"significant; {counted(test['r_above_0.4'], 'gene')} with r > 0.4.")
    return 0


def cmd_predict(args) -> int:
    from hist2rna_tf.atomic import write_table
    from hist2rna_tf.model.predict import (Predictor, predict_patients, predict_slides, predict_tiles,
                                           slides_features_dir)

    if bool(args.model) == bool(args.model_option):
        raise Hist2RNAError("give the model once: `hist2rna predict RUN --features ... --out ...` (RUN: a training "
                            "run folder or a head export).")
    refuse_overlap(args.out, {"RUN": args.model or args.model_option, "--features": args.features,
                              "--slides": args.slides, "--annotations": args.annotations}, may_hold=("RUN",))
    refuse_replacing_file(args.out, args.overwrite)
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
    elif predictor.spot_run:  # every tile's (or spot's) own prediction: a virtual spatial map
        status, table = 0, predict_tiles(predictor, args.features)
    else:
        status, table = 0, predict_patients(predictor, args.features)
    if predictor.spot_run:
        write_table(table, args.out, index=False)
        print(f"predicted {counted(len(predictor.genes), 'gene')} ({predictor.units}) for every one of "
              f"{counted(len(table), 'tile')} of {counted(table['slide_id'].nunique(), 'slide')}: {args.out}")
        return status
    write_table(table, args.out)
    print(f"predicted {counted(table.shape[1], 'gene')} for {counted(table.shape[0], 'patient')}: {args.out}"
          + (" (the slides that failed above are not in it)" if status else ""))
    return status  # 1 when a slide failed, as `extract` does


def cmd_export(args) -> int:
    from hist2rna_tf.model.export import export_run

    from hist2rna_tf.model import runs
    from hist2rna_tf.model.inputs import kind_of

    names = from_args(EXPORT, args)
    head_dir, full_dir = export_run(args.run, args.out, names.name, names.version, progress=not args.no_progress)
    head, full = kind_of(runs.read_record(args.run).train.head).serves
    if full_dir is None:  # a spot run: its head alone
        from hist2rna_tf.model.predict import Predictor

        spots = Predictor(head_dir)
        read = "each spot's features and its neighbourhood's mean [N, 2F]" if spots.context_um else "spots' features [N, F]"
        print(f"exported {head_dir} ({read} -> genes [N, G], {spots.units}; its output is named log2_expression "
              "as every head export's); a spot run has no end-to-end model of a slide's mean tile")
        return 0
    print(f"exported {head_dir} ({head}) and {full_dir} ({full})")
    return 0


def cmd_import_run(args) -> int:
    from hist2rna_tf.model.import_run import import_sequoia

    if (args.expression or args.labels) and not (args.features and args.expression and args.labels):
        raise SettingsError("import-run: evaluating the model needs --features, --expression and --labels together.")
    evaluate = None
    if args.features:
        evaluate = RunInputs(str(args.features), str(args.expression or ""), str(args.labels or ""),
                             label_column=args.label_column)
    out = import_sequoia(args.folder, args.out, args.genes, evaluate, progress=not args.no_progress)
    from hist2rna_tf.model import runs

    record = runs.read_record(out)
    print(f"imported {args.folder} as {out}: SEQUOIA's ViS, {record.genes} genes, {record.feature_dim} features "
          f"({record.feature_settings.backbone}), {record.head_settings['clusters']} clusters a slide" +
          (f"; evaluated on {record.patients['test']} patients (hist2rna report {out})" if record.patients["test"]
           else ""))
    return 0


def cmd_subtype(args) -> int:
    from hist2rna_tf.analysis.subtype import subtype_table
    from hist2rna_tf.atomic import write_table

    refuse_overlap(args.out, {"--expression": args.expression, "--reference-expression": args.reference_expression,
                              "--reference-labels": args.reference_labels})
    refuse_replacing_file(args.out, args.overwrite)
    calls = subtype_table(args.expression, args.method, args.reference_expression, args.reference_labels,
                          args.label_column, logged=args.no_log, reference_logged=args.reference_no_log)
    write_table(calls, args.out)
    counts = ", ".join(f"{k} {v}" for k, v in calls["call"].value_counts().items()) or "no call"
    print(f"{counted(len(calls), 'sample')}: {counts}. Written to {args.out}")
    if "n_genes" in calls and (calls["n_genes"] < 50).any():
        partial = calls["n_genes"][calls["n_genes"] < 50]
        print(f"{len(partial)} samples called on fewer than 50 PAM50 genes (their measured ones; as few as "
              f"{partial.min()}): see the n_genes column.")
    return 0


def cmd_spatial(args) -> int:
    from hist2rna_tf.report.spatial import write_spatial_maps
    from hist2rna_tf.report.spatial_folder import OBJECTS, TILES

    drawn = from_args(SPATIAL, args)
    if drawn.truth:
        from hist2rna_tf.cli.spot_commands import spatial_truth

        return spatial_truth(args, drawn)
    if not args.slides:
        raise Hist2RNAError("spatial: give --slides PATH ... to map, or --truth SAMPLE to score the map against a "
                            "spatial sample's spots.")
    genes = None if drawn.genes == ("all",) else list(drawn.genes)
    try:
        written, status = write_spatial_maps(args.run, args.features, args.slides, args.out, genes,
                                             subtypes=not drawn.no_subtypes, thumbnail_mpp=drawn.thumbnail_mpp,
                                             progress=not args.no_progress, gene_maps=not drawn.no_gene_maps), 0
    except SpatialError as exc:  # some slides not mapped: named, the others written; exit 1 as `extract`
        print(f"error: {exc}", file=sys.stderr)
        written, status = exc.written, 1
    if written:
        slides = len({p.parent / p.name for p in written if p.name.endswith(TILES)})
        print(f"{counted(len(written), 'file')} for {counted(slides, 'slide')} in {args.out} (each slide's tiles "
              f"as QuPath objects: <slide>{OBJECTS}; drag it onto the slide in QuPath)")
    return status


def _crossval_report(args) -> int:
    """`hist2rna report CROSSVAL [--compare CROSSVAL ...]`: the crossval's report and, for each other,
    which predicts better and whether the difference is significant."""
    from hist2rna_tf.report.crossval import build_crossval_report, site_sentences

    path, comparisons = build_crossval_report(args.run, args.compare, args.out, args.robustness)
    for comparison in comparisons:
        print(comparison.verdict())
    for said in site_sentences([Path(args.run), *map(Path, args.compare or [])]):
        print(said)
    print(f"report: {path} (figures and tables as PNG/CSV beside it)")
    return 0


def cmd_baseline(args) -> int:
    from hist2rna_tf.model.baseline import train_patch_baseline

    config = from_args(BASELINE, args)
    baseline = train_patch_baseline(args.run, args.out, config, slides=args.slides, annotations_dir=args.annotations,
                                    verbose=0 if args.no_progress else 1 if sys.stdout.isatty() else 2,  # bar on a tty
                                    features=args.features, overwrite=args.overwrite)
    genes = baseline.metrics["across_genes"]
    print(f"{counted(baseline.record.epochs, 'epoch')}; {genes['significant']}/{genes['total']} genes at FDR < 0.05.")
    _print_costs(Path(args.out))
    return 0


def _print_costs(baseline: Path) -> None:
    """The patch-based baseline's held-out median and both approaches' training time and energy."""
    from hist2rna_tf.model import runs

    record = runs.read_record(baseline)
    genes = runs.metrics(baseline)["across_genes"]["rho"]
    print(f"patch-based baseline ({record.baseline.mode}, {record.tiles['train']} training tiles): "
          f"held-out median across genes {genes.median():.2f} -> {baseline}")
    for row in runs.read_costs(baseline).itertuples():
        print(f"  {row.approach}: {row.seconds:.1f} s training, {row.kwh * 1000:.3g} Wh at {row.watts:g} W x "
              f"{row.n_devices} ({row.device})")


def cmd_report(args) -> int:
    from hist2rna_tf.model.folds import is_crossval
    from hist2rna_tf.report.report import build_report

    if is_crossval(args.run):
        return _crossval_report(args)

    inputs = replace(from_args(REPORT, args), compare=list(args.compare or []))
    path = build_report(inputs, args.out, progress=not args.no_progress)
    print(f"report: {path} (figures and tables as PNG/CSV beside it)")
    return 0


def cmd_demo(args) -> int:
    from hist2rna_tf.demo.chain import run_demo
    from hist2rna_tf.demo.cohort import SYNTHETIC_NOTE

    print(SYNTHETIC_NOTE)
    if args.weights == "none":
        print("backbone weights: random (--weights none, seeded); the head is trained with --standardize (not the "
              "paper: random-weight features barely differ between slides).")
    result = run_demo(replace(from_args(DEMO, args), progress=not args.no_progress))
    _print_demo(result, args.head)
    return 0


def _print_demo(result, head: str) -> None:
    genes, patients = result.metrics["across_genes"], result.metrics["across_patients"]
    controls = ", ".join(f"{c:.2f}" for c in result.control_medians)
    print(f"cohort: {result.n_slides} slides, {result.n_tiles} tiles, features in {result.extraction_s:.0f} s "
          f"-> {result.paths['features']}")
    print(f"held-out Spearman across genes: median {genes['median']:.2f} (IQR {genes['q25']:.2f} to {genes['q75']:.2f}), "
          f"{genes['significant']}/{genes['total']} genes at FDR < 0.05; across patients median {patients['median']:.2f}.")
    print(f"control (trained on shuffled targets, same split): median across genes {controls} "
          f"({Path(result.paths['run']).parent / 'controls'}).")
    verdict = "beats" if result.learned_median > max(result.control_medians, default=-1) else "does NOT beat"
    print(f"the model {verdict} every shuffled control. These numbers say nothing about real biology: the expression "
          "is synthetic, tied to which real tumours each demo slide's tiles come from.")
    print(f"run: {result.paths['run']}; predictions: {result.paths['predictions']}")
    if "baseline" in result.paths:
        _print_costs(Path(result.paths["baseline"]))
    if "export_end_to_end" in result.paths:
        from hist2rna_tf.model.inputs import kind_of

        served, full = kind_of(head).serves
        print(f"exports: {result.paths['export_head']} ({served}), {result.paths['export_end_to_end']} ({full})")
    if "spatial_map" in result.paths:
        print(f"spatial maps and QuPath objects of every held-out slide: {Path(result.paths['spatial_map']).parent}")
    if "external_predictions" in result.paths:
        print(f"external demo cohort (SYNTHETIC clinical table): {result.paths['external_predictions']}")
    if result.spots:
        _print_spots(result.spots, result.paths)
    if result.sites:
        _print_sites(result.sites, result.paths)
    print(f"report: {result.paths['report']}")


def _print_sites(sites: dict, paths: dict) -> None:
    """The demo's sites (demo/sites.py): the site-leak gap of two crossvals and the robustness index."""
    mean, low, high = sites["gap_folds"]
    print(f"sites ({sites['sites']} made-up sites, each with its own stain cast; the tumours a slide mixes do not depend "
          f"on its site): {sites['folds']}-fold crossvals, patient-level against site-preserved (Howard's objective "
          f"{sites['objective']:g}, {sites['status']}): site-leak gap per gene {sites['gap_median_per_gene']:+.3f} "
          f"(Wilcoxon p = {sites['gap_wilcoxon_p']:.2g}), a fold's median across genes {mean:+.3f} (95% CI {low:+.3f} "
          f"to {high:+.3f}); PathoROB's robustness index of the features {sites['robustness_index']:.2f} (k = "
          f"{sites['robustness_k']}, {sites['robustness_pairs']} subsets of 2 subtypes x 2 sites; 1: the subtype "
          f"orders the features' neighbours, 0: the site does).")
    print(f"  {sites['verdict']} `hist2rna report {paths['sites_patient_level']} --compare "
          f"{paths['sites_site_preserved']}` reports it.")


def _print_spots(spots: dict, paths: dict) -> None:
    """The demo's synthetic Visium sections (demo/spots.py): the bulk map against them, and a spot run."""
    control = spots["map_control_median_pearson"]
    print(f"spatial (SYNTHETIC Visium sections, {spots['spots']} spots in {len(spots['sections'])}): the bulk run's "
          f"map at each spot against its counts: median Pearson across genes {spots['map_median_pearson']:.2f}"
          + (f" (a shuffled control's map: {control:.2f})" if control is not None else "")
          + f", {spots['map_genes_fdr']}/{spots['map_genes']} section-genes at spin-test FDR < 0.05 -> {paths['truth']}")
    print(f"spot run held out on {spots['held_out']}: mean Pearson head {spots['spot_head']:.2f}, HEST's ridge "
          f"{spots['spot_ridge']:.2f}, untrained head {spots['spot_untrained']:.2f}, shuffled-spot control "
          f"{spots['spot_control']:.2f} -> {paths['spot_run']}. Synthetic counts: they say nothing about biology.")


COMMANDS = {"extract": cmd_extract, "normalize": cmd_normalize, "train": cmd_train, "crossval": cmd_crossval,
            "import-run": cmd_import_run, "predict": cmd_predict, "export": cmd_export, "subtype": cmd_subtype, "spatial": cmd_spatial,
            "extract-spots": cmd_extract_spots, "train-spots": cmd_train_spots, "hest-bench": cmd_hest_bench,
            "folds": cmd_folds, "robustness": cmd_robustness, "baseline": cmd_baseline, "report": cmd_report, "demo": cmd_demo}
# The commands that run TensorFlow: it is started (quietly, unless -v) before they run.
TENSORFLOW_COMMANDS = {"extract", "normalize", "train", "crossval", "import-run", "predict", "export", "spatial", "hest-bench", "extract-spots", "train-spots",
                       "baseline", "demo", "robustness"}
