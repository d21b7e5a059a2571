"""What a GPU machine runs, checked on a CPU: the normaliser's GPU kernels and placement, mixed
precision and XLA (features within float rounding of float32's), and their refusal without a GPU."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from hist2rna_tf.cli import main
from hist2rna_tf.config import ExtractConfig, StainConfig
from hist2rna_tf.demo.cohort import SOURCES, real_tiles
from hist2rna_tf.errors import BackboneError, DeviceError
from hist2rna_tf.extract.backbones.build import build_backbone
from hist2rna_tf.extract.cohort import extract_cohort
from hist2rna_tf.extract.extractor import Extractor, embedding_fn, has_gpu
from hist2rna_tf.extract.stain.macenko import Macenko

from files import sha256

# The tolerance the README states for --precision mixed and --xla: per slide (a mean feature) and per tile.
MIN_COSINE = 0.999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _slides_of_real_tiles() -> tuple[np.ndarray, np.ndarray]:
    """The 25 shipped TCGA tiles, normalised, and which of the four tumours ('slides') each is from."""
    tiles, source = real_tiles()
    normalised, _ = Macenko()(np.stack(tiles))
    return normalised.numpy(), source


def test_the_gpu_selection_gives_the_cpu_paths_bits(method="macenko"):
    """top_k (GPU kernel) and NthElement (CPU only) select the same order statistics: the same
    stain vectors, percentiles and normalised pixels, to the bit (the selection is shared by both
    variants; the percentile tests in test_stain.py run each selection against numpy)."""
    tiles, _ = real_tiles()
    batch = tf.constant(np.stack(tiles))
    results = []
    for selection in ("nth_element", "top_k"):
        macenko = Macenko(StainConfig(method=method), selection=selection)
        he, _, max_c, ok = macenko.estimate(batch)
        out, normalised = macenko(batch)
        results.append([he.numpy(), max_c.numpy(), ok.numpy(), out.numpy(), normalised.numpy()])
    assert results[0][2].all()  # every real tile is estimated: the comparison covers them all
    for cpu, gpu in zip(*results):
        np.testing.assert_array_equal(cpu, gpu)



def test_normalising_on_the_backbones_device_gives_the_same_records(demo_cohort, tiny_extractor, tmp_path):
    """On a GPU machine the normaliser runs in the step with the backbone, not in tf.data: forced
    here on the CPU, the records are the pipeline's, byte for byte (Macenko in both)."""
    assert tiny_extractor.config.stain.method == "macenko" and not tiny_extractor.normalise_on_device
    in_step = Extractor.build(tiny_extractor.config, normalise_on_device=True)
    assert in_step.normalise_on_device
    slides = [demo_cohort / "slides" / f"demo-0{i}.tiff" for i in (1, 2)]
    annotations = demo_cohort / "annotations"
    pipeline = extract_cohort(slides, tmp_path / "pipeline", annotations_dir=annotations, extractor=tiny_extractor)
    step = extract_cohort(slides, tmp_path / "step", annotations_dir=annotations, extractor=in_step)
    assert [r.status for r in step] == ["done", "done"]
    assert [sha256(r.record) for r in pipeline] == [sha256(r.record) for r in step]
    assert [r.n_unnormalised for r in pipeline] == [r.n_unnormalised for r in step]


def _embed(backbone, tiles: np.ndarray, xla: bool = False) -> np.ndarray:
    return embedding_fn(backbone, tiles.shape[1], xla)(tiles).numpy()  # one batch: XLA compiles once


@pytest.fixture(scope="module")
def float32_features():
    tiles, source = _slides_of_real_tiles()
    return tiles, source, _embed(build_backbone("efficientnetv2s", "none"), tiles)


def _assert_close_to_float32(features: np.ndarray, float32: np.ndarray, source: np.ndarray) -> None:
    assert features.dtype == np.float32 and features.shape == float32.shape
    assert _cosines(features, float32).min() >= MIN_COSINE
    for k in range(len(SOURCES)):  # each tumour's mean feature: what a slide's record holds
        rows = source == k
        assert _cosines(features[rows].mean(0), float32[rows].mean(0)) >= MIN_COSINE
    assert not np.array_equal(features, float32)  # it computed otherwise: the option took effect


def test_mixed_precision_features_stay_within_float_rounding(float32_features):
    """EfficientNetV2S in mixed_float16: float16 arithmetic, float32 features, cosine >= 0.999."""
    tiles, source, float32 = float32_features
    mixed = build_backbone("efficientnetv2s", "none", precision="mixed")
    assert mixed.model.dtype_policy.compute_dtype == "float16"
    _assert_close_to_float32(_embed(mixed, tiles), float32, source)
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back


def test_xla_features_stay_within_float_rounding(float32_features):
    tiles, source, float32 = float32_features
    features = _embed(build_backbone("efficientnetv2s", "none"), tiles, xla=True)
    _assert_close_to_float32(features, float32, source)


def test_gpu_options_are_refused_on_a_machine_without_a_gpu(demo_cohort, tmp_path, capsys):
    """Both are slower on a CPU: without a GPU they are refused, by name, before anything is written."""
    if has_gpu():  # where there is a GPU the options build (CI has none: the refusal is what it checks)
        assert Extractor.build(ExtractConfig(backbone="efficientnetv2s", weights="none", precision="mixed", xla=True))
        return
    for option in (["--precision", "mixed"], ["--xla"]):
        out = tmp_path / option[0].strip("-")
        code = main(["extract", "--slides", str(demo_cohort / "slides" / "demo-01.tiff"), "--out", str(out),
                     "--weights", "none", "--no-progress", *option])
        message = capsys.readouterr().err
        assert code != 0 and option[0] in message and "no GPU" in message
        assert not out.exists()
    with pytest.raises(DeviceError):
        Extractor.build(ExtractConfig(weights="none", xla=True))


def test_a_model_file_backbone_refuses_mixed_precision(tiny_backbone_file):
    with pytest.raises(BackboneError, match="built-in backbones"):
        build_backbone(str(tiny_backbone_file), "none", precision="mixed")
    with pytest.raises(BackboneError, match="unknown precision"):
        build_backbone("efficientnetv2s", "none", precision="float8")


def test_reader_threads_default_to_the_machine(tiny_extractor):
    from hist2rna_tf.config import usable_cores

    assert tiny_extractor.config.read_threads is None
    assert tiny_extractor.read_threads == 2 * usable_cores()
    assert replace(tiny_extractor, config=replace(tiny_extractor.config, read_threads=3)).read_threads == 3
