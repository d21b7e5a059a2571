"""HEST-Benchmark on a task folder with the tool's encoders, as HEST runs it: each sample's patches
embedded by each backbone (embed.py: HEST's embeddings files, `<out>/embeddings/<backbone>/<id>.h5`, a
re-run resumes), the probe on every split (bench.py: `<out>/results/<backbone>/`, HEST's
results_kfold.json), then one table of the backbones side by side with HEST's published figures for the
task beside them, labelled as theirs (`<out>/hest_bench.csv`, `<out>/hest_bench.png`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from hist2rna_tf.config import HestBenchConfig
from hist2rna_tf.spots.bench import ProbeConfig, run_task, task_genes, task_patches, task_splits
from hist2rna_tf.spots.embed import backbone_label

TABLE, FIGURE = "hest_bench.csv", "hest_bench.png"
PUBLISHED_SOURCE = "HEST README (08.30.24)"
# HEST-Bench's task folders whose README column has another name.
README_COLUMN = {"CCRCC": "ccRCC", "LUNG": "LUAD", "LYMPH_IDC": "LYMPH IDC"}


def published(task: str) -> pd.Series:
    """HEST's published mean Pearson per model for task folder `task` (empty when the README has none)."""
    with resources.files("hist2rna_tf.data").joinpath("hest_benchmark_readme.csv").open() as f:
        table = pd.read_csv(f, index_col="model")
    column = README_COLUMN.get(task, task)
    return table[column] if column in table else pd.Series(dtype=float)


def hest_benchmark(task: str | Path, out: str | Path, config: HestBenchConfig, progress: bool = False) -> pd.DataFrame:
    """Every backbone of `config` on task folder `task`; returns the table written to `<out>/hest_bench.csv`
    (a row a backbone: mean and std over splits, each split's mean; then HEST's published rows)."""
    from hist2rna_tf.atomic import atomic_path

    task, out = Path(task), Path(out)
    task_splits(task), task_genes(task)  # a malformed task is named before anything is embedded
    patches = task_patches(task)
    probe = ProbeConfig(seed=config.seed, latent_dim=config.latent_dim)
    rows = []
    for backbone in config.backbones:
        label = backbone_label(backbone)
        folder = out / "embeddings" / label
        _embed_all(patches, folder, backbone, config, progress)
        merged = run_task(task, folder, out / "results" / label, probe, progress=progress)
        rows.append({"model": label, "source": "hist2rna-tf", "pearson_mean": merged["pearson_mean"],
                     "pearson_std": merged["pearson_std"],
                     **{f"split{i}": m for i, m in enumerate(merged["mean_per_split"])}})
    theirs = published(task.name)
    rows += [{"model": model, "source": PUBLISHED_SOURCE, "pearson_mean": value} for model, value in theirs.items()]
    table = pd.DataFrame(rows)
    table.insert(0, "task", task.name)
    with atomic_path(out / TABLE) as temporary:
        table.to_csv(temporary, index=False)
    _draw(table, task.name, out / FIGURE)
    return table


def _embed_all(patches: dict[str, Path], folder: Path, backbone: str, config: HestBenchConfig, progress: bool) -> None:
    from hist2rna_tf.progress import bar
    from hist2rna_tf.spots.embed import claim_folder, embed_patch_file, spot_extraction

    extraction = spot_extraction(backbone, config.weights_of(backbone), config.stain, batch_size=config.batch_size)
    claim_folder(folder, extraction)
    missing = {s: p for s, p in patches.items() if not (folder / f"{s}.h5").is_file()}
    if not missing:
        return
    from hist2rna_tf.extract.extractor import Extractor

    extractor = Extractor.build(extraction)
    for sample_id, path in bar(list(missing.items()), desc=f"{backbone}: samples", unit="sample", enabled=progress):
        embed_patch_file(extractor, path, folder / f"{sample_id}.h5")


def _draw(table: pd.DataFrame, task: str, path: Path) -> None:
    """Bars of the mean Pearson per model, ours and HEST's published (hatched), with the split std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hist2rna_tf.atomic import atomic_path

    ordered = table.sort_values("pearson_mean")
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.2))
    ours = ordered["source"] != PUBLISHED_SOURCE
    axes.barh(range(len(ordered)), ordered["pearson_mean"], xerr=ordered["pearson_std"].fillna(0),
              color=["#2c7bb6" if o else "#bbbbbb" for o in ours])
    axes.set_yticks(range(len(ordered)), [f"{m}{'' if o else ' (HEST)'}" for m, o in zip(ordered["model"], ours)])
    axes.set_xlabel("mean Pearson r over the task's genes (mean over splits)")
    axes.set_title(f"HEST-Benchmark {task}: this run (blue) and HEST's published figures (grey)", fontsize=10)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", bbox_inches="tight", dpi=110)
    plt.close(figure)
