"""The weights a user brings for a pathology encoder: the file its page offers (`model.safetensors`, read
with the safetensors package, no torch; or `pytorch_model.bin`, read only through
`torch.load(weights_only=True)` when torch is installed, never plain pickle), its tensors checked
against the architecture (the first that does not fit is named, with its shape), converted into the
Keras ViT (vit.py) once per file: the converted weights are cached, keyed by the file's SHA-256 and
the version of the conversion, so that a second process (or a Ray worker) loads them directly and a
later fix of the conversion reaches a file converted before it. Which tensor goes where, and a layout
that is a folder (transformers' Phikon-v2: config.json, checked, and model.safetensors): checkpoints/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import numpy as np

from hist2rna_tf.atomic import write_text
from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.catalog import EncoderSpec
from hist2rna_tf.extract.backbones.checkpoints import layout_of

log = logging.getLogger(__name__)


class Checkpoint(Mapping):
    """A checkpoint's tensors, read one at a time as float32 numpy arrays when asked for (a ViT-g's
    4.5 GB are never held twice beside the model): names and shapes known without reading."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], read: Callable[[str], np.ndarray]):
        self._shapes, self._read = shapes, read

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._shapes:
            raise KeyError(name)
        return np.asarray(self._read(name), np.float32)

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def renamed(self, rename: Callable[[str], str]) -> Checkpoint:
        original = {rename(name): name for name in self._shapes}
        return Checkpoint({new: self._shapes[old] for new, old in original.items()}, lambda n: self._read(original[n]))


