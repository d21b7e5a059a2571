"""HEST-Benchmark's probe, as HEST runs it (src/hest/bench/benchmark.py and trainer.py, read as a
reference): for each split of a task, the training samples' spot embeddings standardised and reduced
by PCA (fit on the training split, `latent_dim` components, `random_state` the seed) and rounded to
float32 (their `torch.Tensor`; the ridge computes in float64), a ridge regression (lsqr, alpha = 100 / (D x G), no intercept, at most
1,000 iterations) onto log1p of the task's genes, then Pearson's r of each gene over the test split's
spots; across splits, each gene's mean and standard deviation and the mean and standard deviation of
the split means.

A task folder (HEST-Bench's `bench_data/<TASK>/`) holds `splits/train_<i>.csv` and `test_<i>.csv`
(columns sample_id, patches_path, expr_path, relative to the folder), `var_50genes.json` ({"genes":
[...]}), `adata/<id>.h5ad` and `patches/<id>.h5`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.errors import SpotError
from hist2rna_tf.spots.hest import read_embeddings

# HEST's BenchmarkConfig defaults (benchmark.py).
HEST_SEED, HEST_LATENT_DIM, HEST_GENE_LIST, HEST_MAX_ITER = 1, 256, "var_50genes.json", 1000


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's settings; HEST's defaults."""

    seed: int = HEST_SEED
    latent_dim: int | None = HEST_LATENT_DIM  # None: no PCA (HEST's dimreduce None)
    gene_list: str = HEST_GENE_LIST
    max_iter: int = HEST_MAX_ITER


@dataclass(frozen=True)
class Split:
    """One split of a task: its training and test samples (ids -> expression files)."""

    index: int
    train: dict[str, Path]
    test: dict[str, Path]


def task_splits(task: str | Path) -> list[Split]:
    """The task's splits, `train_<i>.csv` with `test_<i>.csv`, in order (HEST counts the files of
    splits/ and takes half of them)."""
    folder = Path(task) / "splits"
    if not folder.is_dir():
        raise SpotError(f"{task}: no splits/ folder; give a HEST-Bench task folder (bench_data/<TASK>: splits/, "
                        "adata/, patches/, var_50genes.json).")
    splits, i = [], 0
    while (folder / f"train_{i}.csv").is_file():
        test = folder / f"test_{i}.csv"
        if not test.is_file():
            raise SpotError(f"{folder}: train_{i}.csv has no test_{i}.csv beside it.")
        splits.append(Split(i, _samples(Path(task), folder / f"train_{i}.csv"), _samples(Path(task), test)))
        i += 1
    if not splits:
        raise SpotError(f"{folder}: no train_0.csv; a HEST-Bench task's splits are train_<i>.csv and test_<i>.csv.")
    return splits


def _samples(task: Path, path: Path) -> dict[str, Path]:
    table = pd.read_csv(path)
    missing = [c for c in ("sample_id", "expr_path") if c not in table]
    if missing:
        raise SpotError(f"{path}: no column {', '.join(missing)}; a HEST-Bench split names sample_id, patches_path "
                        "and expr_path.")
    return {str(s): task / str(e) for s, e in zip(table["sample_id"], table["expr_path"])}


def task_patches(task: str | Path) -> dict[str, Path]:
    """Every sample of the task's splits -> its patches file (the splits' patches_path)."""
    found = {}
    for path in sorted((Path(task) / "splits").glob("*.csv")):
        table = pd.read_csv(path)
        if "patches_path" not in table:
            raise SpotError(f"{path}: no column patches_path; a HEST-Bench split names sample_id, patches_path "
                            "and expr_path.")
        found.update({str(s): Path(task) / str(p) for s, p in zip(table["sample_id"], table["patches_path"])})
    return found


