"""The paper's head (model/heads/paper.py): architecture and size against the authors' PyTorch head;
training learns."""

from __future__ import annotations

import numpy as np
import pytest

from hist2rna_tf.model import runs
from hist2rna_tf.model.heads.paper import build as build_head
from hist2rna_tf.model.train import TrainConfig, fit_head, validation_rows


def _pytorch_head_parameters(feature_dim: int, n_genes: int) -> int:
    """The authors' PyTorch head: Conv1d(F, 256, 5, padding=2), Conv1d(256, 512, 1), Conv1d(512, 512, 1),
    AdaptiveAvgPool1d(1), Linear(512, n_genes) -- weights plus biases."""
    conv = lambda c_in, c_out, k: c_in * c_out * k + c_out  # noqa: E731
    return conv(feature_dim, 256, 5) + conv(256, 512, 1) + conv(512, 512, 1) + 512 * n_genes + n_genes


def test_parameter_count_matches_the_authors_head():
    assert build_head(1280, 138).count_params() == _pytorch_head_parameters(1280, 138) == 2_103_690
    for dim in (3712, 1920, 2048):
        assert build_head(dim, 138).count_params() == _pytorch_head_parameters(dim, 138)


def test_layers_and_shapes():
    model = build_head(64, 7)
    assert [layer.name for layer in model.layers] == ["slide_features", "c1", "c2", "c3", "gap", "genes"]
    assert model.input_shape == (None, 1, 64) and model.output_shape == (None, 7)
    assert model.get_layer("c1").kernel_size == (5,) and model.get_layer("c1").padding == "same"
    assert model.get_layer("genes").activation.__name__ == "linear"
    with pytest.raises(ValueError, match="positive"):
        build_head(0, 7)


def test_only_the_centre_tap_acts_on_a_length_one_sequence():
    model = build_head(16, 3)
    x = np.random.default_rng(0).normal(size=(4, 1, 16)).astype("float32")
    before = model.predict(x, verbose=0)
    kernel, bias = model.get_layer("c1").get_weights()
    kernel[[0, 1, 3, 4]] = np.random.default_rng(1).normal(size=kernel[[0, 1, 3, 4]].shape)
    model.get_layer("c1").set_weights([kernel, bias])
    np.testing.assert_allclose(model.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)


def test_training_learns_a_signal_and_not_noise(tmp_path):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(120, 3))
    x = np.tanh(latent @ rng.normal(size=(3, 40))) + 0.1 * rng.normal(size=(120, 40))
    y = 8 + latent @ rng.normal(size=(3, 10)) + 0.3 * rng.normal(size=(120, 10))
    train, test = slice(0, 90), slice(90, 120)

    def held_out_correlation(targets):
        model, history = fit_head(x[train], targets[train], TrainConfig(max_epochs=60, seed=3))
        predicted = model.predict(x[test][:, None, :], verbose=0)
        return np.median([np.corrcoef(predicted[:, g], y[test][:, g])[0, 1] for g in range(y.shape[1])]), history

    learned, history = held_out_correlation(y)
    control, _ = held_out_correlation(rng.permutation(y))
    assert learned > 0.6 and learned > control + 0.4
    # Stopped early: exactly `patience` (4) epochs after its best one; ran out of epochs: still improving late.
    assert history["val_loss"].idxmin() == len(history) - 5 if len(history) < 60 else history["val_loss"].idxmin() > 50


def test_validation_rows_are_seeded():
    a, b = validation_rows(100, 0.1, 0), validation_rows(100, 0.1, 0)
    assert a.sum() == 10 and (a == b).all() and not (a == validation_rows(100, 0.1, 1)).all()


def test_run_folder_has_the_model_history_and_tensorboard(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 2))
    model, history = fit_head(x, y, TrainConfig(max_epochs=3), run_dir=tmp_path)
    assert runs.model_path(tmp_path).is_file() and (tmp_path / runs.HISTORY).is_file()
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    # the training settings as a text summary beside the curves (TensorBoard's Text tab)
    import tensorflow as tf

    events = next((tmp_path / "tensorboard" / "config").glob("events.out.tfevents.*"))
    texts = [value.tensor.string_val[0].decode() for record in tf.data.TFRecordDataset(str(events))
             for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value if value.tag == "config"]
    assert len(texts) == 1
    logged = __import__("json").loads(texts[0].removeprefix("<pre>").removesuffix("</pre>"))
    assert logged["train"]["max_epochs"] == 3 and logged["features"] == [30, 8] and logged["targets"] == [30, 2]
    with pytest.raises(ValueError, match="NaN"):
        fit_head(np.full((10, 3), np.nan), np.zeros((10, 2)))


def test_standardization_lets_the_head_learn_barely_varying_features(tmp_path):
    """Features that differ between slides by 0.1% (random-weight backbones) and targets far from zero:
    the paper's head fed raw stays near the cohort mean; with standardize=True it learns, and the saved
    model still takes raw features and returns log2 expression."""
    import keras
    import numpy as np

    from hist2rna_tf.model.train import TrainConfig, fit_head

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(90, 3))
    x = 1.0 + 1e-3 * (latent @ rng.normal(size=(3, 32)) + 0.1 * rng.normal(size=(90, 32)))
    y = rng.uniform(4, 12, 20) + latent @ rng.normal(size=(3, 20))
    train, test = slice(0, 60), slice(60, 90)

    def held_out_r(model):
        predicted = np.asarray(model(x[test, None, :].astype("float32")))
        return np.median([np.corrcoef(predicted[:, g], y[test, g])[0, 1] for g in range(y.shape[1])])

    raw, _ = fit_head(x[train], y[train], TrainConfig(seed=0))
    scaled, _ = fit_head(x[train], y[train], TrainConfig(seed=0, standardize=True), run_dir=tmp_path)
    assert held_out_r(scaled) > 0.8 > held_out_r(raw) + 0.3
    reloaded = keras.models.load_model(runs.model_path(tmp_path), compile=False)
    np.testing.assert_allclose(reloaded(x[test, None, :].astype("float32")), scaled(x[test, None, :].astype("float32")),
                               rtol=1e-5, atol=1e-4)
