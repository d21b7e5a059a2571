"""The paper's figures with matplotlib (no display needed): each function returns a Figure.

Figure 3: correlation and -log10 FDR, across patients and across genes, one box per backbone;
Figure 4: predicted vs true for the top genes, PAM50 genes in red; Figure 5: genes with R2 >= 0.1;
Figures 6/10: training time and energy; Figure 7: biomarker genes by IHC status / grade;
Figure 8: predicted MKI67 vs Ki67 %; Figure 9: Kaplan-Meier with the log-rank p-value;
spatial maps of tile-level predictions over the slide thumbnail.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hist2rna_tf.atomic import atomic_path
from hist2rna_tf.config import SUBTYPE_COLOURS

PAM50_COLOUR, OTHER_COLOUR = "#c0392b", "#34495e"
plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                     "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8})


def save(figure, path: str | Path) -> Path:
    """PNG (or the suffix's format) written atomically, then the figure is closed. Cropped to what it
    draws, unless its layout is fixed (`FIXED_LAYOUT`: the tile maps, drawn by the thousand)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png",
                       bbox_inches=None if getattr(figure, FIXED_LAYOUT, False) else "tight")
    plt.close(figure)
    return path


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes (for a self-contained report), then closed."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


# --- gene prediction (section 3.1) ------------------------------------------------------------------


def correlation_boxes(runs: dict[str, dict[str, pd.DataFrame]], alpha: float = 0.05):
    """Figure 3: `runs` maps a label (backbone) to {"across_patients": table, "across_genes": table}."""
    figure, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    panels = [("across_patients", "rho", "A  Spearman across patients"), ("across_genes", "rho", "B  Spearman across genes"),
              ("across_patients", "neg_log10_fdr", "C  -log10 FDR across patients"),
              ("across_genes", "neg_log10_fdr", "D  -log10 FDR across genes")]
    labels = list(runs)
    for ax, (kind, column, title) in zip(axes.flat, panels):
        data = [runs[label][kind][column].dropna().to_numpy() for label in labels]
        ax.boxplot(data, showfliers=True, flierprops={"markersize": 2, "alpha": 0.5})
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20 if len(labels) > 3 else 0)
        ax.set_title(title, loc="left")
        if column == "neg_log10_fdr":
            ax.axhline(-np.log10(alpha), color=PAM50_COLOUR, ls="--", lw=1, label=f"FDR = {alpha}")
            ax.legend(frameon=False, fontsize=8)
        else:
            ax.axhline(0, color="grey", lw=0.6)
            for i, values in enumerate(data, start=1):
                if len(values):
                    ax.annotate(f"median {np.median(values):.2f}", (i + 0.28, np.median(values)), fontsize=8,
                                va="center")
    figure.tight_layout()
    return figure


def top_gene_scatter(predicted: pd.DataFrame, truth: pd.DataFrame, genes_table: pd.DataFrame, pam50: set[str],
                     n_top: int = 20):
    """Figure 4: predicted vs true log2 expression of the `n_top` genes with the highest correlation."""
    top = genes_table["rho"].dropna().sort_values(ascending=False).index[:n_top]
    cols = 5
    rows = max(1, int(np.ceil(len(top) / cols)))
    figure, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.2 * rows), squeeze=False)
    for ax, gene in zip(axes.flat, top):
        colour = PAM50_COLOUR if gene in pam50 else OTHER_COLOUR
        x, y = truth.loc[predicted.index, gene], predicted[gene]
        ax.scatter(x, y, s=8, alpha=0.7, color=colour, edgecolors="none")
        if np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 10)
            ax.plot(grid, slope * grid + intercept, color=colour, lw=1)
        ax.set_title(f"{gene}  rho={genes_table.loc[gene, 'rho']:.2f}", color=colour, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(top):]:
        ax.axis("off")
    figure.supxlabel("true log2(1+RSEM)", fontsize=9)
    figure.supylabel("predicted", fontsize=9)
    figure.suptitle(f"Top {len(top)} genes by Spearman correlation (held-out); PAM50 genes in red", fontsize=10)
    figure.tight_layout()
    return figure


