"""A features folder's run: every slide under the inputs (this shard's share) extracted once, each
record written atomically as its slide finishes, the folder's settings kept in extract_config.json
(settings.py), and a manifest listing each slide as done, skipped (already done), failed (with the
reason) or pending. A re-run resumes; concurrent runs into one folder share its slides (claims.py);
`shard_index/shard_count` split a cohort across processes or machines; on Ray (distributed.py) this
process still writes every record and the manifest.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from hist2rna_tf.atomic import atomic_path, remove_stale_temp_files
from hist2rna_tf.config import MAX_TILE_PX, ExtractConfig
from hist2rna_tf.errors import ClaimedElsewhere, Hist2RNAError, RecordError, SettingsError, SlideError
from hist2rna_tf.extract.backbones.build import check_backbone_arguments
from hist2rna_tf.extract.claims import SlideClaims
from hist2rna_tf.extract.extractor import Extractor
from hist2rna_tf.extract.plan import annotation_for
from hist2rna_tf.extract.records import SlideFeatures, is_record_file, read_record, record_path, write_record
from hist2rna_tf.extract.settings import (EXTRACT_CONFIG_FILE, Extraction, FeatureSettings, extraction_path,
                                          read_extraction, require_same, write_extraction)
from hist2rna_tf.extract.slides import SlideRef, find_slides, other_tile_sizes
from hist2rna_tf.outputs import refuse_overlap

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"  # a folder's; a shard's is manifest.shard-<i>-of-<n>.csv
MANIFEST_LOCK = ".manifest.lock"  # held while a manifest is rewritten; stays, empty
MANIFEST_FIELDS = ("slide_id", "patient_id", "status", "reason", "n_tiles", "n_unnormalised",
                   "candidate_tiles", "seconds", "record", "source")


@dataclass
class SlideResult:
    """One line of the run manifest."""

    slide_id: str
    patient_id: str
    status: str  # pending (not finished yet: an interrupted run's) | done | skipped | failed
    source: str
    reason: str = ""
    n_tiles: int = 0
    n_unnormalised: int = 0
    candidate_tiles: int = 0
    seconds: float = 0.0
    record: str = ""


# --- a cohort ---------------------------------------------------------------------------------------


def shard(refs: list[SlideRef], shard_index: int, shard_count: int) -> list[SlideRef]:
    """This process's share of the (sorted) slides: every shard_count-th, from shard_index."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise Hist2RNAError(f"--shard {shard_index}/{shard_count}: expected i/n with 0 <= i < n.")
    return refs[shard_index::shard_count]


def manifest_path(out_dir: Path, backbone: str, shard_index: int, shard_count: int) -> Path:
    name = MANIFEST if shard_count == 1 else f"manifest.shard-{shard_index}-of-{shard_count}.csv"
    return Path(out_dir) / backbone / name


