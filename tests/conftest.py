"""Shared fixtures: the reference data shipped with the tests (tests/data, see its PROVENANCE.md), the
package's own TCGA tiles, a small demo cohort, a tiny backbone model file."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
TCGA_TILES = REPO / "hist2rna_tf" / "data" / "tcga_tiles"


def pytest_collection_modifyitems(items) -> None:
    """The files with slow tests first, then the others, most tests first; a file's tests keep their order.
    `make test` hands whole files to its workers in this order (--dist loadfile --no-loadscope-reorder),
    so the longest start early and the two workers end together instead of one finishing a crossval alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    counts = Counter(item.path for item in items)
    items.sort(key=lambda item: (item.path not in slow, -counts[item.path], str(item.path)))


@pytest.fixture(scope="session")
def reference_data() -> Path:
    """tests/data: real slides (OpenSlide's CMU-1-Small-Region), the Macenko references, TCGA-BRCA's PAM50
    RNA-seq and labels, the encoder fixtures (each file's source and licence: tests/data/PROVENANCE.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def tcga_tiles() -> Path:
    """The 25 real TCGA-BRCA tiles (224 px, four tumours) the package ships for its demo."""
    return TCGA_TILES


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """Five synthetic demo slides with their annotations (seed 0)."""
    from hist2rna_tf.demo.cohort import build_demo_cohort

    root = tmp_path_factory.mktemp("demo_cohort")
    build_demo_cohort(root, n_slides=5, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_backbone_file(tmp_path_factory) -> Path:
    """A small random Keras CNN saved as .keras: RGB [0, 255] in, a 4-D feature map out (the pipeline
    pools it). Fast on CPU, yet every feature depends on the pixels."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(12, 7, strides=4, activation="relu")(x)
    x = keras.layers.Conv2D(24, 3, strides=2, activation="tanh")(x)
    model = keras.Model(inputs, x, name="tiny")
    path = tmp_path_factory.mktemp("backbone") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_extractor(tiny_backbone_file):
    from hist2rna_tf.config import ExtractConfig
    from hist2rna_tf.extract.extractor import Extractor

    return Extractor.build(ExtractConfig(backbone=str(tiny_backbone_file), weights="none", batch_size=16))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_backbone_file) -> Path:
    """The chain a user runs, on 12 demo slides with the tiny backbone: `hist2rna extract` into
    <root>/features/tiny (with tile features), `hist2rna train` (3 epochs) into <root>/run. Returns
    <root> (cohort/ holds the slides, annotations and tables); copy what you change."""
    from hist2rna_tf.cli import main
    from hist2rna_tf.demo.cohort import build_demo_cohort, write_demo_expression

    root = tmp_path_factory.mktemp("tiny_run")
    build_demo_cohort(root / "cohort", n_slides=12)
    expression, labels = write_demo_expression(root / "cohort")
    assert main(["extract", "--slides", str(root / "cohort" / "slides"), "--annotations",
                 str(root / "cohort" / "annotations"), "--out", str(root / "features"), "--backbone",
                 str(tiny_backbone_file), "--weights", "none", "--batch-size", "16", "--save-tile-features",
                 "--no-progress"]) == 0
    assert main(["train", "--features", str(root / "features" / "tiny"), "--expression", str(expression),
                 "--labels", str(labels), "--out", str(root / "run"), "--max-epochs", "3"]) == 0
    return root


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
    """A hist2RNA run trained on a synthetic latent cohort (tests/synthetic.py): 48 patients, one
    slide each with 6 tile features, the 50 PAM50 genes. Returns (run folder, cohort); copy the run
    before changing it."""
    from hist2rna_tf.config import RunInputs, TrainConfig
    from hist2rna_tf.expression import load_panel
    from hist2rna_tf.model.train import train_run

    from synthetic import latent_cohort

    root = tmp_path_factory.mktemp("synthetic_run")
    cohort = latent_cohort(root, load_panel("pam50"), n_patients=48, tiles_per_slide=6)
    train_run(RunInputs(str(cohort.features), str(cohort.expression), str(cohort.labels), genes="pam50"),
              root / "run", TrainConfig(max_epochs=40))
    return root / "run", cohort
