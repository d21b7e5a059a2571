"""The pathology encoders (extract/backbones/vit.py, checkpoints/, weights.py, resize.py): `--backbone NAME
--weights FILE` gives the reference implementation's features on real TCGA tiles, TRIDENT's transform
included (fixtures made once by tests/fixtures/make_encoder_fixtures.py with timm, TRIDENT's CONCH v1.5
module and transformers, as TRIDENT builds each model, shallow and narrow but with every part of the
full architecture), the full builds have the published sizes, and a file that is not the named
model's is refused, naming the tensor."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hist2rna_tf.errors import BackboneError
from hist2rna_tf.extract.backbones.build import Normalise, build_backbone
from hist2rna_tf.extract.backbones.catalog import ENCODERS
from hist2rna_tf.extract.backbones.checkpoints import layout_of
from hist2rna_tf.extract.backbones.vit import build_vit
from hist2rna_tf.extract.backbones.weights import assign, check_tensors, load_encoder_weights, read_tensors

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "encoders"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
SMALL = {"embed_dim": 48, "depth": 2, "num_heads": 4}  # as the fixture script built them


def _small(name: str):
    """The encoder's spec at the fixtures' depth and width."""
    spec = ENCODERS[name]
    pooler = {"pooler_dim": 32} if spec.vit.output == "pooler" else {}  # CONCH v1.5's pooler, narrow too
    return replace(spec, vit=replace(spec.vit, **SMALL, **pooler))


def _tiles(tcga_tiles, groups, crop: int | None = None) -> np.ndarray:
    """The fixture's tiles: single tiles, or 2 x 2 mosaics of four (cropped to their top-left `crop` px)."""
    out = []
    for names in groups:
        parts = [np.asarray(Image.open(tcga_tiles / n).convert("RGB")) for n in names]
        rgb = parts[0] if len(parts) == 1 else np.concatenate([np.concatenate(parts[:2], 1),
                                                               np.concatenate(parts[2:], 1)], 0)
        out.append(rgb[:crop, :crop] if crop else rgb)
    return np.stack(out)


def _weights(name: str) -> Path:
    """The fixture's weights as a user passes them: the file, or the transformers model's folder."""
    return FIXTURES / name if (FIXTURES / name).is_dir() else FIXTURES / f"{name}.safetensors"


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_our_build_gives_the_reference_features(case, tcga_tiles, monkeypatch, tmp_path):
    """build_backbone(name, weights) on the tiles as they come (224 px; 448 for CONCH v1.5; 320 for
    uni@320, resized as TRIDENT resizes them) gives TRIDENT's features to 1e-4 of their largest."""
    import hist2rna_tf.extract.backbones.catalog as catalog

    monkeypatch.setenv("HIST2RNA_CACHE", str(tmp_path))
    reference, name = REFERENCE[case], case.split("@")[0]
    spec = _small(name)
    monkeypatch.setitem(catalog.ENCODERS, name, spec)
    assert (list(spec.mean), list(spec.std)) == (reference["mean"], reference["std"])  # its own normalisation
    tiles = _tiles(tcga_tiles, reference["tiles"], reference["crop"])
    backbone = build_backbone(name, str(_weights(name)), tile_size_px=tiles.shape[1])
    if layout_of(spec.vit).grid_tensor is None:  # (the others resample their file's position embeddings)
        assert backbone.model.count_params() == spec.vit.parameter_count
    ours = np.asarray(backbone.features(tiles))
    expected = np.asarray(reference["feature"], np.float32)
    assert ours.shape == expected.shape == (len(tiles), spec.feature_dim)
    assert np.abs(ours - expected).max() <= 1e-4 * np.abs(expected).max(), np.abs(ours - expected).max()


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_the_full_builds_have_the_published_sizes(name):
    """UNI 303 M parameters, UNI2-h 681 M, CONCH v1.5 306 M, Virchow2 631 M, H-optimus 1.13 B, Phikon-v2
    303 M, Prov-GigaPath 1.13 B: counted on the reference implementations' full builds."""
    reference = REFERENCE["h-optimus-0" if name == "h-optimus-1" else name]
    assert ENCODERS[name].vit.parameter_count == reference["full_parameter_count"]


