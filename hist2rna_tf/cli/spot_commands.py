"""The command bodies of spatial transcriptomics (`extract-spots`, `train-spots`, `hest-bench`, `spatial
--truth`): each turns parsed arguments into one library call and prints what it did."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from hist2rna_tf.cli.options import SCALE, TRAIN, counted, from_args
from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.outputs import refuse_overlap

def spatial_truth(args, drawn) -> int:
    """`hist2rna spatial RUN --truth SAMPLE`: the run's map scored at the sample's spots (report/spot_truth.py)."""
    from hist2rna_tf.config import SPATIAL_GENES
    from hist2rna_tf.extract.records import record_files
    from hist2rna_tf.report.spot_truth import write_truth

    if args.slides:
        raise Hist2RNAError("spatial: --truth scores a spatial sample's spots; give it without --slides.")
    sample = truth_sample(args, drawn.truth)
    records = [Path(f) for f in record_files(args.features) if Path(f).stem == drawn.truth]
    if not records:
        raise Hist2RNAError(f"--features {args.features}: no spot record {drawn.truth}.tfrecord; make it with "
                            f"`hist2rna extract-spots ... --like {args.run} --out DIR` and give DIR/<backbone>.")
    genes = None if drawn.genes in (SPATIAL_GENES, ("all",)) else list(drawn.genes)
    scores, written = write_truth(args.run, records[0], sample, args.out, genes, drawn.spins, drawn.thumbnail_mpp)
    from hist2rna_tf.model.runs import read_record
    from hist2rna_tf.report.spot_truth import trained_on

    trained = trained_on(read_record(args.run).spots, sample.sample_id)
    tested = scores.dropna(subset=["pearson"])
    best = ", ".join(f"{g} {r.pearson:.2f} (spin p {r.p_spin:.3f})" for g, r in tested.head(4).iterrows())
    print(f"{sample.sample_id}{' (a TRAINING sample of the run: not a held-out figure)' if trained else ''}: the map "
          f"against {counted(int(tested['n_spots'].max()), 'measured spot')}, "
          f"{counted(len(tested), 'gene')}: median Pearson {tested['pearson'].median():.2f}, "
          f"{int((tested['fdr_spin'] < 0.05).sum())} at spin-test FDR < 0.05; best {best}. "
          f"{counted(len(written), 'file')} in {args.out}")
    return 0


def truth_sample(args, sample_id: str):
    """The --truth sample from --hest, or from the one --spaceranger folder and its --image."""
    from hist2rna_tf.spots.hest import read_hest_sample
    from hist2rna_tf.spots.spaceranger import read_spaceranger

    if args.hest and not args.spaceranger:
        return read_hest_sample(args.hest, sample_id, args.mpp, args.duplicate_genes)
    if len(args.spaceranger) == 1 and len(args.image) == 1 and not args.hest:
        return read_spaceranger(args.spaceranger[0], args.image[0], args.mpp, sample_id, args.duplicate_genes,
                                args.bin_um)
    raise Hist2RNAError(f"--truth {sample_id}: say where the sample is: --hest DIR (HEST's download), or one "
                        "--spaceranger DIR with its --image FILE.")


def cmd_train_spots(args) -> int:
    from hist2rna_tf.spot_run.cohort import SpotRunConfig
    from hist2rna_tf.spot_run.train import train_spot_run

    refuse_overlap(args.out, {"--features": args.features})
    samples = [read() for read in spot_readers(args)]
    config, train = from_args(SpotRunConfig(), args), from_args(TRAIN, args)
    if config.folds:
        from hist2rna_tf.spot_run.crossval import SUMMARY, crossval_spots

        summary = crossval_spots(args.features, samples, args.out, config.folds, config, train,
                                 progress=not args.no_progress).set_index("fold")
        mean, std = summary.loc["mean"], summary.loc["std"]
        print(f"{config.folds} folds of patients: held-out mean Pearson, mean over folds (std): head "
              f"{mean['head']:.3f} ({std['head']:.3f}), HEST's ridge {mean['ridge']:.3f} ({std['ridge']:.3f}), "
              f"untrained head {mean['untrained']:.3f}. Folder: {args.out} ({SUMMARY}, fold-<k>/)")
        return 0
    run = train_spot_run(args.features, samples, args.out, config, train, overwrite=args.overwrite,
                         progress=not args.no_progress)
    record, means = run.record, run.metrics["per_sample"]
    held = [s for s, info in record.spots["samples"].items() if info["subset"] == "test"]
    print(f"{counted(record.patients['train'], 'training spot')} / {counted(record.patients['test'], 'held-out spot')} "
          f"({', '.join(held)}), {counted(record.genes, 'gene')} ({config.genes}), {counted(record.epochs, 'epoch')}.")
    print(f"held-out mean Pearson per sample, averaged: head {means['head']:.3f}, HEST's ridge {means['ridge']:.3f}, "
          f"untrained head {means['untrained']:.3f}. Folder: {args.out} (per_sample.csv)")
    return 0


def cmd_extract_spots(args) -> int:
    from hist2rna_tf.spots.embed import spot_extraction
    from hist2rna_tf.spots.features import RayScale, extract_spots

    readers = spot_readers(args)
    for read in readers:  # every sample checked before anything is written
        read()
    start = time.perf_counter()
    if args.like:  # the run's own extraction: its backbone, weights, stain, tile size and scale
        from hist2rna_tf.model import runs

        config = replace(runs.extraction(args.like).for_new_slides(), batch_size=args.batch_size)
    else:
        config = spot_extraction(args.backbone, args.weights, args.stain, batch_size=args.batch_size)
    patch_files = {}
    if args.hest and not args.crop:  # HEST's own patches where the download has them
        from hist2rna_tf.spots.hest import hest_files

        found = {s: hest_files(args.hest, s)["patches"] for s in args.samples}
        patch_files = {s: path for s, path in found.items() if path.is_file()}
    scale = from_args(SCALE, args, skip=("shard",))
    ray = None if scale.ray is None else RayScale(None if scale.ray == "local" else scale.ray, scale.cpus_per_worker,
                                                  scale.max_retries)
    paths = extract_spots((read() for read in readers), args.out, config, progress=not args.no_progress,
                          total=len(readers), patch_files=patch_files, ray=ray)
    own = f"; {counted(len(patch_files), 'sample')} from HEST's own patches files" if patch_files else ""
    print(f"{counted(len(paths), 'sample')} in {time.perf_counter() - start:.1f} s: a record each in "
          f"{paths[0].parent if paths else args.out} (each spot a tile, its barcode its name){own}")
    return 0


def spot_readers(args) -> list:
    """One reader (a function giving the SpotSample) per sample the command line names."""
    from functools import partial

    from hist2rna_tf.spots.hest import read_hest_sample
    from hist2rna_tf.spots.spaceranger import read_spaceranger

    if bool(args.hest) == bool(args.spaceranger):
        raise Hist2RNAError("give --hest DIR --samples ID ... or --spaceranger DIR ... --image FILE ... (one of them).")
    if args.hest:
        if not args.samples:
            raise Hist2RNAError(f"--hest {args.hest}: name the samples to read with --samples (e.g. the ids of its "
                                "st/ folder's files).")
        return [partial(read_hest_sample, args.hest, s, args.mpp, args.duplicate_genes) for s in args.samples]
    if len(args.image) != len(args.spaceranger):
        raise Hist2RNAError(f"--spaceranger names {len(args.spaceranger)} folders and --image {len(args.image)} images; "
                            "give one full-resolution image per folder, in the same order.")
    return [partial(read_spaceranger, folder, image, args.mpp, None, args.duplicate_genes, args.bin_um)
            for folder, image in zip(args.spaceranger, args.image)]


def cmd_hest_bench(args) -> int:
    from hist2rna_tf.config import HestBenchConfig
    from hist2rna_tf.spots.hest_bench import PUBLISHED_SOURCE, hest_benchmark

    refuse_overlap(args.out, {"TASK": args.task})
    config = from_args(HestBenchConfig(backbones=("efficientnetv2s",)), args)
    table = hest_benchmark(args.task, args.out, config, progress=not args.no_progress)
    ours, theirs = table[table["source"] != PUBLISHED_SOURCE], table[table["source"] == PUBLISHED_SOURCE]
    for row in ours.itertuples():
        print(f"{row.model}: mean Pearson {row.pearson_mean:.4f} (std over splits {row.pearson_std:.4f})")
    if len(theirs):
        best = theirs.sort_values("pearson_mean", ascending=False).head(3)
        print(f"HEST's published figures for {Path(args.task).name} ({PUBLISHED_SOURCE}): "
              + ", ".join(f"{r.model} {r.pearson_mean:.4f}" for r in best.itertuples()) + ", ...")
    print(f"table: {Path(args.out) / 'hest_bench.csv'} (and .png); per gene: {Path(args.out) / 'results'}/<backbone>/")
    return 0
