"""SavedModel export in the TensorFlow Serving layout: `<out>/<name>_head/<version>/` and `<out>/<name>/<version>/`.

Two exports, each loadable with nothing but TensorFlow (`tf.saved_model.load`):

- `head`: `serve(features float32 [N, F]) -> {"log2_expression": [N, G]}` (one row per slide or patient);
- `end_to_end`: `serve(tiles uint8 [N, T, T, 3]) -> {"log2_expression": [G]}` for the tiles of ONE slide:
  Macenko normalisation with the run's targets -> the backbone's own preprocessing -> backbone ->
  mean over tiles -> head. Tiles are processed in fixed batches inside the model, so a slide's
  ~1000 tiles never sit in the backbone at once.

What a head's export takes and gives is its input kind's (model/inputs/): a head that reads every tile
(`--head abmil`) serves ONE bag in both: the head export takes its tiles' features [N, F], the
end-to-end one its tiles, and both also return each tile's "attention" [N]. SEQUOIA's head (`--head
sequoia`) serves one slide's K cluster means [K, F] in the head export; its end-to-end export gives the
tiles' features [N, F] (k-means is scikit-learn's, outside the graph).

Both also have `metadata() -> {"genes": [G] strings, "head", "head_settings" (JSON), "he_ref": [3, 2],
"max_c_ref": [2], ...}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hist2rna_tf import __version__
from hist2rna_tf.atomic import building_folder
from hist2rna_tf.config import StainConfig, TileConfig
from hist2rna_tf.errors import ExportError, Hist2RNAError
from hist2rna_tf.extract.backbones.build import build_backbone
from hist2rna_tf.extract.settings import FeatureSettings
from hist2rna_tf.extract.stain.macenko import Macenko
from hist2rna_tf.model.heads import DEFAULT_HEAD, head_settings, settings_dict
from hist2rna_tf.model.inputs import InputKind, input_kind
from hist2rna_tf.model.predict import Predictor
from hist2rna_tf.outputs import refuse_overlap
from hist2rna_tf.progress import Stages

log = logging.getLogger(__name__)

TILE_BATCH = 32


def next_version(root: str | Path, *names: str) -> int:
    """The next integer version free under every `root/<name>/` (a pair of exports shares one)."""
    taken = [int(p.name) for name in names for p in (Path(root) / name).glob("*") if p.name.isdigit()]
    return max(taken, default=0) + 1


def version_dir(root: str | Path, name: str, version: int | None = None) -> Path:
    """`root/name/<version>`: the next free integer version when `version` is None."""
    return Path(root) / name / str(next_version(root, name) if version is None else version)


def _metadata_fn(genes: list[str], extra: dict[str, np.ndarray]):
    constants = {"genes": tf.constant(genes), "version": tf.constant(__version__),
                 **{k: tf.constant(v) for k, v in extra.items()}}

    def metadata():
        return dict(constants)

    return metadata


def export_head(head: keras.Model, genes: list[str], out_dir: str | Path,
                feature_settings: FeatureSettings | None = None) -> Path:
    """Export the paper's head alone: features [N, F] -> log2 expression [N, G]. `feature_settings` (the
    run's: backbone, weights, normaliser, tile size) go into its metadata, so that `hist2rna predict`
    refuses features made otherwise."""
    return _write(head_archive(head, genes, _paper_kind(head), feature_settings), out_dir)


def _paper_kind(head: keras.Model) -> InputKind:
    return input_kind(DEFAULT_HEAD, head_settings(DEFAULT_HEAD), head.input_shape[-1])


def head_archive(head: keras.Model, genes: list[str], kind: InputKind, feature_settings: FeatureSettings | None = None,
                 units: str | None = None, context_um: float = 0.0):
    """The head export's ExportArchive (see `export_head`): `serve` as its input kind serves the head
    (kind.endpoint). A spot run's (spot_run/) says its `units` (log1p counts) and `context_um`
    (its features then [N, 2F]: each spot's own, then its neighbourhood's mean) in its metadata."""
    served = kind.served(head)
    archive = keras.export.ExportArchive()
    archive.track(served)
    serve, signature = kind.endpoint(served)
    archive.add_endpoint("serve", serve, input_signature=[signature])
    extra = {"feature_dim": np.int64(kind.feature_dim), **_head_metadata(kind)}
    if feature_settings:
        extra.update(feature_settings.to_metadata())
    if units:
        extra.update({"units": np.bytes_(units), "context_um": np.float64(context_um)})
    archive.add_endpoint("metadata", _metadata_fn(genes, extra), input_signature=[])
    return archive


def _head_metadata(kind: InputKind) -> dict:
    """The head's name and its settings (JSON): what an export's reader needs to know what it reads."""
    return {"head": np.bytes_(kind.head), "head_settings": np.bytes_(json.dumps(settings_dict(kind.settings)))}


def export_end_to_end(backbone, head: keras.Model, genes: list[str], stain: StainConfig, out_dir: str | Path,
                      tiles: TileConfig = TileConfig()) -> Path:
    """Export the paper's head with its backbone: tiles of one slide (uint8 [N, T, T, 3], at `tiles'` size
    and scale) -> log2 expression [G]."""
    settings = FeatureSettings(backbone.name, backbone.weights_tag, stain.tag, tiles.tile_size_px, tiles.tile_size_um)
    return _write(end_to_end_archive(backbone, head, genes, stain, settings, _paper_kind(head)), out_dir)


class SlideTiles:
    """One slide's tiles inside the end-to-end export's graph, embedded `TILE_BATCH` at a time (Macenko,
    then the backbone): what an input kind's `serve_tiles` asks of them."""

    def __init__(self, tiles, embed, tile_size_px: int, feature_dim: int):
        self.count = tf.shape(tiles)[0]
        self._embed, self._dim = embed, feature_dim
        self._shape = [TILE_BATCH, tile_size_px, tile_size_px, 3]
        n_batches = (self.count + TILE_BATCH - 1) // TILE_BATCH
        padded = tf.pad(tiles, [[0, n_batches * TILE_BATCH - self.count], [0, 0], [0, 0], [0, 0]], constant_values=255)
        self._batches = tf.reshape(padded, [n_batches] + self._shape)
        self._n_batches = n_batches

    def mean_feature(self):
        """The mean of the tiles' features [F], summed a batch at a time (never all tiles' at once)."""
        valid = tf.reshape(tf.range(self._n_batches * TILE_BATCH) < self.count, [self._n_batches, TILE_BATCH, 1])

        def add_batch(total, i):
            feats = self._embed(tf.ensure_shape(self._batches[i], self._shape))
            return total + tf.reduce_sum(tf.where(valid[i], feats, 0.0), axis=0)

        total = tf.foldl(add_batch, tf.range(self._n_batches), initializer=tf.zeros([self._dim]))
        return total / tf.cast(tf.maximum(self.count, 1), tf.float32)

    def features(self):
        """Every tile's features [N, F]."""
        features = tf.map_fn(lambda batch: self._embed(tf.ensure_shape(batch, self._shape)), self._batches,
                             fn_output_signature=tf.TensorSpec([TILE_BATCH, self._dim], tf.float32))
        return tf.reshape(features, [-1, self._dim])[:self.count]


def end_to_end_archive(backbone, head: keras.Model, genes: list[str], stain: StainConfig, settings: FeatureSettings,
                       kind: InputKind):
    """The end-to-end export's ExportArchive (see `export_end_to_end`); `settings`: how the tiles it takes
    are made (their size in px and um, stated in its metadata); what it gives, its input kind says
    (kind.serve_tiles: the paper's head the genes from the tiles' mean feature; a bag head also each
    tile's attention; SEQUOIA's the tiles' features)."""
    if not (stain.is_macenko or stain.method == "none"):
        raise ValueError(f"only the TensorFlow normalisers (macenko, macenko-henorm, none) can be exported, "
                         f"not {stain.method!r}")
    macenko = Macenko(stain) if stain.is_macenko else None
    served = kind.served(head)
    archive = keras.export.ExportArchive()
    archive.track(backbone.model)
    archive.track(served)
    tile_size_px = settings.tile_size_px

    def embed_batch(tiles):
        if macenko is not None:
            tiles, _ = macenko.normalise(tiles)
        return backbone.features(tf.cast(tiles, tf.float32))

    def serve(tiles):
        return kind.serve_tiles(served, SlideTiles(tiles, embed_batch, tile_size_px, backbone.feature_dim))

    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None, tile_size_px, tile_size_px, 3], tf.uint8)])
    archive.add_endpoint("metadata", _metadata_fn(genes, _end_to_end_metadata(settings, stain, kind)),
                         input_signature=[])
    return archive


def _end_to_end_metadata(settings: FeatureSettings, stain: StainConfig, kind: InputKind) -> dict:
    """How the tiles it takes are made (FeatureSettings' own form: backbone, weights, normaliser, tile px and
    um; and the um/px they make), the stain's targets, the head and its settings."""
    return {**settings.to_metadata(), "mpp": np.float32(settings.tile_size_um / settings.tile_size_px),
            "he_ref": np.asarray(stain.he_ref, np.float32), "max_c_ref": np.asarray(stain.max_c_ref, np.float32),
            "stain_io": np.float32(stain.io), "stain_alpha": np.float32(stain.alpha),
            "stain_beta": np.float32(stain.beta), **_head_metadata(kind)}


def _write(archive, out_dir: str | Path) -> Path:
    """Write beside `out_dir`, then rename (a re-run never meets half an export); never over one."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ExportError(f"{out_dir} exists; exports are never overwritten. Give another --version, or leave it "
                          "out to take the next free one.")
    with building_folder(out_dir, replace=False) as work:
        archive.write_out(str(work), verbose=False)
    return out_dir


def checked_name(name: str) -> str:
    """`name` when it is one folder name of printable characters (not empty, no '/', not '.' or '..');
    else an ExportError."""
    if not name or name in (".", "..") or Path(name).name != name or not name.isprintable():
        raise ExportError(f"--name {name!r}: a model name is one folder name of printable characters (not empty, no "
                          "'/', not '.' or '..'), e.g. --name effnet.")
    return name


def export_run(run_dir: str | Path, root: str | Path, name: str | None = None, version: int | None = None,
               replace: bool = False, progress: bool = False) -> tuple[Path, Path]:
    """Both exports of a training run under `root`: `<name>_head/<version>` (features -> genes) and
    `<name>/<version>` (tiles -> genes), with the run's own backbone, weights and stain settings (its
    record: the features folder it was trained on is not needed). `name` defaults to the backbone's,
    `version` to the next one free for both: the pair always shares its version. An existing version
    is refused before anything is written (ExportError), or replaced with `replace`. Both are built
    aside and renamed into place together (`progress`: a bar of the stages). Returns both folders."""
    if name is not None:
        checked_name(name)
    refuse_overlap(root, {"RUN": run_dir}, may_hold=("RUN",))
    stages = ["reading the run", "building the backbone", "tracing and writing the head",
              "tracing and writing the end-to-end model"]
    with Stages("export", stages, progress) as bar:
        predictor = Predictor(run_dir)
        extraction = predictor.extraction()
        config = extraction.config
        bar.next()
        backbone = build_backbone(config.backbone, config.weights, config.tiles.tile_size_px)
        whole = not predictor.spot_run  # a head of single spots: no end-to-end model of a slide's mean tile
        if whole and backbone.feature_dim != predictor.feature_dim:
            raise Hist2RNAError(f"{run_dir}: its head expects {predictor.feature_dim} features but the backbone "
                                f"{config.backbone} gives {backbone.feature_dim}.")
        if name is None:  # the backbone's, and the head's when not the paper's: another head serves another signature
            name = backbone.name if predictor.head.name == DEFAULT_HEAD else f"{backbone.name}_{predictor.head.name}"
        version = version or next_version(root, f"{name}_head", name)
        head_dir, full_dir = version_dir(root, f"{name}_head", version), version_dir(root, name, version)
        if not whole:
            return _head_only(predictor, head_dir, replace), None
        taken = [d for d in (head_dir, full_dir) if d.exists()]
        if taken and not replace:  # checked before either is written, so a refused export leaves nothing behind
            raise ExportError(f"{', '.join(map(str, taken))} exists; exports are never overwritten. Give another "
                              "--version, or leave it out to take the next free one.")
        bar.next()
        with building_folder(head_dir) as head_work, building_folder(full_dir) as full_work:
            head_archive(predictor.model, predictor.genes, predictor.kind, predictor.feature_settings,
                         *_spot_metadata(predictor)).write_out(str(head_work), verbose=False)
            bar.next()
            end_to_end_archive(backbone, predictor.model, predictor.genes, config.stain, extraction.features,
                               predictor.kind).write_out(str(full_work), verbose=False)
            bar.next()
    return head_dir, full_dir


def _spot_metadata(predictor: Predictor) -> tuple[str | None, float]:
    """(units, context_um) for a spot run's head export; (None, 0) for a bulk run's."""
    return (predictor.units, predictor.context_um) if predictor.spot_run else (None, 0.0)


def _head_only(predictor: Predictor, head_dir: Path, replace: bool) -> Path:
    """A spot run: its head export alone (a spot's features, with its neighbourhood's where it reads one, ->
    its genes), with its units and neighbourhood in the metadata. The end-to-end model, which feeds the
    head a slide's mean tile, is not made: a head trained on single spots does not read a slide's mean."""
    if head_dir.exists() and not replace:
        raise ExportError(f"{head_dir} exists; exports are never overwritten. Give another --version, or leave it out "
                          "to take the next free one.")
    log.info("%s is a spot run: exported as its head alone (%s); no end-to-end model of a slide's mean tile.",
             predictor.path, "each spot's features, then its neighbourhood's mean: [N, 2F]" if predictor.context_um
             else "each spot's features [N, F]")
    with building_folder(head_dir) as work:
        head_archive(predictor.model, predictor.genes, predictor.kind, predictor.feature_settings,
                     *_spot_metadata(predictor)).write_out(str(work), verbose=False)
    return head_dir