def r_squared_bars(r2: pd.Series, pam50: set[str], threshold: float = 0.1, at_least: int = 10, at_most: int = 50):
    """Figure 5: R2 of the genes with R2 >= threshold (at least the `at_least` best, so the plot is
    never empty; at most the `at_most` best, so it stays readable), PAM50 genes in red, the threshold dashed."""
    ranked = r2.dropna().sort_values(ascending=False)
    shown = ranked[(ranked >= threshold)]
    if len(shown) < at_least:
        shown = ranked.iloc[:at_least]
    shown = shown.iloc[:at_most]
    figure, ax = plt.subplots(figsize=(min(14.0, max(5.0, 0.24 * len(shown) + 1.5)), 3.6))
    colours = [PAM50_COLOUR if g in pam50 else OTHER_COLOUR for g in shown.index]
    ax.bar(range(len(shown)), shown.to_numpy(), color=colours)
    ax.set_xticks(range(len(shown)), shown.index, rotation=90, fontsize=7)
    ax.axhline(threshold, color="grey", ls="--", lw=1)
    ax.set_ylabel("R$^2$ (held-out)")
    n_pass, n_pam50 = int((ranked >= threshold).sum()), int(sum(g in pam50 for g in ranked[ranked >= threshold].index))
    shown_note = f"; the best {len(shown)} shown" if n_pass > len(shown) else ""
    ax.set_title(f"{n_pass} genes with R$^2$ >= {threshold} ({n_pam50} PAM50, red){shown_note}", loc="left")
    figure.tight_layout()
    return figure


# --- cost (Figures 6 and 10) ---------------------------------------------------------------------------


def cost_bars(costs: pd.DataFrame):
    """Figures 6/10: training time and energy per approach; `costs` has columns approach, hours, kwh
    (one row per approach). Units follow the size (s / min / h, Wh / kWh), so seconds-long demo runs
    stay readable; the title gives the energy ratio of the costliest approach to the cheapest."""
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    colours = [OTHER_COLOUR, PAM50_COLOUR, "#7f8c8d", "#2980b9"][:len(costs)]
    hours, kwh = costs["hours"].to_numpy(float), costs["kwh"].to_numpy(float)
    time_unit, time_scale = (("h", 1.0) if hours.max() >= 1 else ("min", 60.0) if hours.max() >= 1 / 60
                             else ("s", 3600.0))
    energy_unit, energy_scale = ("kWh", 1.0) if kwh.max() >= 1 else ("Wh", 1000.0)
    for ax, values, label in zip(axes, (hours * time_scale, kwh * energy_scale),
                                 (f"training time ({time_unit})", f"energy ({energy_unit})")):
        ax.bar(range(len(costs)), values, color=colours)
        ax.set_xticks(range(len(costs)), costs["approach"], fontsize=8)
        ax.set_ylabel(label)
        for i, value in enumerate(values):
            ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom", fontsize=8)
    if len(costs) > 1 and kwh.min() > 0:
        figure.suptitle(f"{costs['approach'].iloc[int(kwh.argmax())]} used {kwh.max() / kwh.min():.1f}x the energy "
                        f"of {costs['approach'].iloc[int(kwh.argmin())]}", fontsize=10)
    figure.tight_layout()
    return figure


# --- external cohort (Figures 7, 8, 9) ----------------------------------------------------------------


def biomarker_violins(data, tests=None):
    """Figure 7: predicted ESR1, PGR, ERBB2 by IHC status and MKI67 by grade (violins, medians marked).

    `data` is one cohort's table (genes + clinical columns) or a dict label -> table, drawn as one row
    per cohort like the paper's TCGA and TMA rows; `tests` likewise (biomarker_tests), for p-values."""
    cohorts = data if isinstance(data, dict) else {"": data}
    tests = tests if isinstance(tests, dict) else {label: tests for label in cohorts}
    panels = [("ESR1", "er", ("neg", "pos")), ("PGR", "pr", ("neg", "pos")), ("ERBB2", "her2", ("neg", "pos")),
              ("MKI67", "grade", ("G1", "G2", "G3"))]
    figure, grid = plt.subplots(len(cohorts), 4, figsize=(11, 3.2 * len(cohorts)), squeeze=False)
    for axes, (label, table) in zip(grid, cohorts.items()):
        for ax, (gene, column, names) in zip(axes, panels):
            _violin_panel(ax, table, tests.get(label), gene, column, names)
        axes[0].set_ylabel(f"{label}\nlog2 expression" if label else "predicted log2 expression")
    figure.tight_layout()
    return figure