def task_genes(task: str | Path, gene_list: str = HEST_GENE_LIST) -> list[str]:
    path = Path(task) / gene_list
    try:
        genes = json.loads(path.read_text())["genes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpotError(f"{path}: not a gene list ({{\"genes\": [...]}}: {exc}).") from None
    return [str(g) for g in genes]


def split_arrays(samples: dict[str, Path], embeddings: Path, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [spots, D], log1p expression [spots, genes]) of `samples`, in their order, each
    sample's spots in its embeddings file's order (`<embeddings>/<sample_id>.h5`), as HEST gathers them."""
    import anndata

    xs, ys = [], []
    for sample_id, expression in samples.items():
        path = embeddings / f"{sample_id}.h5"
        if not path.is_file():
            raise SpotError(f"{path}: no embeddings of sample {sample_id}; embed the task's patches first.")
        x, barcodes, _ = read_embeddings(path)
        adata = anndata.read_h5ad(expression)
        absent = [g for g in genes if g not in adata.var_names]
        unknown = pd.Index(barcodes)[~pd.Index(barcodes).isin(adata.obs_names)]
        if absent or len(unknown):
            raise SpotError(f"{expression}: " + "; ".join(
                ([f"{len(absent)} of the task's genes missing ({', '.join(absent[:5])})"] if absent else [])
                + ([f"{len(unknown)} embedded barcode(s) without counts (e.g. {unknown[0]})"] if len(unknown) else []))
                + f"; the expression and {path} are of different samples.")
        counts = adata[list(barcodes), genes].X
        counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
        xs.append(x)
        ys.append(np.log1p(counts.astype(np.float64)))
    return np.concatenate(xs), np.concatenate(ys)


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, genes: list[str],
          config: ProbeConfig = ProbeConfig()) -> tuple[dict, np.ndarray]:
    """One split's probe: (HEST's results dict, the test predictions [spots, genes])."""
    from scipy.stats import pearsonr
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if config.latent_dim is not None:
        pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=config.latent_dim,
                                                                   random_state=config.seed))])
        # their torch.Tensor: float32, which scikit-learn does not recognise as a dtype, so the ridge
        # converts it to its first choice, float64 (rounded to float32, computed in float64)
        x_train = np.asarray(pipe.fit_transform(x_train), np.float32).astype(np.float64)
        x_test = np.asarray(pipe.transform(x_test), np.float32).astype(np.float64)
    ridge = Ridge(solver="lsqr", alpha=100 / (x_train.shape[1] * y_train.shape[1]), random_state=config.seed,
                  fit_intercept=False, max_iter=config.max_iter)
    predicted = ridge.fit(x_train, y_train).predict(x_test)
    errors, r2, r = [], [], []
    for g in range(y_test.shape[1]):
        guess, truth = predicted[:, g], y_test[:, g]
        errors.append(float(np.mean((guess - truth) ** 2)))
        r2.append(float(1 - np.sum((truth - guess) ** 2) / np.sum((truth - np.mean(truth)) ** 2)))
        r.append(pearsonr(truth, guess)[0])
    results = {"l2_errors": errors, "r2_scores": r2,
               "pearson_corrs": [{"name": gene, "pearson_corr": value} for gene, value in zip(genes, r)],
               "pearson_mean": float(np.mean(r)), "pearson_std": float(np.std(r)),
               **{f"l2_error_q{q}": float(np.percentile(errors, p)) for q, p in ((1, 25), (2, 50), (3, 75))},
               **{f"r2_score_q{q}": float(np.percentile(r2, p)) for q, p in ((1, 25), (2, 50), (3, 75))}}
    return results, predicted


def merged_splits(results: list[dict]) -> dict:
    """Across splits, as HEST's merge_fold_results and predict_folds write results_kfold.json: each
    gene's r per split with their mean and std (genes by mean, highest first), the mean and std of the
    split means, and the split means."""
    by_gene: dict[str, list[float]] = {}
    for result in results:
        for item in result["pearson_corrs"]:
            by_gene.setdefault(item["name"], []).append(item["pearson_corr"])
    genes = [{"name": name, "pearson_corrs": values, "mean": np.mean(values), "std": np.std(values)}
             for name, values in by_gene.items()]
    means = [result["pearson_mean"] for result in results]
    return {"pearson_corrs": sorted(genes, key=itemgetter("mean"), reverse=True), "pearson_mean": np.mean(means),
            "pearson_std": np.std(means), "mean_per_split": means}


def run_task(task: str | Path, embeddings: str | Path, out: str | Path, config: ProbeConfig = ProbeConfig(),
             progress: bool = False) -> dict:
    """Every split of `task` on the embeddings in `embeddings` (`<sample_id>.h5` each), written as HEST
    writes them: `<out>/split<i>/results.json` and `<out>/results_kfold.json` (JSON, keys sorted, indent
    4), and `<out>/pearson_by_gene.csv` (a row a gene: its r per split, mean, std). Returns the merged
    results."""
    from hist2rna_tf.atomic import atomic_path
    from hist2rna_tf.progress import bar

    task, embeddings, out = Path(task), Path(embeddings), Path(out)
    genes = task_genes(task, config.gene_list)
    results = []
    for split in bar(task_splits(task), desc="splits", unit="split", enabled=progress):
        x_train, y_train = split_arrays(split.train, embeddings, genes)
        x_test, y_test = split_arrays(split.test, embeddings, genes)
        result, _ = probe(x_train, y_train, x_test, y_test, genes, config)
        _write_json(out / f"split{split.index}" / "results.json", result)
        results.append(result)
    merged = merged_splits(results)
    _write_json(out / "results_kfold.json", merged)
    table = pd.DataFrame([{"gene": g["name"], **{f"split{i}": r for i, r in enumerate(g["pearson_corrs"])},
                           "mean": g["mean"], "std": g["std"]} for g in merged["pearson_corrs"]])
    with atomic_path(out / "pearson_by_gene.csv") as temporary:
        table.to_csv(temporary, index=False)
    return merged


def _write_json(path: Path, data: dict) -> None:
    from hist2rna_tf.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(data, sort_keys=True, indent=4))
