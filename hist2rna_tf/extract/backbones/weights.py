"""The weights a user brings for a pathology encoder: the file its page offers (`model.safetensors`, read
with the safetensors package, no torch; or `pytorch_model.bin`, read only through
`torch.load(weights_only=True)` when torch is installed, never plain pickle), its tensors checked
against the architecture (the first that does not fit is named, with its shape), converted into the
Keras ViT (vit.py) once per file: the converted weights are cached, keyed by the file's SHA-256, so
that a second process (or a Ray worker) loads them directly.

timm's names -> our layers: patch_embed.proj -> patch_embed (kernel [p, p, 3, D] from [D, 3, p, p]);
cls_token, reg_token, pos_embed -> tokens; blocks.<i>.norm1/attn.qkv/attn.proj/ls1/norm2/mlp.fc1/
mlp.fc2/ls2 -> block<i>_...; norm -> norm. Linear weights [out, in] become Dense kernels [in, out].
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.catalog import EncoderSpec, ViTSpec

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], np.ndarray]
_SAME: Transform = lambda a: a  # noqa: E731
_LINEAR: Transform = lambda a: a.T  # torch Linear [out, in] -> Keras Dense [in, out]  # noqa: E731
_CONV: Transform = lambda a: a.transpose(2, 3, 1, 0)  # [D, 3, p, p] -> [p, p, 3, D]  # noqa: E731


def timm_layout(spec: ViTSpec) -> list[tuple[str, list[tuple[str, tuple[int, ...], Transform]]]]:
    """(our layer, [(timm tensor name, its shape, to our layout)] in the layer's weight order) for
    every layer with weights."""
    d, p, h = spec.embed_dim, spec.patch_size, spec.mlp_hidden
    patches = (spec.img_size // p) ** 2
    tokens = [("cls_token", (1, 1, d), _SAME)]
    if spec.reg_tokens:
        tokens.append(("reg_token", (1, spec.reg_tokens, d), _SAME))
    tokens.append(("pos_embed", (1, patches + (0 if spec.no_embed_class else 1 + spec.reg_tokens), d), _SAME))
    layout = [("patch_embed", [("patch_embed.proj.weight", (d, 3, p, p), _CONV), ("patch_embed.proj.bias", (d,), _SAME)]),
              ("tokens", tokens)]

    def norm(ours: str, theirs: str):
        return ours, [(f"{theirs}.weight", (d,), _SAME), (f"{theirs}.bias", (d,), _SAME)]

    for i in range(spec.depth):
        b = f"blocks.{i}"
        qkv = [(f"{b}.attn.qkv.weight", (3 * d, d), _LINEAR)] + ([(f"{b}.attn.qkv.bias", (3 * d,), _SAME)]
                                                                   if spec.qkv_bias else [])
        layout += [norm(f"block{i}_norm1", f"{b}.norm1"),
                   (f"block{i}_attn", qkv + [(f"{b}.attn.proj.weight", (d, d), _LINEAR),
                                             (f"{b}.attn.proj.bias", (d,), _SAME)])]
        if spec.layer_scale:
            layout.append((f"block{i}_ls1", [(f"{b}.ls1.gamma", (d,), _SAME)]))
        layout += [norm(f"block{i}_norm2", f"{b}.norm2"),
                   (f"block{i}_mlp", [(f"{b}.mlp.fc1.weight", (h, d), _LINEAR), (f"{b}.mlp.fc1.bias", (h,), _SAME),
                                      (f"{b}.mlp.fc2.weight", (d, h // 2 if spec.swiglu else h), _LINEAR),
                                      (f"{b}.mlp.fc2.bias", (d,), _SAME)])]
        if spec.layer_scale:
            layout.append((f"block{i}_ls2", [(f"{b}.ls2.gamma", (d,), _SAME)]))
    layout.append(norm("norm", "norm"))
    return layout


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's tensors as float32 numpy arrays: safetensors without torch; a PyTorch file only
    through torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise BackboneError(f"{path}: not a readable safetensors file ({exc}); download it again.") from None
    try:
        import torch
    except ImportError:
        raise BackboneError(
            f"{path}: a PyTorch file, which needs torch to read (pip install 'hist2rna-tf[torch]'); or convert it once "
            "elsewhere: python -c \"import torch, safetensors.torch as s; s.save_file(torch.load('pytorch_model.bin', "
            "weights_only=True), 'model.safetensors')\" and pass model.safetensors.") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, zip errors
        raise BackboneError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {str(exc)[:160]}); "
                            "download it again (a truncated download cannot be read).") from None
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors.")
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def check_tensors(tensors: dict[str, np.ndarray], spec: EncoderSpec, path: Path) -> None:
    """Every tensor the architecture needs, at its shape, and nothing else (as timm's strict load)."""
    wanted = {name: shape for _, entries in timm_layout(spec.vit) for name, shape, _ in entries}
    for name, shape in wanted.items():
        if name not in tensors:
            raise BackboneError(f"{path}: no tensor {name!r} (of shape {list(shape)}), which {spec.paper_name} has: "
                                f"is it {spec.name}'s {spec.weights_file} from {spec.weights_page}?")
        if tuple(tensors[name].shape) != shape:
            raise BackboneError(f"{path}: tensor {name!r} has shape {list(tensors[name].shape)}, {spec.paper_name} "
                                f"needs {list(shape)}: the file is another model's.")
    extra = sorted(set(tensors) - set(wanted))
    if extra:
        raise BackboneError(f"{path}: tensor {extra[0]!r} (shape {list(tensors[extra[0]].shape)}) is not part of "
                            f"{spec.paper_name}{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: the "
                            "file is another model's.")


def assign(model, tensors: dict[str, np.ndarray], spec: ViTSpec) -> None:
    """Set the Keras ViT's weights from checked timm tensors."""
    for layer, entries in timm_layout(spec):
        model.get_layer(layer).set_weights([transform(tensors[name]) for name, _, transform in entries])


def cache_folder() -> Path:
    """Where converted weights are kept: $HIST2RNA_CACHE, else $XDG_CACHE_HOME/hist2rna-tf, else
    ~/.cache/hist2rna-tf."""
    if os.environ.get("HIST2RNA_CACHE"):
        return Path(os.environ["HIST2RNA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hist2rna-tf"


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def load_encoder_weights(model, spec: EncoderSpec, path: str | Path) -> None:
    """`path`'s weights into `model` (vit.build_vit of `spec`): from the cache when this file was
    converted before, else read, checked, converted, and cached for the next process."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} not found; download {spec.weights_file} from {spec.weights_page} "
                            "(accept its licence there first) and pass its path as --weights.")
    cached = cache_folder() / "weights" / f"{spec.name}-{file_digest(path)[:24]}.weights.h5"
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry: converted again below
            log.warning("%s: unreadable (%s); converting %s again.", cached, exc, path)
    tensors = read_tensors(path)
    check_tensors(tensors, spec, path)
    assign(model, tensors, spec.vit)
    # Written aside and renamed (a concurrent process never reads half of it); Keras wants .weights.h5.
    tmp = cached.with_name(f".{cached.name.removesuffix('.weights.h5')}.{os.getpid()}.tmp.weights.h5")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(tmp)
        os.replace(tmp, cached)
    except OSError as exc:  # a read-only home: converted again next time
        log.warning("could not cache the converted weights in %s (%s); each process converts them again.",
                    cached.parent, exc)
    finally:
        tmp.unlink(missing_ok=True)
