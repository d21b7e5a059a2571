"""Which encoder sees biology rather than the centre: PathoROB's robustness index (analysis/robustness.py)
of one or more features folders (one per encoder, say), on the same patients, side by side.

Each folder's samples are its slides' mean features (a patient's slides one group: none is another's
neighbour), or with `tiles_per_slide` N that many of each slide's tile features (drawn with a seed; the
records must hold them, `extract --save-tile-features`; a slide one group, as PathoROB's patches). The
class is a label column of the clinical table (PAM50 by default), the centre each patient's site (a TCGA
barcode's tissue source site, or `site_column`). Written: robustness.csv (a row a folder: backbone,
samples, subsets, k, RI, kNN balanced accuracy, bootstrap), robustness_pairs.csv (each 2 x 2 subset's RI),
robustness_curves.csv (RI over k) and robustness.png (the curves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.analysis.robustness import PATHOROB_K, RobustnessIndex, robustness_index
from hist2rna_tf.analysis.sites import known_sites, patient_sites, refuse_a_site_each
from hist2rna_tf.errors import ArgumentError

TABLE, PAIRS, CURVES, FIGURE = "robustness.csv", "robustness_pairs.csv", "robustness_curves.csv", "robustness.png"


@dataclass(frozen=True)
class Samples:
    """One folder's samples: features (rows), each one's class, centre and group, and what they are."""

    features: np.ndarray
    biology: np.ndarray
    centre: np.ndarray
    groups: np.ndarray
    backbone: str
    kind: str  # "slide means" or "N tiles a slide"


def folder_samples(folder: str | Path, labels: pd.Series, sites: pd.Series | None, tiles_per_slide: int = 0,
                   seed: int = 0) -> Samples:
    """A features folder's labelled samples (patients without a label or a site left out)."""
    from hist2rna_tf.extract.records import read_feature_folder, read_records

    read = read_feature_folder(folder)
    patients = read.patient_ids.reindex(read.features.index)
    known = labels.reindex(patients).notna().to_numpy()
    if not known.any():
        raise ArgumentError(f"{folder}: none of its {len(patients)} slides' patients (e.g. {patients.iloc[0]}) has a "
                            f"label in the table (e.g. {labels.index[0]}); give the clinical table of these patients.")
    slides, patients = read.features.index[known], patients[known]
    centres = (known_sites(pd.Index(patients)) if sites is None else sites.reindex(patients)).to_numpy()
    if pd.isna(centres).any():
        missing = patients[pd.isna(centres)].iloc[0]
        raise ArgumentError(f"{folder}: patient {missing} has no site (neither --site-column nor a TCGA barcode, "
                            "TCGA-XX-, names one); give --site-column naming the clinical table's column of sites.")
    biology = labels.reindex(patients).to_numpy()
    if not tiles_per_slide:
        return Samples(read.features.loc[slides].to_numpy(), biology, centres, patients.to_numpy(),
                       read.settings.backbone, "slide means")
    without = [slide for slide in slides if not read.slides.loc[slide, "has_tile_features"]]
    if without:
        raise ArgumentError(f"{folder}: slide {without[0]}'s record holds no per-tile features; extract with "
                            "--save-tile-features, or leave --tiles-per-slide out (slide means).")
    rng = np.random.default_rng(seed)
    rows, keys = [], []
    for i, record in enumerate(read_records(list(read.slides.loc[slides, "path"]))):  # one stream, a record at a time
        tiles = record.tile_features
        chosen = rng.choice(len(tiles), size=min(tiles_per_slide, len(tiles)), replace=False)
        rows.append(tiles[np.sort(chosen)])
        keys += [i] * len(chosen)
    keys = np.asarray(keys)
    return Samples(np.concatenate(rows), biology[keys], centres[keys], np.asarray(slides)[keys],
                   read.settings.backbone, f"{tiles_per_slide} tiles a slide")