def _violin_panel(ax, data: pd.DataFrame, tests: pd.DataFrame | None, gene: str, column: str, names) -> None:
    title = f"{gene} by {column.upper() if column != 'grade' else 'grade'}"
    ax.set_title(title, loc="left")
    if gene not in data or column not in data or data[column].isna().all():
        ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    levels = (0, 1) if column != "grade" else (1, 2, 3)
    groups = [data.loc[data[column] == level, gene].dropna().to_numpy() for level in levels]
    positions = [i for i, g in enumerate(groups, start=1) if len(g) >= 2]
    if positions:
        parts = ax.violinplot([groups[i - 1] for i in positions], positions, showmedians=True)
        for body in parts["bodies"]:
            body.set_facecolor(OTHER_COLOUR)
            body.set_alpha(0.45)
    for i, g in enumerate(groups, start=1):
        shown = g if len(g) <= 400 else np.random.default_rng(i).choice(g, 400, replace=False)
        ax.scatter(np.full(len(shown), i) + np.random.default_rng(i).uniform(-0.08, 0.08, len(shown)), shown, s=5,
                   color=OTHER_COLOUR, alpha=0.6, edgecolors="none")
    ax.set_xticks(range(1, len(levels) + 1), [f"{n}\n(n={len(g)})" for n, g in zip(names, groups)])
    if tests is not None and len(tests):
        match = tests[(tests["gene"] == gene) & (tests["test"] != "Spearman")]
        if len(match):
            ax.set_title(f"{title}\np = {match['p'].iloc[0]:.2g}", loc="left")


