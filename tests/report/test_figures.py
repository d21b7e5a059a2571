"""The paper's figures (figures.py): what each draws, checked on the Figure objects themselves."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hist2rna_tf.analysis.evaluate import across_genes, across_patients, r_squared
from hist2rna_tf.analysis.survival import kaplan_meier
from hist2rna_tf.config import SUBTYPE_COLOURS
from hist2rna_tf.report import figures

RED = mcolors.to_rgba(figures.PAM50_COLOUR)


@pytest.fixture(scope="module")
def held_out():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(30)] + ["ESR1", "MKI67"]
    truth = pd.DataFrame(rng.normal(8, 1, (40, len(genes))), columns=genes, index=[f"P{i}" for i in range(40)])
    signal = np.linspace(0, 1, len(genes))  # gene k is predicted with weight signal[k]
    predicted = truth * signal + rng.normal(0, 1, truth.shape) * (1 - signal)
    return predicted, truth


def test_correlation_boxes_draw_one_box_per_run_in_each_panel(held_out):
    predicted, truth = held_out
    runs = {name: {"across_patients": across_patients(p, truth), "across_genes": across_genes(p, truth)}
            for name, p in (("good", predicted), ("noise", predicted.sample(frac=1, random_state=0)
                                                  .set_axis(predicted.index)))}
    figure = figures.correlation_boxes(runs)
    assert len(figure.axes) == 4
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["good", "noise"]
    medians = [line.get_ydata()[0] for line in figure.axes[1].lines if line.get_label() == "_nolegend_"
               and len(line.get_xdata()) == 2 and line.get_color() == "C1"]
    genes_rho = runs["good"]["across_genes"]["rho"].median()
    assert any(np.isclose(m, genes_rho) for m in medians)  # panel B's first box is the genes' median


def test_top_gene_scatter_titles_the_best_genes_and_colours_pam50_red(held_out):
    predicted, truth = held_out
    table = across_genes(predicted, truth)
    figure = figures.top_gene_scatter(predicted, truth, table, pam50={"ESR1"}, n_top=10)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    best = table["rho"].sort_values(ascending=False).index[:10]
    assert [t.split()[0] for t in titles] == list(best)
    esr1 = [ax for ax in figure.axes if ax.get_title().startswith("ESR1 ")]  # among the best (signal 30/31)
    assert len(esr1) == 1 and mcolors.to_rgba(esr1[0].title.get_color()) == RED
    assert mcolors.to_rgba(figure.axes[0].title.get_color()) == (RED if best[0] == "ESR1" else
                                                                 mcolors.to_rgba(figures.OTHER_COLOUR))


def test_r_squared_bars_show_genes_above_the_threshold_pam50_in_red(held_out):
    predicted, truth = held_out
    r2 = r_squared(predicted, truth)
    figure = figures.r_squared_bars(r2, pam50={"ESR1", "MKI67"}, threshold=0.1, at_least=3)
    ax = figure.axes[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    passing = r2[r2 >= 0.1].sort_values(ascending=False)
    assert shown == list(passing.index) and ax.get_title("left").startswith(f"{len(passing)} genes")
    colours = {label: mcolors.to_rgba(bar.get_facecolor()) for label, bar in zip(shown, ax.patches)}
    assert all((colours[g] == RED) == (g in {"ESR1", "MKI67"}) for g in shown)


def test_cost_bars_give_the_energy_ratio():
    costs = pd.DataFrame({"approach": ["hist2RNA", "patch-based"], "hours": [0.66, 33.9], "kwh": [0.19, 10.2]})
    figure = figures.cost_bars(costs)
    assert "patch-based used 53.7x the energy of hist2RNA" in figure._suptitle.get_text()
    heights = [bar.get_height() for bar in figure.axes[1].patches]
    assert heights == pytest.approx([0.19, 10.2])


def test_biomarker_violins_one_row_per_cohort_with_test_p_values():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"ESR1": rng.normal(size=60), "er": np.repeat([0.0, 1.0], 30), "grade": np.tile([1, 2, 3], 20),
                         "MKI67": rng.normal(size=60)})
    data.loc[data["er"] == 1, "ESR1"] += 3
    from hist2rna_tf.analysis.clinical import biomarker_tests

    tests = biomarker_tests(data)
    figure = figures.biomarker_violins({"TCGA": data, "TMA": data}, {"TCGA": tests, "TMA": tests})
    assert len(figure.axes) == 8
    p = stats.ttest_ind(data.loc[data["er"] == 1, "ESR1"], data.loc[data["er"] == 0, "ESR1"], equal_var=False).pvalue
    assert figure.axes[0].get_title("left") == f"ESR1 by ER\np = {p:.2g}"
    assert figure.axes[1].texts[0].get_text() == "not available"  # no PR column


def test_mki67_scatter_reports_spearman_and_says_when_data_is_missing():
    rng = np.random.default_rng(2)
    data = pd.DataFrame({"MKI67": rng.normal(size=50), "ki67_percent": rng.uniform(0, 60, 50)})
    rho = stats.spearmanr(data["MKI67"], data["ki67_percent"])
    assert figures.mki67_scatter(data).axes[0].get_title("left").startswith(f"rho = {rho.statistic:.2f}")
    assert "not available" in figures.mki67_scatter(data[["MKI67"]]).axes[0].texts[0].get_text()


def test_kaplan_meier_plot_draws_each_group_with_the_log_rank_p():
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"months": rng.exponential(60, 80), "event": rng.integers(0, 2, 80),
                          "group": ["LumA", "LumB"] * 40})
    km = kaplan_meier(table, "months", "event", "group")
    ax = figures.kaplan_meier_plot(km, "IHC").axes[0]
    assert ax.get_title("left") == f"IHC\nlog-rank p = {km['logrank_p']:.2g}"
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["LumA (n=40)", "LumB (n=40)"]


def test_tile_maps_put_each_tile_where_it_lies():
    """Each tile's square (level-0 x, y / scale; 5 picture pixels wide) painted over the thumbnail in its
    colour, nothing elsewhere."""
    thumb = np.full((50, 80, 3), 230, np.uint8)
    tiles = pd.DataFrame({"x": [0, 400, 800], "y": [0, 200, 400], "ESR1": [1.0, 2.0, 3.0],
                          "call": ["LumA", "Basal", "LumA"]})
    value_map = figures.tile_value_map(thumb, 20.0, 5.0, tiles, "ESR1", "slide-1")
    overlay = np.asarray(value_map.axes[1].images[1].get_array())
    assert overlay.shape == (50, 80, 4) and value_map.axes[0].get_title("left") == "slide-1"
    painted = overlay[..., 3] > 0
    expected = np.zeros((50, 80), bool)
    for x, y in ((0, 0), (20, 10), (40, 20)):
        expected[y:y + 5, x:x + 5] = True
    np.testing.assert_array_equal(painted, expected)
    assert np.allclose(overlay[painted, 3], 0.75)
    low, high = overlay[0, 0, :3], overlay[20, 40, :3]  # viridis: ESR1 1.0 dark, 3.0 bright
    assert high.sum() > low.sum()
    call_map = figures.tile_call_map(thumb, 20.0, 5.0, tiles, "slide-1")
    overlay = np.asarray(call_map.axes[1].images[1].get_array())
    colours = [mcolors.to_hex(overlay[y, x, :3]) for x, y in ((0, 0), (20, 10), (40, 20))]
    assert colours == [SUBTYPE_COLOURS[c] for c in tiles["call"]]
    assert sorted(t.get_text() for t in call_map.axes[1].get_legend().get_texts()) == ["Basal 33%", "LumA 67%"]