def _bfloat16_reader(path: Path, names: set[str], other: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    """Reads the `names` (bfloat16 in the file: the high 16 bits of a float32) from the file's bytes, as
    the safetensors format lays them out (an 8-byte header length, a JSON header, the data); the
    others through `other`."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))

    def read(name: str) -> np.ndarray:
        if name not in names:
            return other(name)
        start, end = header[name]["data_offsets"]
        raw = np.memmap(path, dtype="<u2", mode="r", offset=8 + length + start, shape=((end - start) // 2,))
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(header[name]["shape"])

    return read


def shape_of(tensors: Mapping, name: str) -> tuple[int, ...]:
    return tensors.shape(name) if isinstance(tensors, Checkpoint) else tuple(tensors[name].shape)


def _beginning(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _file_kind(path: Path, start: bytes) -> str | None:
    """"safetensors" (its suffix, or a header: 8 bytes of length, then JSON), "pytorch" (its suffix, a zip, or
    a legacy pickle), or None; `start`: the file's first bytes."""
    if path.suffix == ".safetensors" or start[8:9] == b"{":
        return "safetensors"
    if start.startswith((b"PK", b"\x80")) or path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        return "pytorch"
    return None


def read_tensors(path: Path) -> Checkpoint:
    """A checkpoint's tensors: safetensors without torch (memory-mapped); a PyTorch file only through
    torch.load(weights_only=True, mmap=True); a BackboneError for a file that is neither."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: no such file; give the model's weights file.")
    start = _beginning(path)
    kind = _file_kind(path, start)
    if kind is None:
        raise BackboneError(f"{path}: not a weights file (neither safetensors nor PyTorch: it begins "
                            f"{start.decode('utf-8', 'replace')!r}); give the model's model.safetensors (or "
                            "pytorch_model.bin).")
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            handle = safe_open(str(path), framework="numpy")
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            bfloat16 = {name for name in shapes if handle.get_slice(name).get_dtype() == "BF16"}
        except (SafetensorError, OSError, ValueError) as exc:
            raise BackboneError(f"{path}: not a readable safetensors file ({exc}); download it again.") from None
        if bfloat16:  # numpy has no bfloat16: such tensors are read from the file's bytes
            return Checkpoint(shapes, _bfloat16_reader(path, bfloat16, handle.get_tensor))
        return Checkpoint(shapes, handle.get_tensor)
    try:
        import torch
    except ImportError:
        raise BackboneError(
            f"{path}: a PyTorch file, which needs torch to read (pip install 'hist2rna-tf[torch]'); or convert it once "
            "elsewhere: python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('pytorch_model.bin', "
            "weights_only=True), 'model.safetensors')\" and pass model.safetensors.") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, zip errors
        raise BackboneError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {str(exc)[:160]}); "
                            "download it again (a truncated download cannot be read).") from None
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors.")
    state = {k: v for k, v in state.items() if hasattr(v, "numpy")}
    return Checkpoint({k: tuple(v.shape) for k, v in state.items()}, lambda name: state[name].float().numpy())


def check_tensors(tensors: Mapping, spec: EncoderSpec, path: Path) -> list:
    """Every tensor the architecture needs, at its shape, and nothing else (as the reference's strict
    load); -> the layout to assign with."""
    layout = layout_of(spec.vit)
    try:
        entries = layout.entries(spec.vit, layout.grid({name: shape_of(tensors, name) for name in tensors}))
    except ValueError as exc:  # position embeddings that are not a square grid
        raise BackboneError(f"{path}: its position embeddings: {exc}; the file is another model's.") from None
    wanted = {name: shape for _, sources in entries for source in sources
              for name, shape in zip(source.names, source.shapes)}
    for name, shape in wanted.items():
        if name not in tensors:
            raise BackboneError(f"{path}: no tensor {name!r} (of shape {list(shape)}), which {spec.paper_name} has: "
                                f"is it {spec.name}'s {spec.weights_file} from {spec.weights_page}?")
        if shape_of(tensors, name) != shape:
            raise BackboneError(f"{path}: tensor {name!r} has shape {list(shape_of(tensors, name))}, {spec.paper_name} "
                                f"needs {list(shape)}: the file is another model's.")
    extra = sorted(set(tensors) - set(wanted) - set(layout.unused))
    if extra:
        raise BackboneError(f"{path}: tensor {extra[0]!r} (shape {list(shape_of(tensors, extra[0]))}) is not part of "
                            f"{spec.paper_name}{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: the "
                            "file is another model's.")
    return entries


def assign(model, tensors: Mapping, entries: list) -> None:
    """Set the Keras ViT's weights from checked tensors, by the layout's entries."""
    for layer, sources in entries:
        model.get_layer(layer).set_weights([source.convert(*(tensors[n] for n in source.names)) for source in sources])


def cache_folder() -> Path:
    """Where converted weights are kept: $HIST2RNA_CACHE, else $XDG_CACHE_HOME/hist2rna-tf, else
    ~/.cache/hist2rna-tf."""
    if os.environ.get("HIST2RNA_CACHE"):
        return Path(os.environ["HIST2RNA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hist2rna-tf"


# The version of the conversion (checkpoints/, posembed.py, vit.py's weight names): part of a cache entry's
# key, so that a fix there reaches users who converted their file before it. Raise it with any such change.
CONVERSION_VERSION = 2


def _digest_memo(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return cache_folder() / "digests" / key


def file_digest(path: Path) -> str:
    """The file's SHA-256, hashed once per file as it is: remembered in the cache by its path, size and
    modification time (a ViT-g's 4.4 GB take seconds to hash; every process and Ray worker needs it)
    once `remember_digest` kept it (after the file converted: a broken file leaves nothing)."""
    try:
        return _digest_memo(path).read_text().strip()
    except OSError:
        pass
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def remember_digest(path: Path, digest: str) -> None:
    try:
        write_text(_digest_memo(path), digest)
    except OSError:  # a read-only cache: hashed again next time
        pass


def cache_entry(spec: EncoderSpec, digest: str) -> Path:
    """Where the file of this digest, converted for `spec` by this CONVERSION_VERSION, is kept."""
    return cache_folder() / "weights" / f"{spec.name}-{digest[:24]}-v{CONVERSION_VERSION}.weights.h5"


def weights_file(spec: EncoderSpec, path: str | Path) -> Path:
    """The file `--weights PATH` names for `spec` (a transformers model's folder: its model.safetensors,
    once its config.json is checked), or a BackboneError saying what to download; cheap, so that it
    runs before the model is built."""
    path = Path(path)
    if not path.exists():
        raise BackboneError(f"weights file {path} not found; download {spec.weights_file} from {spec.weights_page} "
                            "(accept its licence there first) and pass its path as --weights.")
    layout = layout_of(spec.vit)
    if layout.is_folder:
        return layout.weights_in(path, spec)
    if not path.is_file():
        raise BackboneError(f"--weights {path}: a folder; pass the file {spec.weights_file} from {spec.weights_page}.")
    return path


def checked_weights_file(spec: EncoderSpec, path: str | Path) -> Path:
    """`weights_file`, and for a safetensors file (whose header says every tensor's shape without reading
    it) its tensors checked against `spec`: an empty, truncated or another model's file is refused
    before a model is built or an output written. (A PyTorch file is checked as it is converted.)"""
    path = weights_file(spec, path)
    if path.suffix == ".safetensors":
        check_tensors(read_tensors(path).renamed(layout_of(spec.vit).rename), spec, path)
    return path


def load_encoder_weights(model, spec: EncoderSpec, path: str | Path) -> None:
    """The weights file `path` (as `weights_file` gives it) into `model` (vit.build_vit of `spec`): from
    the cache when this file was converted before, else read, checked, converted, and cached for the
    next process."""
    path = Path(path)
    digest = file_digest(path)
    cached = cache_entry(spec, digest)
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry: converted again below
            log.warning("%s: unreadable (%s); converting %s again.", cached, exc, path)
    older = [p for p in sorted(cached.parent.glob(f"{spec.name}-{digest[:24]}*.weights.h5")) if p != cached]
    if older:
        log.info("%s was converted by an earlier version of the conversion (%s); converting it again.", path,
                 older[0].name)
    tensors = read_tensors(path).renamed(layout_of(spec.vit).rename)
    assign(model, tensors, check_tensors(tensors, spec, path))
    remember_digest(path, digest)
    # Written aside and renamed (a concurrent process never reads half of it); Keras wants .weights.h5.
    tmp = cached.with_name(f".{cached.name.removesuffix('.weights.h5')}.{os.getpid()}.tmp.weights.h5")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(tmp)
        os.replace(tmp, cached)
        for entry in older:  # what this file was converted to before: superseded
            entry.unlink(missing_ok=True)
    except OSError as exc:  # a read-only home: converted again next time
        log.warning("could not cache the converted weights in %s (%s); each process converts them again.",
                    cached.parent, exc)
    finally:
        tmp.unlink(missing_ok=True)
