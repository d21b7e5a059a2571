"""The head registry and its heads: ABMIL exact to MIL-Lab's forward on the same weights (fixtures made
by tests/fixtures/make_head_fixtures.py), its defaults MIL-Lab's, padding and tile order never changing a
prediction, FEATHER's files read and refused; each head's settings set by `--head-option`."""

from __future__ import annotations

import json
from dataclasses import asdict

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hist2rna_tf.errors import ModelError, SettingsError
from hist2rna_tf.config import TrainConfig
from hist2rna_tf.model.heads import (ATTENTION, DEFAULT_HEAD, HEADS, head_entry, head_settings,
                                   settings_from_options)
from hist2rna_tf.model.heads import abmil, paper


@pytest.fixture(scope="module")
def fixtures(reference_data):
    folder = reference_data / "heads"
    return folder, json.loads((folder / "reference.json").read_text()), load_file(str(folder / "abmil_io.safetensors"))


def _fixture_model(folder, tag: str) -> keras.Model:
    model = abmil.build(48, 5, abmil.Settings(embed_dim=64, attn_dim=32, gate=tag == "gated"))
    abmil.load_mil_lab(model, load_file(str(folder / f"abmil_{tag}.safetensors")), "fixture", with_genes=True)
    return model


@pytest.mark.parametrize("tag", ["gated", "plain"])
def test_abmil_is_exact_to_mil_labs_forward(fixtures, tag):
    folder, _, io = fixtures
    model = _fixture_model(folder, tag)
    bags = {"tiles": io["tiles"], "mask": io["mask"]}
    out = np.asarray(model(bags, training=False))
    reference = io[f"{tag}_logits"]
    assert np.abs(out - reference).max() <= 1e-4 * np.abs(reference).max()
    weights = np.asarray(keras.Model(model.inputs, model.get_layer(ATTENTION).output)(bags))
    np.testing.assert_allclose(weights, io[f"{tag}_attention"], atol=1e-6)
    assert np.all(weights[io["mask"] == 0] == 0)  # padding weighs exactly nothing


def test_abmil_defaults_are_mil_labs_base_config(fixtures):
    _, reference, _ = fixtures
    base = reference["abmil"]["base_yaml"]
    assert base["num_fc_layers"] == 1  # the one layout the head builds
    assert asdict(abmil.Settings()) == {k: base[k] for k in ("embed_dim", "attn_dim", "dropout", "gate")}


def test_padding_never_changes_a_prediction_and_tile_order_never_changes_abmils(fixtures):
    folder, _, io = fixtures
    model = _fixture_model(folder, "gated")
    tiles, mask = io["tiles"].copy(), io["mask"]
    zeros = np.where(mask[..., None] > 0, tiles, 0)
    huge = np.where(mask[..., None] > 0, tiles, 1e6).astype(np.float32)
    a = np.asarray(model({"tiles": zeros, "mask": mask}))
    b = np.asarray(model({"tiles": huge, "mask": mask}))
    np.testing.assert_array_equal(a, b)
    # The second bag (4 tiles) alone, unpadded, gives what it gave padded to 7.
    alone = np.asarray(model({"tiles": tiles[1:2, :4], "mask": mask[1:2, :4]}))
    np.testing.assert_allclose(alone[0], a[1], rtol=1e-5, atol=1e-5)
    # Its tiles in reverse order, the same prediction.
    reverse = np.asarray(model({"tiles": tiles[1:2, :4][:, ::-1].copy(), "mask": mask[1:2, :4]}))
    np.testing.assert_allclose(reverse[0], a[1], rtol=1e-5, atol=1e-5)
    # A tile that is not padding does change it (the test can fail).
    moved = tiles.copy()
    moved[1, 0] += 1.0
    assert np.abs(np.asarray(model({"tiles": moved, "mask": mask}))[1] - a[1]).max() > 1e-4


def test_the_registry_names_each_head_and_what_it_reads():
    from hist2rna_tf.model.inputs import bag, clusters, input_kind, mean

    assert DEFAULT_HEAD == "hist2rna" and list(HEADS)[0] == DEFAULT_HEAD
    kinds = {name: type(input_kind(name, entry.load().Settings(), 16)) for name, entry in HEADS.items()}
    assert kinds == {"hist2rna": mean.Kind, "abmil": bag.Kind, "sequoia": clusters.Kind}
    for name, entry in HEADS.items():
        module = entry.load()
        model = module.build(16, 3, module.Settings())
        assert model.output_shape[-1] == 3, name
    with pytest.raises(SettingsError, match="no such head; the heads are hist2rna, abmil"):
        head_entry("transmil")
    assert head_settings("abmil", {"embed_dim": 64, "unknown_later": 1}) == abmil.Settings(embed_dim=64)