def test_every_encoder_has_a_reference_fixture():
    assert set(ENCODERS) - {"h-optimus-1"} <= {case.split("@")[0] for case in REFERENCE}


def test_h_optimus_1_is_h_optimus_0s_architecture():
    h0, h1 = ENCODERS["h-optimus-0"], ENCODERS["h-optimus-1"]
    assert (h0.vit, h0.mean, h0.std) == (h1.vit, h1.mean, h1.std) and h0.weights_page != h1.weights_page


def test_a_file_of_another_model_is_refused_naming_the_tensor(tmp_path):
    uni, virchow = _small("uni"), _small("virchow2")
    tensors = read_tensors(FIXTURES / "uni.safetensors")
    with pytest.raises(BackboneError, match=r"no tensor 'reg_token'|tensor 'patch_embed.proj.weight' has shape"):
        check_tensors(tensors, virchow, tmp_path / "pytorch_model.bin")
    missing = dict(tensors)
    del missing["blocks.1.ls2.gamma"]
    with pytest.raises(BackboneError, match=r"no tensor 'blocks.1.ls2.gamma' \(of shape \[48\]\)"):
        check_tensors(missing, uni, tmp_path / "w.safetensors")
    extra = {**tensors, "head.weight": np.zeros((2, 48), np.float32)}
    with pytest.raises(BackboneError, match=r"tensor 'head.weight' \(shape \[2, 48\]\) is not part of"):
        check_tensors(extra, uni, tmp_path / "w.safetensors")


def test_unreadable_files_are_named_with_the_fix(tmp_path):
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes((FIXTURES / "uni.safetensors").read_bytes()[:1000])
    with pytest.raises(BackboneError, match="model.safetensors: not a readable safetensors file"):
        read_tensors(truncated)
    pytorch = tmp_path / "pytorch_model.bin"
    pytorch.write_bytes(b"PK")
    try:
        import torch  # noqa: F401 - the project's venv has none: the message says how to do without
    except ImportError:
        with pytest.raises(BackboneError, match=r"needs torch to read.*save_file"):
            read_tensors(pytorch)


def test_converted_weights_are_cached_for_the_next_process(tmp_path, monkeypatch):
    """The first build converts the file and keeps the result, keyed by its hash; the next loads that."""
    import hist2rna_tf.extract.backbones.weights as weights

    monkeypatch.setenv("HIST2RNA_CACHE", str(tmp_path / "cache"))
    spec = _small("uni")
    first = build_vit(spec.vit, 224)
    load_encoder_weights(first, spec, FIXTURES / "uni.safetensors")
    cached = list((tmp_path / "cache" / "weights").glob("uni-*.weights.h5"))
    assert len(cached) == 1
    monkeypatch.setattr(weights, "read_tensors", lambda path: pytest.fail("converted again"))
    second = build_vit(spec.vit, 224)
    load_encoder_weights(second, spec, FIXTURES / "uni.safetensors")
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_new_conversion_version_converts_a_cached_file_again(tmp_path, monkeypatch, caplog):
    """The cache is keyed by the file and the conversion's version: a fix of the conversion reaches a
    file converted before it, said once, and the superseded entry goes."""
    import hist2rna_tf.extract.backbones.weights as weights

    monkeypatch.setenv("HIST2RNA_CACHE", str(tmp_path / "cache"))
    spec = _small("uni")
    load_encoder_weights(build_vit(spec.vit, 224), spec, FIXTURES / "uni.safetensors")
    monkeypatch.setattr(weights, "CONVERSION_VERSION", weights.CONVERSION_VERSION + 1)
    converted = []
    read = weights.read_tensors
    monkeypatch.setattr(weights, "read_tensors", lambda path: converted.append(path) or read(path))
    with caplog.at_level("INFO"):
        load_encoder_weights(build_vit(spec.vit, 224), spec, FIXTURES / "uni.safetensors")
    assert converted and "earlier version of the conversion" in caplog.text
    entries = sorted(p.name for p in (tmp_path / "cache" / "weights").glob("uni-*.weights.h5"))
    assert len(entries) == 1 and entries[0].endswith(f"-v{weights.CONVERSION_VERSION}.weights.h5")