def encoder_robustness(folders: list[str | Path], labels: pd.Series, sites: pd.Series | None = None,
                       k: int = PATHOROB_K, tiles_per_slide: int = 0, n_bootstrap: int = 0,
                       seed: int = 0) -> tuple[pd.DataFrame, dict[str, RobustnessIndex]]:
    """Each folder's robustness index: the table (a row a folder) and each one's RobustnessIndex."""
    if sites is not None:
        sites = patient_sites(sites.index, sites)
        refuse_a_site_each(sites, "robustness index", "no two samples share a centre")
    found, rows = {}, []
    for folder in folders:
        samples = folder_samples(folder, labels, sites, tiles_per_slide, seed)
        try:
            index = robustness_index(samples.features, samples.biology, samples.centre, samples.groups, k,
                                     n_bootstrap, seed)
        except ArgumentError as exc:
            raise ArgumentError(f"{folder}: {exc}") from None
        name = _unique(Path(folder).name, found)
        found[name] = index
        rows.append({"features": name, "backbone": samples.backbone, "samples": samples.kind,
                     "n_samples": index.n_samples, "subsets": len(index.pairs), "k": index.k,
                     "robustness_index": index.index, "balanced_accuracy": index.balanced_accuracy,
                     "bootstrap_mean": index.bootstrap_mean, "bootstrap_std": index.bootstrap_std,
                     "folder": str(Path(folder).resolve())})
    return pd.DataFrame(rows).set_index("features"), found


def _unique(name: str, taken: dict) -> str:
    return name if name not in taken else f"{name}-{len(taken) + 1}"


def write_robustness(out_dir: str | Path, table: pd.DataFrame, found: dict[str, RobustnessIndex],
                     keep: tuple = ()) -> Path:
    """The four files of the module docstring under `out_dir`, all or none (atomic.building_files: an
    earlier run's replaced, any other file in the way refused; `keep`: the inputs); returns the table's path."""
    from hist2rna_tf.atomic import building_files, write_table

    out_dir = Path(out_dir)
    with building_files(out_dir, "robustness", last=TABLE, keep=keep) as work:
        write_table(pd.concat({n: r.pairs for n, r in found.items()}, names=["features", "subset"]), work / PAIRS)
        write_table(pd.DataFrame({n: r.curve for n, r in found.items()}).rename_axis("k"), work / CURVES)
        curves_figure(found, work / FIGURE)
        write_table(table, work / TABLE)
    return out_dir / TABLE


def curves_figure(found: dict[str, RobustnessIndex], path: Path) -> None:
    """RI over k of each folder, k marked, 0.5 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, index in found.items():
        axes.plot(index.curve.index, index.curve.to_numpy(), label=f"{name} ({index.index:.2f} at k={index.k})")
        axes.axvline(index.k, color="grey", lw=0.5, ls=":")
    axes.axhline(0.5, color="grey", lw=0.8, ls="--")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # k is a count
    axes.set(xlabel="k nearest neighbours", ylabel="robustness index  SO / (SO + OS)", ylim=(0, 1),
             title="PathoROB's robustness index (1: biology orders the neighbours; 0: the centre)")
    axes.title.set_fontsize(8)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)


def robustness_results(folder: str | Path) -> tuple[pd.DataFrame, bytes, str]:
    """A `hist2rna robustness` folder's table and figure (PNG bytes), and a caption that says each folder's
    index in words; an ArgumentError naming the folder when it is not one."""
    from hist2rna_tf.expression import read_table_file

    folder = Path(folder)
    if not folder.is_dir():
        said = "is a file: give the folder it lies in" if folder.is_file() else "no such folder"
        raise ArgumentError(f"--robustness {folder}: {said} (the --out of `hist2rna robustness`).")
    if not (folder / TABLE).is_file() or not (folder / FIGURE).is_file():
        raise ArgumentError(f"--robustness {folder}: no {TABLE} and {FIGURE}; give a folder `hist2rna robustness` "
                            "wrote (its --out).")
    table = read_table_file(folder / TABLE, ArgumentError, sep=",", index_col=0)
    said = "; ".join(f"{name} {row['robustness_index']:.3f} at k = {row['k']} ({row['samples']}, {row['subsets']} "
                     "subsets)" for name, row in table.iterrows())
    caption = ("PathoROB's robustness index (beyond the paper; Koemen et al. 2025): of the neighbours that share "
               f"exactly one of class and site, the share that share the class (1: biology orders the space, 0: the "
               f"site): {said}.")
    return table, (folder / FIGURE).read_bytes(), caption
