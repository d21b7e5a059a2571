"""The demo's whole chain on the SYNTHETIC demo cohort, as one library call (`hist2rna demo` is a
thin layer over `run_demo`).

cohort (slides + annotations) -> features (TFRecords) -> synthetic expression tied to the images
-> the paper's head on a stratified split -> held-out Spearman, beside controls trained on
shuffled targets (patients' expression rows permuted, same split, scored against the TRUE
held-out targets) -> the patch-based baseline and both approaches' cost -> predictions for every
patient -> an external TMA-like cohort with a synthetic clinical table -> SavedModel exports (head
and end to end) -> a spatial map -> the report.

The demo backbone has random weights (offline), whose slide features barely differ between slides,
so the demo trains with `standardize=True` (NOT the paper; see model/heads/base.py). These numbers show that
the pipeline learns what the images show; they say nothing about real biology.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from hist2rna_tf.analysis.evaluate import across_genes, summary
from hist2rna_tf.atomic import atomic_path, write_json, write_text
from hist2rna_tf.config import (MIN_DEMO_SLIDES, BaselineConfig, DemoConfig, ExtractConfig, ReportInputs, RunInputs,
                                TrainConfig)
from hist2rna_tf.demo.cohort import SYNTHETIC_NOTE, build_demo_cohort, write_demo_clinical, write_demo_expression
from hist2rna_tf.demo.sites import DEMO_FOLDS, site_demo
from hist2rna_tf.demo.spots import spot_demo
from hist2rna_tf.errors import Hist2RNAError, OutputError, SettingsError
from hist2rna_tf.extract.backbones.build import check_backbone_arguments
from hist2rna_tf.extract.cohort import MANIFEST, extract_cohort
from hist2rna_tf.extract.settings import for_backbone
from hist2rna_tf.model import runs
from hist2rna_tf.model.baseline import train_patch_baseline
from hist2rna_tf.model.export import export_run
from hist2rna_tf.model.predict import write_predictions
from hist2rna_tf.model.heads import head_entry, head_settings, with_head_training
from hist2rna_tf.model.inputs import kind_of
from hist2rna_tf.model.train import train_run
from hist2rna_tf.outputs import describe
from hist2rna_tf.progress import Stages
from hist2rna_tf.report.report import build_report
from hist2rna_tf.report.spatial import write_spatial_maps
from hist2rna_tf.report.spatial_folder import SpatialFolder, map_files

# The head settings the demo's small slides need, each given to a head that has it: its slides have 30-45 tiles and
# the external TMA cores 5-14, far fewer than SEQUOIA's 100 clusters; 4 (as many as the demo's source tumours) fits
# every slide of both cohorts.
DEMO_HEAD_SETTINGS = {"clusters": 4}

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    n_slides: int
    n_tiles: int
    extraction_s: float
    metrics: dict
    control_medians: list[float]
    train_s: float
    paths: dict = field(default_factory=dict)
    spots: dict | None = None  # the synthetic Visium sections' figures (demo/spots.py's spot_demo)
    sites: dict | None = None  # the site-leak gap and the robustness index (demo/sites.py's site_demo)

    @property
    def learned_median(self) -> float:
        return float(self.metrics["across_genes"]["median"])


def shuffled_expression(expression_csv: Path, out_csv: Path, seed: int) -> Path:
    """The expression table with whole rows moved to other patients (a permutation with no fixed point)."""
    with open(expression_csv, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    rng = np.random.default_rng([seed, 99])
    while True:
        order = rng.permutation(len(body))
        if len(body) < 2 or not (order == np.arange(len(body))).any():
            break
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, source in zip(body, order):
            writer.writerow([row[0], *body[source][1:]])
    return out_csv


def control_median(control_dir: Path, run_dir: Path) -> float:
    """Median held-out Spearman across genes of a control's predictions against the TRUE targets."""
    predicted, _ = runs.held_out(control_dir)
    _, truth = runs.held_out(run_dir)
    return summary(across_genes(predicted, truth))["median"]


# Marks a folder as the demo's own (written first): only such a folder (or a new or empty one) is
# written into, since the demo replaces its run/, controls/ and baseline/ on every run.
DEMO_MARK = ".hist2rna-demo"