def test_a_broken_weights_file_leaves_nothing_in_the_cache(tcga_tiles, tmp_path, monkeypatch, capsys):
    """An empty model.safetensors is refused, named, and nothing of it is kept (no digest, no entry)."""
    from commandline import run

    monkeypatch.setenv("HIST2RNA_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "model.safetensors"
    empty.write_bytes(b"")
    tiles = tmp_path / "tiles" / "TCGA-A2-A04R"
    tiles.mkdir(parents=True)
    for tile in sorted(tcga_tiles.glob("TCGA-A2-A04R*.png"))[:2]:
        shutil.copy(tile, tiles)
    status, err = run(["extract", "--slides", str(tiles), "--out", str(tmp_path / "out"), "--backbone", "uni",
                       "--weights", str(empty), "--tile-px", "224", "--no-progress"], capsys)
    assert status == 2 and "model.safetensors" in err, err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def _checked(path: Path, spec):
    tensors = read_tensors(path)
    return tensors, check_tensors(tensors, spec, path)


def test_a_named_encoder_builds_with_random_weights_and_refuses_imagenet():
    with pytest.raises(BackboneError, match="no ImageNet weights.*huggingface.co/MahmoodLab/UNI.*--weights PATH"):
        build_backbone("uni", "imagenet")
    backbone = build_backbone("uni", "none", tile_size_px=256)  # resized to its 224 px, as TRIDENT does
    assert backbone.features(np.zeros((1, 256, 256, 3), np.uint8)).shape == (1, 1024)


@pytest.fixture
def small_uni(monkeypatch):
    """`--backbone uni` as the fixtures' shallow, narrow UNI (the full one is 303 M parameters: too slow
    for the suite; `hist2rna demo --backbone uni` runs the full one)."""
    import hist2rna_tf.extract.backbones.catalog as catalog

    monkeypatch.setitem(catalog.ENCODERS, "uni", _small("uni"))
    return FIXTURES / "uni.safetensors"


def test_an_encoder_extracts_at_its_own_scale_with_its_own_weights(small_uni, demo_cohort, tmp_path, capsys):
    """`hist2rna extract --backbone uni --weights FILE`: tiles of 224 px at UNI's 0.5 um/px (no
    --target-mpp given), normalised with its mean and std, through its weights: each slide's record is
    the mean of the encoder's features of its Macenko-normalised tiles, computed here the slow way."""
    import openslide

    from hist2rna_tf.cli import main
    from hist2rna_tf.config import StainConfig, TileConfig
    from hist2rna_tf.extract.plan import plan_tiles
    from hist2rna_tf.extract.records import read_record
    from hist2rna_tf.extract.settings import read_extraction
    from hist2rna_tf.extract.slides import find_slides
    from hist2rna_tf.extract.stain.macenko import Macenko

    slide = demo_cohort / "slides" / "demo-02.tiff"
    assert main(["extract", "--slides", str(slide), "--annotations", str(demo_cohort / "annotations"), "--out",
                 str(tmp_path), "--backbone", "uni", "--weights", str(small_uni), "--no-progress"]) == 0
    record = read_record(tmp_path / "uni" / "demo-02.tfrecord")
    assert (record.backbone, record.weights, record.tile_size_px) == ("uni", "uni.safetensors", 224)
    assert record.tile_size_um == pytest.approx(112.0) and record.feature_dim == 48
    assert read_extraction(tmp_path / "uni").config.tiles.target_mpp == 0.5
    coords = plan_tiles(find_slides([slide])[0], TileConfig(target_mpp=0.5),
                        demo_cohort / "annotations" / "demo-02.geojson").coords_px
    np.testing.assert_array_equal(coords, record.tile_xy_px)
    handle = openslide.OpenSlide(str(slide))  # 0.25 um/px: 448 px read at level 0, halved (box filter)
    tiles = np.stack([np.asarray(handle.read_region((int(x), int(y)), 0, (448, 448)).convert("RGB").resize(
        (224, 224), Image.Resampling.BOX)) for x, y in coords])
    spec = _small("uni")
    model = build_vit(spec.vit, 224)
    assign(model, *_checked(small_uni, spec))
    normalised, _ = Macenko(StainConfig())(tiles)
    expected = np.asarray(model(Normalise(spec.mean, spec.std)(np.asarray(normalised, "float32")))).mean(axis=0)
    np.testing.assert_allclose(record.feature, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_end_to_end_export_carries_the_encoder(small_uni, tcga_tiles, tmp_path):
    """tiles -> Macenko -> the encoder's own normalisation -> the ViT -> mean -> head, as one SavedModel."""
    import keras
    import tensorflow as tf

    from hist2rna_tf.config import StainConfig
    from hist2rna_tf.extract.stain.macenko import Macenko
    from hist2rna_tf.model.export import export_end_to_end
    from hist2rna_tf.model.heads.paper import build as build_head

    backbone = build_backbone("uni", str(small_uni))
    keras.utils.set_random_seed(0)
    head = build_head(backbone.feature_dim, 3)
    tiles = _tiles(tcga_tiles, REFERENCE["uni"]["tiles"])
    out = export_end_to_end(backbone, head, ["ESR1", "PGR", "ERBB2"], StainConfig(), tmp_path / "uni" / "1")
    loaded = tf.saved_model.load(str(out))  # (held: its variables live as long as it does)
    got = loaded.serve(tf.constant(tiles))["log2_expression"].numpy()
    features = np.asarray(backbone.features(Macenko(StainConfig())(tiles)[0])).mean(axis=0)
    np.testing.assert_allclose(got, head.predict(features[None, None, :], verbose=0)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["mixed", "bfloat16"])
def test_an_encoder_in_half_precision_stays_near_float32(precision, tcga_tiles, monkeypatch, tmp_path):
    """--precision mixed (float16) and bfloat16 (TRIDENT's for UNI2-h): each tile's feature within a
    cosine of 0.999 of float32's, for the SwiGLU, register ViT and for CONCH's pooler."""
    import hist2rna_tf.extract.backbones.catalog as catalog

    monkeypatch.setenv("HIST2RNA_CACHE", str(tmp_path))
    for name in ("uni2-h", "conch-v1.5"):
        reference = REFERENCE[name]
        monkeypatch.setitem(catalog.ENCODERS, name, _small(name))
        tiles = _tiles(tcga_tiles, reference["tiles"])
        full = np.asarray(build_backbone(name, str(_weights(name))).features(tiles))
        half = np.asarray(build_backbone(name, str(_weights(name)), precision=precision).features(tiles))
        assert half.dtype == np.float32
        cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
        assert cosine.min() >= 0.999, (name, cosine)


def test_a_bfloat16_safetensors_file_is_read(tmp_path):
    """bfloat16 tensors (numpy has none) read from the file's bytes: each the float32 whose high half it is."""
    import struct

    tensors = dict(read_tensors(FIXTURES / "uni.safetensors"))
    bits = {name: (value.view(np.uint32) >> 16).astype("<u2") for name, value in tensors.items()}
    header, offset = {}, 0
    for name, value in bits.items():
        header[name] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    text = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(v.tobytes() for v in bits.values()))
    read = read_tensors(path)
    for name, value in bits.items():
        np.testing.assert_array_equal(read[name], (value.astype(np.uint32) << 16).view(np.float32))
        assert np.abs(read[name] - tensors[name]).max() <= 2 ** -7 * np.abs(tensors[name]).max()
    check_tensors(read, _small("uni"), path)


def test_every_encoder_has_a_registered_layout_whose_entries_fill_its_model():
    """checkpoints.LAYOUTS, one contract: every catalog encoder's layout is registered, and its entries
    give every weight of the Keras ViT built for it, once (a small build of each, its own layout)."""
    from hist2rna_tf.extract.backbones.checkpoints import LAYOUTS

    assert {spec.vit.layout for spec in ENCODERS.values()} == set(LAYOUTS)
    for name in ("uni", "conch-v1.5", "phikon-v2"):
        spec = _small(name)
        model = build_vit(spec.vit, spec.vit.img_size)
        entries = layout_of(spec.vit).entries(spec.vit, None)
        layers = [layer for layer, _ in entries]
        assert len(layers) == len(set(layers))
        assert sum(len(sources) for _, sources in entries) == len(model.weights), name
        for layer, sources in entries:
            assert len(model.get_layer(layer).weights) == len(sources), (name, layer)
