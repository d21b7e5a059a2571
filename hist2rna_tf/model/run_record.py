"""A run's record, config.json (`RunRecord`, format 2: typed, standing alone; older formats read with
today's defaults), and what training gives back (`TrainedRun`). The run folder's files and their
readers and writers are runs.py's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hist2rna_tf import __version__
from hist2rna_tf.config import BaselineConfig, RunInputs, TrainConfig, known_fields
from hist2rna_tf.extract.settings import Extraction, FeatureSettings

# config.json's layout: 2 since 0.5.0 (typed, standing alone); 1: 0.4.0 and earlier (no "format" key).
RUN_FORMAT = 2
HIST2RNA, PATCH_BASED = "hist2rna", "patch-based"  # RunRecord.approach
IMPORTED = "imported"  # a published model made a run (`hist2rna import-run`): RunRecord.imported_from says whence


@dataclass(frozen=True)
class RunRecord:
    """A run's config.json: what it was trained on and how, written by `hist2rna train` and
    `hist2rna baseline`, read by everything else."""

    inputs: RunInputs  # the tables and features folder it read (absolute paths since format 2)
    train: TrainConfig  # as trained (a baseline: its own batch size and epoch limit)
    feature_dim: int
    genes: int
    patients: dict[str, int]  # {"train": n, "test": n}
    epochs: int
    best_val_loss: float | None  # None: not trained here (an imported run)
    train_seconds: float | None = None  # None: not recorded (0.2.0 and earlier)
    feature_settings: FeatureSettings | None = None  # its training features' (None: before 0.2.0)
    extraction: Extraction | None = None  # how they were made, all of it (None: no extract_config.json then)
    missing_genes: tuple[str, ...] = ()  # genes the table lacked (--drop-missing-genes)
    join_report: dict = field(default_factory=dict)  # patients matched and left out, by reason
    approach: str = HIST2RNA
    baseline: BaselineConfig | None = None  # patch-based runs: their settings
    hist2rna_run: str | None = None  # patch-based runs: the run they compare with
    tiles: dict[str, int] | None = None  # patch-based runs: training, validation and test tiles
    device: str | None = None  # patch-based runs: where the training time was measured
    head_settings: dict = field(default_factory=dict)  # the head's Settings (model/heads/; train.head names it)
    imported_from: dict | None = None  # imported runs: the published model (its folder, config and file digest)
    spots: dict | None = None  # spot runs (spot_run/): their samples, targets, genes, context and split
    version: str = __version__
    format: int = RUN_FORMAT

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("inputs", "train", "baseline"):
            data[name] = dataclasses.asdict(data[name]) if data[name] is not None else None
        data["feature_settings"] = self.feature_settings.to_dict() if self.feature_settings else None
        data["extraction"] = self.extraction.to_json() if self.extraction else None
        data["missing_genes"] = list(self.missing_genes)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        """Any format's config.json (older ones read with today's defaults for what they lack).
        KeyError, TypeError or ValueError when it is not a run's."""
        fmt = int(data.get("format", 1))
        train = TrainConfig(**known_fields(TrainConfig, data["train"]))
        baseline = BaselineConfig(**known_fields(BaselineConfig, data["baseline"])) if data.get("baseline") else None
        if fmt == 1 and baseline is not None:  # format 1 kept the run's training settings and these beside
            train = replace(train, batch_size=int(data.get("batch_size", train.batch_size)),
                            max_epochs=baseline.max_epochs or train.max_epochs)
        settings = data.get("feature_settings")
        return cls(
            inputs=RunInputs(**known_fields(RunInputs, data["inputs"])), train=train,
            feature_dim=int(data["feature_dim"]), genes=int(data["genes"]),
            patients={k: int(v) for k, v in data["patients"].items()}, epochs=int(data["epochs"]),
            best_val_loss=float(data["best_val_loss"]) if data["best_val_loss"] is not None else None,
            train_seconds=float(data["train_seconds"]) if data.get("train_seconds") is not None else None,
            feature_settings=FeatureSettings.from_dict(settings) if settings else None,
            extraction=Extraction.from_json(data["extraction"]) if data.get("extraction") else None,
            missing_genes=tuple(data.get("missing_genes") or ()), join_report=dict(data.get("join_report") or {}),
            approach=data.get("approach", HIST2RNA), baseline=baseline, hist2rna_run=data.get("hist2rna_run"),
            tiles=data.get("tiles"), device=data.get("device"), head_settings=dict(data.get("head_settings") or {}),
            imported_from=data.get("imported_from"), spots=data.get("spots"),
            version=str(data.get("version", "?")), format=fmt)


@dataclass(frozen=True)
class TrainedRun:
    """What training a run (or a baseline) gives back: its folder, its record (config.json) and the
    summaries of its held-out metrics (analysis.evaluate.metric_summaries: across_genes and
    across_patients, each median, q25, q75, significant, total; r2_at_least_0.1)."""

    folder: Path
    record: RunRecord
    metrics: dict
