"""The report of a crossval folder (model/crossval.py): the summary table (per fold, the mean over folds
with its 95% CI, the out-of-fold pool), Figure 3 per fold and pooled, the genes most often
significant; with other crossvals of the same patients and folds (one per encoder, say), Figure 3 of
each pooled side by side and the paired comparison: per gene the fold-mean correlations of two
crossvals, the Wilcoxon signed-rank test over genes, the per-fold differences with their CI; of a
patient-level and a site-preserved crossval of the same patients, the site-leak gap (model/folds.py
SiteLeakGap). Where the patients' sites are known, each crossval's held-out figures per site, the site
that differs most named (analysis/sites.py)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from hist2rna_tf.analysis.encoder_robustness import robustness_results
from hist2rna_tf.analysis.evaluate import held_out_metrics
from hist2rna_tf.analysis.sites import MIN_SITE_PATIENTS, is_site_preserved, most_different_site, per_site_figures
from hist2rna_tf.atomic import building_files, write_bytes, write_text
from hist2rna_tf.errors import CrossvalError
from hist2rna_tf.model import folds as cv
from hist2rna_tf.model import runs
from hist2rna_tf.outputs import refuse_non_html, refuse_overlap
from hist2rna_tf.report.figures import correlation_boxes
from hist2rna_tf.report.report import CSS, Page


def _pooled(folder: Path) -> dict:
    return held_out_metrics(cv.read_table(folder, cv.OOF_PREDICTIONS), cv.read_table(folder, cv.OOF_TARGETS))


def _trained_on(folder: Path) -> tuple[str, str]:
    """A crossval's head and features folder's name (its first fold's); ("", "") when unreadable."""
    try:
        record = runs.read_record(cv.fold_dirs(folder)[0])
    except Exception:  # noqa: BLE001 - any unreadable fold: nothing to add to the folder's own name
        return "", ""
    return record.train.head, Path(record.inputs.features).name


def _names(folders: list[Path]) -> list[str]:
    """Each crossval's name in figures: its folder's, with what differs between those compared (the head,
    the features): "cv-a (abmil)" beside "cv-b (hist2rna)"; where two folders share a name, their paths."""
    trained = [_trained_on(f) for f in folders]
    varying = [i for i in range(2) if len({t[i] for t in trained}) > 1]
    names = [f.name + (f" ({', '.join(t[i] for i in varying)})" if varying else "") for f, t in zip(folders, trained)]
    return names if len(set(names)) == len(names) else [str(f) for f in folders]


def site_figures(folders: list[Path], names: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Each crossval's held-out figures per site (out of fold: patients, median Spearman across genes) side
    by side, and a sentence a crossval naming the site that differs most (none with under three sites)."""
    figures = {name: per_site_figures(cv.read_table(folder, cv.OOF_PREDICTIONS), cv.read_table(folder, cv.OOF_TARGETS),
                                      cv.crossval_sites(folder)) for folder, name in zip(folders, names)}
    table = pd.concat([next(iter(figures.values()))[["patients"]],
                       *(f.drop(columns="patients").add_prefix(f"{name}: ") for name, f in figures.items())], axis=1)
    said = []
    for name, f in figures.items():
        different = most_different_site(f)
        if different:
            site, value, middle = different
            said.append(f"{name}: site {site} ({int(f.loc[site, 'patients'])} patients) differs most, median Spearman "
                        f"across genes {value:.2f} against {middle:.2f}, the median over the "
                        f"{int(f['median_rho_genes'].notna().sum())} sites of {MIN_SITE_PATIENTS} patients or more.")
    return table, said


def site_sentences(folders: list[Path]) -> list[str]:
    """site_figures' sentences (the site that differs most in each crossval); none when the sites are unknown."""
    if cv.crossval_sites(folders[0]).dropna().nunique() < 2:
        return []
    return site_figures(folders, _names(folders))[1]


def _site_section(page: Page, folders: list[Path], names: list[str]) -> None:
    """Held-out figures per site, when the patients' sites are known (two or more)."""
    if cv.crossval_sites(folders[0]).dropna().nunique() < 2:
        return
    table, said = site_figures(folders, names)
    page.heading("Held-out figures per site")
    page.text("Each site's patients, out of fold: the median over genes of each gene's Spearman across the site's "
              f"patients (sites of {MIN_SITE_PATIENTS} patients or more) and the median of each patient's Spearman "
              "across genes. A site far from the others is one whose slides or patients the model reads otherwise. "
              + " ".join(said))
    page.table(table.round(3), "crossval_sites")


def build_crossval_report(folder: str | Path, compare: list[str | Path] = (), out: str | Path | None = None,
                          robustness: str | Path | None = None) -> tuple[Path, list[cv.Comparison | cv.SiteLeakGap]]:
    """Write the report (default `<folder>/report/report.html`); returns it and the comparisons of
    `folder` with each of `compare` (every one checked first: same patients and folds)."""
    folder = Path(folder)
    runs_given = [str(other) for other in compare if not cv.is_crossval(other)]
    if runs_given:
        raise CrossvalError(f"--compare {runs_given[0]}: not a crossval folder; a crossval compares with crossvals of "
                            "the same patients and folds (`hist2rna crossval ... --seed S --folds K`).")
    out = Path(out) if out else folder / "report" / "report.html"
    refuse_overlap(out, {"CROSSVAL": folder, "--compare": compare, "--robustness": robustness},
                   may_hold=("CROSSVAL", "--compare"))
    refuse_non_html(out)
    found = robustness_results(robustness) if robustness else None
    summary = cv.read_table(folder, cv.SUMMARY)  # a folder that is not a complete crossval: said here
    names = _names([folder, *map(Path, compare)])
    comparisons = [cv.compare(folder, other, (names[0], name)) for other, name in zip(compare, names[1:])]
    with building_files(out.parent, out.stem, last=out.name) as work:
        page = Page(work)
        page.heading(f"Cross-validation: {names[0]}", 1)
        folds, sites = cv.read_folds(folder), cv.crossval_sites(folder)
        kind = ("site-preserved folds (every site's patients in one fold)" if is_site_preserved(folds, sites) else
                "patient-level folds")
        page.text(f"{len(folds)} patients in {folds.max()} {kind}; every patient predicted once, by the fold that held "
                  "it out; early stopping on a patient-level share of each fold's training patients. Beyond the paper, "
                  "which reports one held-out split.")
        page.table(summary.round(3), "crossval_summary")
        per_fold = {d.name: runs.metrics(d) for d in cv.fold_dirs(folder)}
        pooled = {names[0]: _pooled(folder)}
        page.figure(correlation_boxes({**per_fold, "out of fold": pooled[names[0]]}), "figure3_folds",
                    "Figure 3 per fold and pooled (out of fold): Spearman and -log10 FDR across patients and genes.")
        genes = cv.read_table(folder, cv.GENES)
        page.heading("Genes most often significant")
        page.table(genes.head(20).round(3), "crossval_genes")
        scores = cv.subtype_scores(folder)
        if scores is not None:
            page.heading("PAM50 subtype from the out-of-fold predicted genes (every patient once)")
            page.text(f"The paper's soft-voting classifier, trained in each fold on its training patients' measured "
                      f"PAM50 genes and applied to its held-out patients' predicted ones: accuracy "
                      f"{scores['accuracy']:.2f}, macro F1 {scores['macro_f1']:.2f}; AUROC "
                      + ", ".join(f"{c} {v:.2f}" for c, v in scores["auroc"].items()) + ". Rows: label; columns: call.")
            page.table(scores["confusion"], "crossval_subtype_confusion")
        if comparisons:
            pooled.update({n: _pooled(Path(o)) for n, o in zip(names[1:], compare)})
            page.heading("Comparison (same patients; the same folds, or patient-level against site-preserved: the "
                         "site-leak gap)")
            page.figure(correlation_boxes(pooled), "figure3_compared",
                        "Figure 3 of each crossval, out of fold.")
            for comparison in comparisons:
                page.text(comparison.verdict())
                table = comparison.genes.sort_values("difference")
                page.table(table.round(3), f"paired_{comparison.names[0]}_vs_{comparison.names[1]}".replace("/", "_"))
                page.table(comparison.fold_table().round(3))
        _site_section(page, [folder, *map(Path, compare)], names)
        if found is not None:
            page.heading("The encoders: PathoROB's robustness index")
            write_bytes(work / "robustness.png", found[1])
            page.embed(found[1], found[2])
            page.table(found[0].drop(columns=["folder"]).round(3), "robustness")
        document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(names[0])} crossval"
                    f"</title><style>{CSS}</style></head><body>{''.join(page.parts)}</body></html>")
        write_text(work / out.name, document)
    return out, comparisons
