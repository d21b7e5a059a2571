"""The TCGA-BRCA experiment of Mondol et al., Cancers 2023 (hist2RNA) on any backbone: extract the
per-slide mean features -> train the paper's head on 335 patients -> predict the 160 held-out ones.

Reproduces Figure 3 of the paper, a backbone a run (EfficientNet: median Spearman 0.82 across patients,
0.29 across genes, 105/138 genes significant; the model behind Figures 4-5 and section 3.2), and beyond
the paper the same experiment on each pathology foundation model (at its own scale, with the weights you
downloaded under weights/<encoder>/). Every backbone after the reference (EfficientNetV2S, the paper's
best) is held out on the reference run's patients, so Figure 3 compares them on the same patients.

    python -m experiments.tcga_brca --backbone efficientnetv2s      # first: the reference
    python -m experiments.tcga_brca --backbone uni                   # then any other (--list: all)
    python -m experiments.tcga_brca --all                           # every backbone with weights here

Edit TCGA below (or pass your own to `run` from a notebook) to point at your download (see
experiments/README.md). Importing this module is cheap: TensorFlow loads when `run` is called.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.extract.backbones.catalog import BACKBONE_NAMES, BACKBONES, ENCODERS, native_scale
from hist2rna_tf.extract.backbones.checkpoints import layout_of
from hist2rna_tf.extract.settings import for_backbone

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "efficientnetv2s"  # the paper's best: the other backbones are held out on its run's patients


@dataclass(frozen=True)
class TCGA:
    """The inputs (experiments/README.md says what to download) and where outputs go."""

    data: Path = REPO / "data" / "tcga_brca"
    weights: str = "imagenet"  # downloaded by Keras on first use; or a local weights file (.h5)
    features: Path = REPO / "features"  # <features>/<backbone>/<slide_id>.tfrecord
    runs: Path = REPO / "runs"  # <runs>/<backbone>/
    # The pathology encoders' weights, downloaded by the user from each model's page (gated):
    # <encoder_weights>/<encoder>/<the file its page offers> (Phikon-v2: the folder itself).
    encoder_weights: Path = REPO / "weights"

    @property
    def slides(self) -> Path:
        return self.data / "slides"  # GDC diagnostic slides (*.svs)

    @property
    def annotations(self) -> Path | None:
        folder = self.data / "annotations"  # QuPath GeoJSON, optional
        return folder if folder.is_dir() else None

    @property
    def expression(self) -> Path:
        return self.data / "data_mrna_seq_v2_rsem.txt"  # cBioPortal brca_tcga RSEM

    @property
    def labels(self) -> Path:
        return self.data / "subtypes.csv"  # patient barcode, BRCA_Subtype_PAM50


@dataclass(frozen=True)
class Experiment:
    """One backbone's settings: the paper's tiles (224 px at 0.25 um/px, <= 1000 a slide), its head
    training (Adam 1e-3, MSE, batch 12, patience 4, <= 150 epochs), the 138-gene panel."""

    backbone: str
    batch_size: int = 32
    save_tile_features: bool = False  # the patch-based comparison trains on each tile's feature
    train: TrainConfig = field(default_factory=TrainConfig)
    genes: str = "panel"
    split: Path | None = None  # another run's split.csv: the same held-out patients
    name: str | None = None  # the run's folder name (default: the backbone's)
    precision: str = "float32"  # "mixed" on a GPU (the encoders' model cards run them in half precision)

    def weights(self, data: TCGA) -> str:
        """The paper's CNNs: data.weights (ImageNet); a pathology encoder: its file under
        data.encoder_weights (catalog.EncoderSpec.weights_file; Phikon-v2's folder)."""
        spec = ENCODERS.get(self.backbone)
        if spec is None:
            return data.weights
        folder = data.encoder_weights / spec.name
        return str(folder if layout_of(spec.vit).is_folder else folder / spec.weights_file)


def extract(experiment: Experiment, data: TCGA = TCGA()) -> Path:
    """The backbone's per-slide mean features of every slide (those already done are skipped); returns
    their folder."""
    from hist2rna_tf.extract.cohort import extract_cohort

    # the paper's 224 px at 0.25 um/px; an encoder's own scale
    config = for_backbone(experiment.backbone, experiment.weights(data), batch_size=experiment.batch_size,
                          save_tile_features=experiment.save_tile_features, precision=experiment.precision)
    features = data.features.with_name(data.features.name + "_tiles") if experiment.save_tile_features else data.features
    results = extract_cohort([data.slides], features, config, data.annotations, progress=True)
    print(sum(r.status != "failed" for r in results), "slides with features,",
          sum(r.status == "failed" for r in results), f"failed (see {features / experiment.backbone}/manifest.csv)")
    return features / experiment.backbone


def inputs_of(experiment: Experiment, data: TCGA, features: Path) -> RunInputs:
    split = experiment.split if experiment.split and Path(experiment.split).is_file() else None
    return RunInputs(features=str(features), expression=str(data.expression), labels=str(data.labels),
                     genes=experiment.genes, split=str(split) if split else None)


def run(experiment: Experiment | str, data: TCGA = TCGA(), verbose: int = 2) -> Path:
    """Extract the backbone's per-slide mean features (slides already done are skipped), train the
    paper's head on the training patients and predict the held-out ones. Returns the run folder
    (test_predictions.csv, test_targets.csv, the metrics, the model)."""
    from hist2rna_tf.model.train import train_run

    experiment = Experiment(experiment) if isinstance(experiment, str) else experiment
    inputs = inputs_of(experiment, data, extract(experiment, data))
    run_dir = data.runs / (experiment.name or experiment.backbone)
    trained = train_run(inputs, run_dir, experiment.train, verbose=verbose, overwrite=True)  # a re-run retrains
    genes = trained.metrics["across_genes"]
    patients = trained.record.patients
    print(f"{patients['train']} training / {patients['test']} held-out patients; held-out median Spearman across "
          f"genes {genes['median']:.2f}, "
          f"{genes['significant']}/{genes['total']} genes at FDR < 0.05; run folder {run_dir}")
    return run_dir


def experiment_for(backbone: str, data: TCGA = TCGA()) -> Experiment:
    """The paper's experiment on `backbone`, on the reference run's held-out patients (the reference: a
    new stratified split)."""
    from hist2rna_tf.model.runs import split_path

    return Experiment(backbone, split=None if backbone == REFERENCE else split_path(data.runs / REFERENCE))


def with_weights(data: TCGA = TCGA()) -> list[str]:
    """The backbones whose weights are here: the paper's five always (ImageNet, downloaded by Keras), an
    encoder when its file is under data.encoder_weights (the others are said and skipped)."""
    chosen = []
    for name in BACKBONE_NAMES:
        weights = Experiment(name).weights(data)
        if weights == data.weights or Path(weights).exists():
            chosen.append(name)
        else:
            print(f"{name}: no weights at {weights}; skipped (download them to include it)")
    return chosen


def described(name: str) -> str:
    """A backbone in one line, from the catalog."""
    if name in BACKBONES:
        spec = BACKBONES[name]
        return f"{name}: {spec.paper_name} (ImageNet), {spec.feature_dim} features, 224 px at 0.25 um/px"
    spec = ENCODERS[name]
    tile_px, mpp = native_scale(name)
    return (f"{name}: {spec.paper_name}, {spec.feature_dim} features, {tile_px} px at {mpp:g} um/px; weights: "
            f"{spec.weights_file} from {spec.weights_page} ({spec.licence})")


def main(argv: list[str] | None = None, data: TCGA = TCGA()) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m experiments.tcga_brca", description=__doc__.split("\n\n")[0],
                                     epilog="backbones:\n  " + "\n  ".join(map(described, BACKBONE_NAMES)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--backbone", choices=BACKBONE_NAMES, metavar="NAME", help="one backbone (listed below)")
    which.add_argument("--all", action="store_true", help=f"{REFERENCE} first, then every backbone with weights here")
    which.add_argument("--list", action="store_true", help="the backbones, from the catalog")
    parser.add_argument("--data", type=Path, help=f"the folder of the downloaded data (slides/, the RSEM table, "
                                                  f"subtypes.csv; default {data.data})")
    args = parser.parse_args(argv)
    if args.data:
        data = replace(data, data=args.data)
    if args.list:
        print("\n".join(map(described, BACKBONE_NAMES)))
        return []
    missing = missing_inputs(data)
    if missing:  # before any backbone is built (ImageNet weights are downloaded then)
        parser.exit(2, f"{parser.prog}: error: {'; '.join(missing)}: download them as experiments/README.md says "
                       f"(under {data.data}).\n")
    names = [args.backbone] if args.backbone else with_weights(data)
    return [run(experiment_for(name, data), data) for name in names]


def missing_inputs(data: TCGA) -> list[str]:
    """What of the experiment's inputs is not there: the slides' folder, the RSEM table, the labels."""
    wanted = {"the slides": (data.slides, Path.is_dir), "the RNA-seq table": (data.expression, Path.is_file),
              "the subtype labels": (data.labels, Path.is_file)}
    return [f"{what} ({path}) not found" for what, (path, there) in wanted.items() if not there(path)]


if __name__ == "__main__":
    main()