def mki67_scatter(data: pd.DataFrame):
    """Figure 8: predicted MKI67 against Ki67 % (IHC), with the Spearman correlation."""
    from scipy import stats

    both = data[["MKI67", "ki67_percent"]].dropna() if {"MKI67", "ki67_percent"} <= set(data) else pd.DataFrame()
    figure, ax = plt.subplots(figsize=(4.2, 3.4))
    if len(both) < 3:
        ax.text(0.5, 0.5, "MKI67 or Ki67 % not available", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    ax.scatter(both["ki67_percent"], both["MKI67"], s=10, color=OTHER_COLOUR, alpha=0.7, edgecolors="none")
    slope, intercept = np.polyfit(both["ki67_percent"], both["MKI67"], 1)
    grid = np.linspace(both["ki67_percent"].min(), both["ki67_percent"].max(), 10)
    ax.plot(grid, slope * grid + intercept, color=PAM50_COLOUR, lw=1)
    rho = stats.spearmanr(both["MKI67"], both["ki67_percent"])
    ax.set_title(f"rho = {rho.statistic:.2f}, p = {rho.pvalue:.2g} (n={len(both)})", loc="left")
    ax.set_xlabel("Ki67 % (IHC)")
    ax.set_ylabel("predicted MKI67 (log2)")
    figure.tight_layout()
    return figure


def kaplan_meier_plot(km: dict, title: str):
    """Figure 9: Kaplan-Meier curves per group (from survival.kaplan_meier) with the log-rank p-value."""
    figure, ax = plt.subplots(figsize=(4.8, 3.6))
    colours = {"LumA": OTHER_COLOUR, "LumB": PAM50_COLOUR}
    for name, fit in km["fits"].items():
        fit.plot_survival_function(ax=ax, ci_show=True, color=colours.get(str(name)), lw=1.4,
                                   label=f"{name} (n={km['n'][name]})")
    ax.set_xlabel("months")
    ax.set_ylabel("overall survival")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\nlog-rank p = {km['logrank_p']:.2g}", loc="left")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    figure.tight_layout()
    return figure


# --- spatial maps (beyond the paper) ----------------------------------------------------------------



FIXED_LAYOUT = "hist2rna_fixed_layout"  # a figure attribute: laid out by hand, saved as it is


def _thumbnail_axes(thumb: np.ndarray, slide_id: str):
    """Two panels showing the thumbnail, the slide's name over the first; laid out by hand (no
    tight_layout, no tight crop on saving: half of a map's time went to them)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    figure.subplots_adjust(left=0.01, right=0.9, bottom=0.03, top=0.9, wspace=0.04)
    setattr(figure, FIXED_LAYOUT, True)
    for ax in axes:
        ax.imshow(thumb)
        ax.set_axis_off()
    axes[0].set_title(slide_id, loc="left")
    return figure, axes


def _draw_tiles(ax, shape: tuple[int, ...], tiles: pd.DataFrame, scale: float, extent: float, colours) -> None:
    """Each tile's square (top-left level-0 x, y / `scale`, `extent` picture pixels wide) painted in its
    RGB colour at 75% opacity, as one image over the picture (of `shape`): a 1000-tile map draws as
    fast as a 10-tile one."""
    from matplotlib.colors import to_rgba_array

    overlay = np.zeros((shape[0], shape[1], 4), np.float32)
    rgba = to_rgba_array(colours)
    size = max(1, int(round(extent)))
    for (x, y), colour in zip(np.round(tiles[["x", "y"]].to_numpy(np.float64) / scale).astype(int), rgba):
        overlay[max(y, 0):max(y + size, 0), max(x, 0):max(x + size, 0)] = (*colour[:3], 0.75)
    ax.imshow(overlay, interpolation="nearest")


def tile_value_map(thumb: np.ndarray, scale: float, extent: float, tiles: pd.DataFrame, gene: str, slide_id: str,
                   units: str = "log2"):
    """The thumbnail, and over it each tile (level-0 top-left x, y / `scale`; `extent` thumbnail
    pixels wide) coloured by its predicted `gene` (2nd-98th percentile colour range, in `units`)."""
    figure, axes = _thumbnail_axes(thumb, slide_id)
    values = tiles[gene].to_numpy()
    norm = plt.Normalize(np.percentile(values, 2), np.percentile(values, 98))
    cmap = plt.get_cmap("viridis")
    _draw_tiles(axes[1], thumb.shape, tiles, scale, extent, cmap(norm(values)))
    axes[1].set_title(f"predicted {gene} per tile ({units})", loc="left")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], fraction=0.04, pad=0.02)
    return figure


def tile_call_map(thumb: np.ndarray, scale: float, extent: float, calls: pd.DataFrame, slide_id: str):
    """The thumbnail and each tile coloured by its PAM50 `call`, with each subtype's share of the tiles
    in the legend."""
    from matplotlib.patches import Patch

    figure, axes = _thumbnail_axes(thumb, slide_id)
    _draw_tiles(axes[1], thumb.shape, calls, scale, extent, [SUBTYPE_COLOURS.get(c, "#000000") for c in calls["call"]])
    shares = calls["call"].value_counts(normalize=True)
    axes[1].legend(handles=[Patch(color=SUBTYPE_COLOURS.get(c, "#000000"), label=f"{c} {shares[c]:.0%}")
                            for c in shares.index], loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                   fontsize=8)
    axes[1].set_title("PAM50 call per tile (soft voting on predicted genes)", loc="left")
    return figure


def spot_truth_map(thumb: np.ndarray, scale: float, diameter_px: float, spots: pd.DataFrame, gene: str,
                   sample_id: str, score: pd.Series, units: str):
    """A sample's thumbnail twice, each spot a disc (its centre x, y / `scale`) coloured by the measured
    (log1p counts) and by the predicted `gene` (`units`), each on its own 2nd-98th percentile range; the
    title gives the gene's Pearson, Spearman and spin-test p (`score`)."""
    figure, axes = _thumbnail_axes(thumb, sample_id)
    size = (max(diameter_px / scale, 1.0) * 72 / figure.dpi) ** 2  # points^2 of a disc the spot's width, about
    for ax, side, label in ((axes[0], "measured", "measured (log1p counts)"), (axes[1], "predicted", f"predicted ({units})")):
        values = spots[f"{gene}_{side}"].to_numpy()
        norm = plt.Normalize(np.percentile(values, 2), np.percentile(values, 98))
        dots = ax.scatter(spots["x"] / scale, spots["y"] / scale, c=values, cmap="viridis", norm=norm, s=size,
                          alpha=0.85, linewidths=0)
        ax.set_title(f"{gene} {label}", loc="left" if side == "predicted" else "right", fontsize=9)
        figure.colorbar(dots, ax=ax, fraction=0.04, pad=0.02)
    figure.suptitle(f"{sample_id} {gene}: Pearson {score['pearson']:.2f}, Spearman {score['spearman']:.2f}, spin-test "
                    f"p {score['p_spin']:.3f}", fontsize=10)
    return figure