def test_the_paper_head_keeps_its_layers_and_parameter_count():
    model = paper.build(1280, 138)
    assert [layer.name for layer in model.layers] == ["slide_features", "c1", "c2", "c3", "gap", "genes"]
    assert model.count_params() == 2_103_690  # the authors' PyTorch head (F=1280, 138 genes)


def test_a_heads_size_is_counted_before_it_is_built_and_one_the_machine_cannot_train_is_refused():
    """`--head-option embed_dim=99999999999` ran the machine out of memory building the head: each head
    counts its parameters without building it (as many as Keras counts once built), and a size whose
    training (x 16 bytes: weights, gradients, Adam's moments) exceeds the memory is refused, with both."""
    from hist2rna_tf.model.heads import refuse_oversized, sequoia

    for module, settings in [(paper, paper.Settings(filters=(3, 5), kernel_size=2)),
                             (abmil, abmil.Settings(embed_dim=7, attn_dim=5)), (abmil, abmil.Settings(gate=False)),
                             (sequoia, sequoia.Settings(depth=2, heads=3, dim_f=4, dim_s=5, dim_c=6, clusters=7))]:
        assert module.parameters(24, 11, settings) == module.build(24, 11, settings).count_params(), settings
    assert refuse_oversized("abmil", abmil.Settings(), 1024, 138, memory=2 ** 30) == 989_963
    with pytest.raises(SettingsError, match=r"embed_dim=99999999999, .*: 93,100,000,000,360 parameters on 24 "
                                            r"features and 138 genes, ~1,355 TiB to train .* more than this "
                                            r"machine's 1.0 GiB of memory; give smaller --head-option values"):
        refuse_oversized("abmil", abmil.Settings(embed_dim=99999999999), 24, 138, memory=2 ** 30)


def test_a_feather_file_is_read_and_another_encoders_is_refused(fixtures, tmp_path):
    folder, _, _ = fixtures
    state = load_file(str(folder / "abmil_gated.safetensors"))
    model = abmil.build(48, 7, abmil.Settings(embed_dim=64, attn_dim=32))
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    abmil.initial_weights(model, path)  # the classifier (5 outputs) is left out: the gene layer is new
    np.testing.assert_array_equal(model.get_layer("patch_embed").get_weights()[0], state["model.patch_embed.0.weight"].T)
    # Without the hub's "model." prefix too (a state dict saved from the ABMIL module itself).
    save_file({k.removeprefix("model."): v for k, v in state.items()}, str(path))
    abmil.initial_weights(abmil.build(48, 7, abmil.Settings(embed_dim=64, attn_dim=32)), path)
    # UNI's FEATHER (1024 features) for features of 48.
    wide = dict(state, **{"model.patch_embed.0.weight": np.zeros((64, 1024), np.float32)})
    save_file(wide, str(path))
    with pytest.raises(ModelError, match=r"takes 1024 features \(UNI's\), the run's features have 48"):
        abmil.initial_weights(model, path)
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(ModelError, match="not an ABMIL checkpoint of MIL-Lab's layout"):
        abmil.initial_weights(model, path)
    with pytest.raises(ModelError, match="no such file"):
        abmil.initial_weights(model, tmp_path / "absent.safetensors")