def write_manifest(results: list[SlideResult], path: Path) -> None:
    """Write this run's rows into the manifest at `path`, keeping the rows of slides this run did not
    touch (earlier runs into the folder, or other runs at the same time: the read-merge-write holds
    an exclusive lock on `.manifest.lock` beside it), sorted by slide id, atomically."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / MANIFEST_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some cluster mounts): merge unlocked
            log.warning("%s: cannot lock the manifest (%s); concurrent runs may drop each other's rows.", path, exc)
        rows = {row["slide_id"]: row for row in _manifest_rows(path)}
        for result in results:
            row = {key: getattr(result, key) for key in MANIFEST_FIELDS}
            row["seconds"] = f"{result.seconds:.2f}"
            if result.status == "pending" and rows.get(result.slide_id, {}).get("status", "pending") != "pending":
                continue  # another run's finished row stands until this run finishes the slide itself
            rows[result.slide_id] = row
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows[slide_id] for slide_id in sorted(rows))


def _manifest_rows(path: Path) -> list[dict]:
    """The rows of an existing manifest (none when there is none or it is unreadable)."""
    try:
        with open(path, newline="") as handle:
            return [row for row in csv.DictReader(handle) if row.get("slide_id")]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def existing_record(path: Path, expected: FeatureSettings, need_tile_features: bool = False) -> SlideFeatures | None:
    """The stored record when it was made with the `expected` settings; None when there is none (or
    when per-tile features are wanted and it has none: it is extracted again, with them). A
    SlideError when it was made otherwise."""
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except RecordError:
        log.warning("%s is unreadable (an interrupted run?); extracting again.", path)
        return None
    require_same(expected, record.settings, path, "this run", "use another --out, or --overwrite to extract it "
                 "again.", error=SlideError)
    if need_tile_features and record.tile_features is None:
        log.info("%s has no per-tile features; extracting again with them.", path)
        return None
    return record


def refuse_mixing(folder: Path, extraction: Extraction) -> None:
    """A SettingsError when `folder` holds records made with other settings than `extraction`'s
    (its extract_config.json says so, or cannot say)."""
    path = extraction_path(folder)
    if not path.exists() or not any(is_record_file(f) for f in folder.glob("*.tfrecord")):
        return
    fix = "adding to them would mix the two. Use another --out, or --overwrite to replace them."
    try:
        saved = read_extraction(path)
    except SettingsError:
        raise SettingsError(f"{folder}: its {EXTRACT_CONFIG_FILE} is unreadable, so its features may have been made "
                            f"otherwise; {fix}") from None
    require_same(extraction, saved, folder, "this run", fix)


def check_inputs(inputs: list[str | Path], out_dir: Path, config: ExtractConfig,
                 annotations_dir: str | Path | None) -> None:
    """What can be checked before the backbone is built or anything written: the output is none of
    the inputs (outputs.py), and the annotations are a folder."""
    files = {"--backbone": config.backbone if Path(config.backbone).is_file() else None,
             "--weights": config.weights if config.weights not in ("imagenet", "none") else None,
             "--stain-reference": config.stain.reference_image}
    refuse_overlap(out_dir, {"--slides": inputs, "--annotations": annotations_dir,
                             **{flag: path for flag, path in files.items() if path and Path(path).exists()}})
    check_backbone_arguments(config.backbone, config.weights, config.precision)
    if not 1 <= config.tiles.tile_size_px <= MAX_TILE_PX:
        raise SlideError(f"--tile-px {config.tiles.tile_size_px}: must be 1 to {MAX_TILE_PX} (a tile is read whole "
                         "into memory, a batch of them at once).")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        state = "a file" if Path(annotations_dir).exists() else "not there"
        raise SlideError(f"--annotations {annotations_dir}: {state}; give the folder of QuPath GeoJSON exports "
                         "named <slide_id>.geojson, or leave --annotations out to use the whole tissue.")


def extract_cohort(inputs: list[str | Path], out_dir: str | Path, config: ExtractConfig = ExtractConfig(),
                   annotations_dir: str | Path | None = None, progress: bool = False,
                   extractor: Extractor | None = None) -> list[SlideResult]:
    """Extract and store features for every slide under `inputs` (this shard's share).

    Failed slides are recorded and the others go on; returns the manifest rows (also written to
    `<out_dir>/<backbone>/manifest.csv`, with the run's config beside it as extract_config.json).
    Pass a built `extractor` to reuse it (its config then wins over `config`): an Extractor (this
    process) or a `distributed.RayWorkers` (a Ray cluster; this process still writes every record
    and the manifest, as results arrive).
    """
    out_dir = Path(out_dir)
    check_inputs(inputs, out_dir, extractor.config if extractor else config, annotations_dir)
    extractor = extractor or Extractor.build(config)
    config, backbone = extractor.config, extractor.backbone
    extraction = Extraction(config, backbone.name, backbone.weights_tag, backbone.feature_dim)
    expected = extraction.features
    found = find_slides(inputs, config.tiles.tile_size_px)
    if not found:  # before anything is written
        raise SlideError(f"no slides found in {', '.join(map(str, inputs))}: give slide files OpenSlide opens "
                         "(svs, tiff, ndpi, mrxs, ...), plain images with --mpp, or folders of them (or of "
                         f"{config.tiles.tile_size_px}-px tiles, one folder a patient)."
                         + other_tile_sizes(inputs, config.tiles.tile_size_px))
    refs = shard(found, config.shard_index, config.shard_count)
    folder = out_dir / backbone.name
    if not config.overwrite:
        refuse_mixing(folder, extraction)
    created = [p for p in (folder, out_dir) if not p.exists()]  # removed again if no slide gives a record
    write_extraction(folder, extraction)
    stale = remove_stale_temp_files(folder)
    if stale:
        log.info("removed %d temp files an interrupted run left in %s.", len(stale), folder)
    manifests = {manifest_path(out_dir, backbone.name, config.shard_index, config.shard_count),
                 manifest_path(out_dir, backbone.name, 0, 1)}  # a shard's own, and the folder's combined view
    annotations_dir = Path(annotations_dir) if annotations_dir else None

    results: dict[int, SlideResult] = {}
    todo: list[int] = []
    annotations: list[Path | None] = []
    for s, ref in enumerate(refs):
        result = SlideResult(ref.slide_id, ref.patient_id, "pending", str(ref.path))
        path = record_path(out_dir, backbone.name, ref.slide_id)
        try:
            existing = None if config.overwrite else existing_record(path, expected, config.save_tile_features)
            if existing is not None:
                result.status, result.record = "skipped", str(path)
                result.n_tiles, result.n_unnormalised = existing.n_tiles, existing.n_unnormalised
            else:
                annotations.append(annotation_for(ref, annotations_dir))
                todo.append(s)
        except SlideError as exc:
            result.status, result.reason = "failed", str(exc)
            log.debug("failed: %s", exc)  # reported once, in the manifest and the CLI summary
        results[s] = result
    ordered = lambda: [results[s] for s in sorted(results)]  # noqa: E731
    for manifest in manifests:
        write_manifest(ordered(), manifest)
    claims = SlideClaims(folder)

    def claim(k: int) -> ClaimedElsewhere | None:
        """Hold slide todo[k] for this run: None, or why not (another run has it, or has done it)."""
        ref = refs[todo[k]]
        holder = claims.acquire(ref.slide_id)
        if holder is not None:
            return ClaimedElsewhere(f"being extracted by another run ({holder})")
        path = record_path(out_dir, backbone.name, ref.slide_id)
        try:
            done = not config.overwrite and existing_record(path, expected, config.save_tile_features) is not None
        except SlideError:
            done = False  # another run wrote other settings meanwhile: this run's settings win
        if done:
            claims.release(ref.slide_id)
            return ClaimedElsewhere("done by another run", done=True)
        return None

    try:
        if todo:
            for k, record, candidates, seconds in extractor.extract([refs[s] for s in todo], annotations, claim,
                                                                    progress):
                result = results[todo[k]]
                result.seconds, result.candidate_tiles = seconds, candidates
                _record_outcome(result, record, out_dir, backbone.name)
                claims.release(result.slide_id)
                for manifest in manifests:
                    write_manifest(ordered(), manifest)
    finally:
        claims.release_all()
    if created and not any(r.status in ("done", "skipped", "pending") for r in results.values()):
        _remove_bookkeeping(folder, created)
    return ordered()


def _remove_bookkeeping(folder: Path, created: list[Path]) -> None:
    """Every slide failed: the folders this run created go again, with the settings and manifest it
    wrote in them (the failures are reported to the caller), unless something else came into them."""
    ours = {EXTRACT_CONFIG_FILE, MANIFEST, MANIFEST_LOCK}
    entries = list(folder.iterdir())
    if any(p.name not in ours and not p.name.startswith("manifest.shard-") for p in entries):
        return
    for path in entries:
        path.unlink(missing_ok=True)
    for path in created:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


def _record_outcome(result: SlideResult, record, out_dir: Path, backbone: str) -> None:
    """Write a finished slide's record and fill in its manifest row (done, failed, or another run's)."""
    path = record_path(out_dir, backbone, result.slide_id)
    if isinstance(record, ClaimedElsewhere):
        if record.done:
            result.status, result.record, result.reason = "skipped", str(path), str(record)
        else:
            result.reason = str(record)  # still pending: its row is the other run's to write
    elif isinstance(record, SlideError):
        result.status, result.reason = "failed", str(record)
        log.debug("failed: %s", record)
    else:
        write_record(record, path)
        result.status, result.record = "done", str(path)
        result.n_tiles, result.n_unnormalised = record.n_tiles, record.n_unnormalised
