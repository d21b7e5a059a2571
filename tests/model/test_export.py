"""SavedModel exports (model/export.py): they load in a fresh process that imports only TensorFlow and
match the Keras pipeline; a run's pair shares its version, is built aside, and never overwrites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.config import StainConfig
from hist2rna_tf.demo.cohort import real_tiles
from hist2rna_tf.errors import ExportError, Hist2RNAError
from hist2rna_tf.extract.settings import FeatureSettings
from hist2rna_tf.extract.stain.macenko import Macenko
from hist2rna_tf.model.export import export_end_to_end, export_head, version_dir
from hist2rna_tf.model import runs
from hist2rna_tf.model.heads.paper import build as build_head
from hist2rna_tf.model.predict import Predictor

from commandline import run_tensorflow_only

GENES = ["ESR1", "PGR", "ERBB2", "MKI67"]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def head(tiny_extractor):
    import keras

    keras.utils.set_random_seed(0)
    return build_head(tiny_extractor.backbone.feature_dim, len(GENES))


@pytest.mark.slow
def test_end_to_end_export_matches_the_keras_pipeline(tiny_extractor, head, tmp_path):
    """Tiles in, the Keras pipeline's genes out, with the normaliser it was built for (HEnorm's variant
    here, not the default: it says so, and the default's genes differ)."""
    tiles = np.stack([np.rot90(t, k) for k in range(2) for t in real_tiles()[0]])[:41]  # 2 batches, 1 partial
    henorm = StainConfig(method="macenko-henorm")

    def keras_pipeline(stain):
        features = np.asarray(tiny_extractor.backbone.features(Macenko(stain)(tiles)[0])).mean(axis=0)
        return head.predict(features[None, None, :], verbose=0)[0]

    out = export_end_to_end(tiny_extractor.backbone, head, GENES, henorm, version_dir(tmp_path, "tiny"))
    assert out == tmp_path / "tiny" / "1"
    np.save(tmp_path / "tiles.npy", tiles)
    stdout = run_tensorflow_only(f"""
        import numpy as np
        model = tf.saved_model.load({str(out)!r})
        result = model.serve(tf.constant(np.load({str(tmp_path / 'tiles.npy')!r})))
        meta = model.metadata()
        np.save({str(tmp_path / 'got.npy')!r}, result["log2_expression"].numpy())
        print(int(result["n_tiles"]), [g.decode() for g in meta["genes"].numpy()], meta["he_ref"].numpy().shape,
              meta["normaliser"].numpy().decode())
    """)
    assert stdout.split()[0] == "41" and "ESR1" in stdout and "(3, 2)" in stdout and "macenko-henorm" in stdout
    got = np.load(tmp_path / "got.npy")
    np.testing.assert_allclose(got, keras_pipeline(henorm), atol=1e-5, rtol=1e-5)
    assert not np.allclose(got, keras_pipeline(StainConfig()), atol=1e-5, rtol=1e-5)


def test_head_export(head, tmp_path):
    features = np.random.default_rng(0).normal(size=(3, head.input_shape[-1])).astype(np.float32)
    expected = head.predict(features[:, None, :], verbose=0)
    out = export_head(head, GENES, version_dir(tmp_path, "head"))
    np.save(tmp_path / "features.npy", features)
    run_tensorflow_only(f"""
        import numpy as np
        model = tf.saved_model.load({str(out)!r})
        got = model.serve(tf.constant(np.load({str(tmp_path / 'features.npy')!r})))["log2_expression"].numpy()
        np.save({str(tmp_path / 'got.npy')!r}, got)
    """)
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), expected, atol=1e-5, rtol=1e-5)
    assert version_dir(tmp_path, "head") == tmp_path / "head" / "2"
    with pytest.raises(ExportError, match="--version"):
        export_head(head, GENES, out)


@pytest.mark.slow
def test_export_command_writes_both_models(tiny_run, tmp_path):
    import tensorflow as tf

    assert main(["export", str(tiny_run / "run"), "--out", str(tmp_path / "saved")]) == 0
    head, full = tmp_path / "saved" / "tiny_head" / "1", tmp_path / "saved" / "tiny" / "1"
    assert (head / "saved_model.pb").is_file() and (full / "saved_model.pb").is_file()
    for export in (head, full):  # each carries how the run's features were made, the normaliser among them
        assert tf.saved_model.load(str(export)).metadata()["normaliser"].numpy() == b"macenko"
        stated = FeatureSettings.from_metadata(tf.saved_model.load(str(export)).metadata())
        assert stated == runs.read_record(tiny_run / "run").feature_settings, export
    served = tf.saved_model.load(str(full)).metadata()  # the tiles the end-to-end model takes: px, um, um/px
    assert (int(served["tile_size_px"]), float(served["tile_size_um"])) == (224, 56.0)
    assert float(served["mpp"]) == pytest.approx(0.25)
    from_export = Predictor(head)
    from_run = Predictor(tiny_run / "run")
    x = np.random.default_rng(0).normal(size=(3, 24)).astype(np.float32)
    np.testing.assert_allclose(from_export(x), from_run(x), rtol=1e-5, atol=1e-5)
    assert from_export.genes == from_run.genes
    with pytest.raises(Hist2RNAError, match="end-to-end"):
        Predictor(full)
    # The README's example of serving the end-to-end export, as it stands, in a process of TensorFlow alone.
    example = README.read_text().split("<!-- serve-example")[1].split("```python\n")[1].split("```")[0]
    printed = run_tensorflow_only(example.replace("saved_models/efficientnetv2s/1", str(full)))
    genes = eval(printed, {"np": np})  # the dict it prints: gene -> log2 expression
    assert list(genes) == from_run.genes and len(genes) == 138 and all(np.isfinite(list(genes.values())))


def test_a_pair_of_exports_shares_its_version(tiny_run, tmp_path):
    """A head left alone at version 1 (an export killed between its two models, or one made by hand):
    the next export takes version 2 for both; a stale half-built folder is removed."""
    from hist2rna_tf.model.export import export_run, next_version

    saved = tmp_path / "saved"
    (saved / "tiny_head" / "1").mkdir(parents=True)
    stale = saved / "tiny" / ".1.building-{}-999999999".format(__import__("socket").gethostname())
    stale.mkdir(parents=True)
    head, full = export_run(tiny_run / "run", saved)
    assert (head.name, full.name) == ("2", "2") and next_version(saved, "tiny_head", "tiny") == 3
    assert sorted(p.name for p in (saved / "tiny").iterdir()) == ["2"]  # the stale folder removed
    with pytest.raises(ExportError, match="never overwritten"):
        export_run(tiny_run / "run", saved, version=2)
    assert sorted(p.name for p in (saved / "tiny").iterdir()) == ["2"]


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".."])
def test_an_export_name_is_one_folder_name(tiny_run, tmp_path, name, capsys):
    assert main(["export", str(tiny_run / "run"), "--out", str(tmp_path / "saved"), "--name", name]) == 2
    assert "one folder name" in capsys.readouterr().err
    assert not any(tmp_path.rglob("saved_model.pb"))