def check_demo(config: DemoConfig) -> None:
    """Before anything is built: enough slides, a backbone and weights that can be built, and an
    output folder that is new, empty or an earlier demo's (never a folder of the user's files)."""
    if config.n_slides < MIN_DEMO_SLIDES:
        raise Hist2RNAError(f"--n-slides {config.n_slides}: the demo needs at least {MIN_DEMO_SLIDES} slides (a "
                            "stratified split of fewer leaves too few patients to train and evaluate).")
    check_backbone_arguments(config.backbone, config.weights)
    head_entry(config.head)  # a head the registry has
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder (new, empty, or an earlier demo's).")
    ours = (out / DEMO_MARK).is_file() or (out / "demo_summary.json").is_file()  # the latter: demos of 0.6.0
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not ours:
        raise OutputError(f"--out {out} holds {describe(entries)} and is not a demo's folder (the demo replaces its "
                          "run/, controls/ and baseline/); give a new or empty folder, or an earlier demo's.")


def run_demo(config: DemoConfig = DemoConfig()) -> DemoResult:
    """Run the whole demo chain under `config.out`; re-running reuses the cohort and the features."""
    out = Path(config.out)
    check_demo(config)
    write_text(out / DEMO_MARK, "a hist2rna demo folder: `hist2rna demo --out` may rebuild what is in it.\n")
    cohort_dir = out / "cohort"
    build_demo_cohort(cohort_dir, n_slides=config.n_slides, seed=config.seed, progress=config.progress)
    start = time.perf_counter()
    extract = _extract_config(config)
    results = _extract(cohort_dir, out / "features", replace(extract, save_tile_features=True), config.progress)
    extraction_s = time.perf_counter() - start
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise Hist2RNAError(f"{len(failed)} demo slides failed to extract (e.g. {failed[0].slide_id}: "
                            f"{failed[0].reason}); see {out / 'features'}/*/manifest.csv")
    features = _features_dir(out / "features", config.backbone)
    expression, labels = write_demo_expression(cohort_dir, seed=config.seed)
    paths_clinical = {"clinical": write_demo_clinical(cohort_dir, seed=config.seed, filename="clinical_ihc.csv")}

    external = _external_features(config) if config.n_external else None  # its own bars, before the stages'
    start = time.perf_counter()
    train = with_head_training(TrainConfig(seed=config.seed, standardize=True, head=config.head,
                                           head_options=demo_head_options(config.head)))
    run_dir = out / "run"
    with Stages("demo", _stages(config), config.progress) as stages:  # the steps after extraction, each named
        _fresh(run_dir)
        metrics = train_run(RunInputs(features=str(features), expression=str(expression), labels=str(labels)),
                            run_dir, train).metrics
        stages.next()
        controls = []
        for k in range(config.n_controls):
            control_dir = out / "controls" / f"shuffled-{k + 1}"
            _fresh(control_dir)
            shuffled = shuffled_expression(expression, out / "controls" / f"expression_shuffled-{k + 1}.csv", seed=k)
            train_run(RunInputs(features=str(features), expression=str(shuffled), labels=str(labels),
                                split=str(runs.split_path(run_dir))), control_dir,
                      replace(train, seed=config.seed + k + 1))
            controls.append(control_median(control_dir, run_dir))
        stages.next()
        train_s = time.perf_counter() - start
        paths = {"cohort": cohort_dir, "features": features, "run": run_dir, **paths_clinical}
        sites = None
        if config.sites:
            _fresh(out / "sites")
            sites = site_demo(features, expression, labels, out / "sites", train, config.seed)
            paths.update(sites.pop("paths"))
            stages.next()
        if config.baseline:
            _fresh(out / "baseline")
            train_patch_baseline(run_dir, out / "baseline", BaselineConfig())
            paths["baseline"] = out / "baseline"
            stages.next()
        paths["predictions"] = write_predictions(run_dir, features, out / "predictions.csv")
        if external is not None:
            paths.update(_external_predictions(run_dir, *external))
        stages.next()
        if config.export:
            head_dir, full_dir = export_run(run_dir, out / "saved_models", version=1, replace=True)
            paths.update(export_head=head_dir, export_end_to_end=full_dir)
            stages.next()
        tiles_per_slide = {r.slide_id: r.n_tiles for r in results}
        paths.update(_spatial_maps(run_dir, features, cohort_dir, out / "spatial", tiles_per_slide))
        stages.next()
        spots = None
        if config.sections:
            control = out / "controls" / "shuffled-1" if config.n_controls else None
            spots = spot_demo(run_dir, control, out / "spots", config.sections, config.seed)
            paths.update(spots.pop("paths"))
            stages.next()
        paths["report"] = _report(run_dir, paths, out / "report" / "report.html")
        stages.next()
    n_tiles = sum(r.n_tiles for r in results if r.status in ("done", "skipped"))
    shown = {k: {t: str(p) for t, p in v.items()} if isinstance(v, dict) else str(v) for k, v in paths.items()}
    result = DemoResult(len(results), n_tiles, extraction_s, metrics, controls, train_s, shown, spots, sites)
    write_json(out / "demo_summary.json", {**asdict(result), "config": asdict(config),
                                           "learned_median": result.learned_median})
    return result


def demo_head_options(head: str) -> tuple[str, ...]:
    """`--head-option`s of the head for the demo's small slides (DEMO_HEAD_SETTINGS it has)."""
    known = {f.name for f in fields(head_settings(head))}
    return tuple(f"{name}={value}" for name, value in DEMO_HEAD_SETTINGS.items() if name in known)


def _stages(config: DemoConfig) -> list[str]:
    """The demo's steps after extraction, as its progress bar names them."""
    return ["training the head", f"{config.n_controls} shuffled controls",
            *([f"sites: two {DEMO_FOLDS}-fold crossvals, the robustness index"] if config.sites else []),
            *(["the patch-based baseline"] if config.baseline else []),
            "predictions" + (f" (and {config.n_external} external TMA cores)" if config.n_external else ""),
            *(["both SavedModel exports"] if config.export else []), "spatial maps",
            *([f"{config.sections} synthetic Visium sections"] if config.sections else []), "the report"]


def _external_features(config: DemoConfig) -> tuple[Path, Path, Path]:
    """A second demo cohort of small, TMA-core-like slides with a SYNTHETIC clinical table (the paper's
    external TMA cohort, in miniature), extracted: its features folder, clinical table and root."""
    root = Path(config.out) / "external"
    build_demo_cohort(root / "cohort", n_slides=config.n_external, seed=config.seed + 1, prefix="tma", grid=(5, 6),
                      progress=config.progress)
    tiles = kind_of(config.head).tile_features  # a head that reads every tile needs them
    _extract(root / "cohort", root / "features", replace(_extract_config(config), save_tile_features=tiles),
             config.progress)
    write_demo_expression(root / "cohort", seed=config.seed + 1, model_seed=config.seed)
    clinical = write_demo_clinical(root / "cohort", seed=config.seed + 1)
    return _features_dir(root / "features", config.backbone), clinical, root


def _external_predictions(run_dir: Path, features: Path, clinical: Path, root: Path) -> dict:
    """The external cohort predicted with the trained run through the normal pipeline."""
    return {"external_predictions": write_predictions(run_dir, features, root / "predictions.csv"),
            "external_clinical": clinical}


def _spatial_maps(run_dir: Path, features: Path, cohort_dir: Path, out_dir: Path, n_tiles: dict[str, int]) -> dict:
    """Every held-out slide mapped (the best-predicted gene, the tiles' PAM50 calls, the tiles as QuPath
    objects); the report shows the maps of the one with the most tiles and links every slide's objects."""
    predicted, _ = runs.held_out(run_dir)
    gene = runs.metrics(run_dir)["across_genes"]["rho"].idxmax()
    slide_id = max(predicted.index, key=lambda s: n_tiles[s])
    write_spatial_maps(run_dir, features, [cohort_dir / "slides" / f"{s}.tiff" for s in sorted(predicted.index)],
                       out_dir, [gene])
    folder = SpatialFolder(out_dir)
    return {"spatial_map": folder.map(slide_id, gene), "spatial_subtypes": folder.map(slide_id),
            "spatial_objects": map_files(out_dir)}


def _report(run_dir: Path, paths: dict, out: Path) -> Path:
    inputs = ReportInputs(run=run_dir, external_predictions=paths.get("external_predictions"),
                          baseline=paths.get("baseline"), run_clinical=paths.get("clinical"),
                          robustness=paths.get("sites_robustness"),
                          clinical=paths.get("external_clinical"), title="hist2RNA demo report",
                          extra_figures={
                              "Spatial map (beyond the paper): tile-level predictions of a held-out slide":
                                  Path(paths["spatial_map"]),
                              "Spatial map (beyond the paper): each tile's PAM50 call from its predicted genes":
                                  Path(paths["spatial_subtypes"]),
                              **({"The map against measurement (beyond the paper): the bulk-trained head at each spot "
                                  "of a SYNTHETIC Visium section, measured | predicted": Path(paths["truth_map"])}
                                 if "truth_map" in paths else {})},
                          extra_files=paths["spatial_objects"],
                          note=SYNTHETIC_NOTE + " The RNA-seq and the clinical tables are synthetic too; the "
                          "backbone has random weights and the head was trained with standardisation (not the "
                          "paper). Nothing here says anything about real biology.")
    return build_report(inputs, out)


def _extract(cohort_dir: Path, out: Path, extract, progress: bool) -> list:
    """Extract a demo cohort; features an earlier demo made with other settings (say --weights) are
    replaced, as everything downstream is rebuilt anyway."""
    def run(config):
        return extract_cohort([cohort_dir / "slides"], out, config, annotations_dir=cohort_dir / "annotations",
                              progress=progress)

    try:
        return run(extract)
    except SettingsError as exc:
        log.info("%s; extracting this demo's features again.", str(exc).split(";")[0])
        return run(replace(extract, overwrite=True))


def _extract_config(config: DemoConfig) -> ExtractConfig:
    """The demo's backbone at its own scale (the paper's CNNs: 224 px at 0.25 um/px; an encoder's own)."""
    return for_backbone(config.backbone, config.weights)


def _features_dir(root: Path, backbone: str) -> Path:
    folders = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).exists()]
    named = [p for p in folders if p.name == backbone]
    return named[0] if named else folders[0]


def _fresh(folder: Path) -> None:
    """Training re-runs from scratch: an earlier run's folder is replaced, never mixed with."""
    if folder.exists():
        shutil.rmtree(folder)