def test_sequoias_vis_is_exact_to_their_forward(fixtures, tmp_path):
    from hist2rna_tf.model.heads import sequoia

    folder, reference, _ = fixtures
    shape = reference["vis"]
    settings = sequoia.Settings(depth=shape["depth"], heads=shape["nheads"], dim_f=shape["dimensions_f"],
                                dim_s=shape["dimensions_s"], dim_c=shape["dimensions_c"], clusters=shape["num_clusters"])
    io = load_file(str(folder / "vis_io.safetensors"))
    model = sequoia.build(shape["input_dim"], shape["num_outputs"], settings)
    state = load_file(str(folder / "vis.safetensors"))
    sequoia.load_sequoia(model, state, "fixture", settings)
    out = np.asarray(model(io["clusters"], training=False))
    assert np.abs(out - io["genes"]).max() <= 1e-4 * np.abs(io["genes"]).max()
    model.save(tmp_path / "vis.keras")  # its layers saved and loaded as Keras files (a run's best.keras)
    again = keras.models.load_model(tmp_path / "vis.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(again(io["clusters"], training=False)), out)
    # A file of another feature size (or another model) is named, not loaded.
    wide = sequoia.build(shape["input_dim"] * 2, shape["num_outputs"], settings)
    with pytest.raises(ModelError, match="pos_emb1D is"):
        sequoia.load_sequoia(wide, state, "fold-0/model.safetensors", settings)
    with pytest.raises(ModelError, match="no tensor 'pos_emb1D'; not a SEQUOIA ViS state dict"):
        sequoia.load_sequoia(model, {"model.patch_embed.0.weight": np.zeros(1)}, "x", settings)


def test_vis_defaults_are_sequoias_main():
    from hist2rna_tf.model.heads import sequoia

    assert asdict(sequoia.Settings()) == {"depth": 6, "heads": 16, "dim_f": 64, "dim_s": 64, "dim_c": 64,
                                          "clusters": 100}


def test_head_options_set_the_heads_settings_typed_and_refuse_what_it_lacks():
    from hist2rna_tf.model.heads import sequoia

    assert settings_from_options("sequoia", ["depth=2", "heads=4", "clusters=8"]) == sequoia.Settings(
        depth=2, heads=4, clusters=8)
    assert settings_from_options("abmil", ["dropout=0", "gate=false", "embed-dim=256"]) == abmil.Settings(
        embed_dim=256, dropout=0.0, gate=False)
    assert settings_from_options("hist2rna", ["filters=64,32"]) == paper.Settings(filters=(64, 32))
    assert settings_from_options("hist2rna") == paper.Settings()  # none given: the source's defaults
    for head, options, clusters, message in [
        ("abmil", ["depth=2"], None, "depth=2': the abmil head has no setting 'depth' .it is a setting of --head "
                                     "sequoia.; the abmil head's settings .defaults.: embed_dim=512, attn_dim=384, "
                                     "dropout=0.25, gate=true"),
        ("abmil", ["dropuot=0.1"], None, "no setting 'dropuot' .did you mean dropout..;"),
        ("sequoia", ["depth"], None, "give NAME=VALUE"),
        ("sequoia", ["depth=two"], None, "'two' is not a whole number"),
        ("abmil", ["dropout=nan"], None, "'nan' is not a finite number"),
        ("abmil", ["gate=maybe"], None, "'maybe' is not true or false"),
        ("sequoia", ["depth=0"], None, "sequoia head's depth must be at least 1, not 0"),
        ("hist2rna", ["filters=256,0"], None, "filters must be at least 1, not 256,0"),
        ("abmil", ["dropout=1"], None, r"dropout must be in \[0, 1\), not 1.0"),
        ("sequoia", ["heads=2", "heads=4"], None, "heads given twice"),
        ("abmil", ["clusters=8"], None, "the abmil head has no setting 'clusters' .it is a setting of --head "
                                        "sequoia."),
    ]:
        with pytest.raises(SettingsError, match=message):
            settings_from_options(head, options)


def test_the_head_option_help_lists_every_heads_settings_and_defaults():
    from dataclasses import fields

    from hist2rna_tf.model.heads import _shown

    help_text = next(f.metadata["help"] for f in fields(TrainConfig) if f.name == "head_options")
    for name, entry in HEADS.items():
        listed = help_text.split(f"{name}: ", 1)[1].split(" (", 1)[0].split()
        assert listed == [f"{f.name}={_shown(f.default)}" for f in fields(entry.load().Settings)], name


def test_every_input_kind_is_a_whole_adapter_and_every_head_names_one():
    """A kind (model/inputs/) owns all of what a head reads: reading and checking, batching, predicting
    (from a Keras head and from an export), serving and mapping; the registry's kinds are exactly those."""
    import importlib

    from hist2rna_tf.model.inputs import KINDS, InputKind

    assert {entry.inputs for entry in HEADS.values()} == set(KINDS)
    needed = ("examples", "dataset", "standardization", "predict", "predict_served", "endpoint", "serve_tiles",
              "tile_values")
    for kind, module in KINDS.items():
        adapter = importlib.import_module(module).Kind
        assert issubclass(adapter, InputKind)
        missing = [name for name in needed if getattr(adapter, name) is getattr(InputKind, name, None)]
        assert missing == [], (kind, missing)
