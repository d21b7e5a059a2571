"""Cross-validation (model/folds.py, model/crossval.py, report/crossval.py): every patient held out
exactly once, stratified, the same folds for the same seed; each fold a complete run; the summary and
the out-of-fold predictions; a killed crossval resumed, never mixed with other settings; the paired
comparison of two crossvals says which predicts better and whether it is significant."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest

from hist2rna_tf.config import RunInputs, TrainConfig
from hist2rna_tf.expression import load_panel, read_labels
from hist2rna_tf.model import crossval as runner
from hist2rna_tf.model import folds, runs

from synthetic import latent_cohort

TRAIN = TrainConfig(max_epochs=8)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A synthetic cohort whose features carry its expression, and the same patients with features of
    another cohort's latents (carrying nothing of this expression)."""
    root = tmp_path_factory.mktemp("crossval")
    genes = load_panel("pam50")
    good = latent_cohort(root / "good", genes, n_patients=48)
    noise = latent_cohort(root / "noise", genes, n_patients=48, seed=7)
    informative = RunInputs(str(good.features), str(good.expression), str(good.labels), genes="pam50")
    return informative, replace(informative, features=str(noise.features)), root


@pytest.fixture(scope="module")
def done(cohorts):
    informative, uninformative, root = cohorts
    runner.crossval(informative, root / "cv-good", TRAIN, folds=4, seed=0)
    runner.crossval(uninformative, root / "cv-noise", TRAIN, folds=4, seed=0)
    return root / "cv-good", root / "cv-noise"


@pytest.mark.slow
def test_every_patient_is_held_out_once_stratified_the_same_for_the_same_seed(cohorts, done):
    informative, _, _ = cohorts
    labels = read_labels(informative.labels)
    assignment = folds.read_folds(done[0])
    assert sorted(assignment.index) == sorted(labels.index) and set(assignment) == {1, 2, 3, 4}
    held = [set(runs.held_out(d)[0].index) for d in folds.fold_dirs(done[0])]
    assert sum(len(h) for h in held) == len(labels) and set().union(*held) == set(labels.index)  # once each
    for k, patients in enumerate(held, start=1):
        assert patients == set(assignment.index[assignment == k])
        assert set(labels[list(patients)]) == set(labels)  # every subtype in every fold
    assert folds.read_folds(done[1]).equals(assignment)  # the same seed, the same folds
    assert not folds.fold_of(labels, 4, seed=1).equals(folds.fold_of(labels, 4, seed=0))


@pytest.mark.slow
def test_the_summary_and_the_out_of_fold_predictions(done):
    summary = pd.read_csv(done[0] / folds.SUMMARY, index_col=0)
    assert list(summary.index) == ["fold-1", "fold-2", "fold-3", "fold-4", "mean", "ci95_low", "ci95_high",
                                   "out_of_fold"]
    per_fold = summary.loc[["fold-1", "fold-2", "fold-3", "fold-4"], "median_rho_genes"]
    assert summary.loc["mean", "median_rho_genes"] == pytest.approx(per_fold.mean())
    assert summary.loc["ci95_low", "median_rho_genes"] < per_fold.mean() < summary.loc["ci95_high", "median_rho_genes"]
    assert summary.loc["mean", "median_rho_genes"] > 0.15  # the features carry the expression (noise: ~0)
    oof = pd.read_csv(done[0] / folds.OOF_PREDICTIONS, index_col=0)
    for fold_dir in folds.fold_dirs(done[0]):  # each patient's out-of-fold row is its fold's prediction
        predicted = runs.held_out(fold_dir)[0]
        pd.testing.assert_frame_equal(oof.loc[predicted.index], predicted, check_names=False)
    subtypes = pd.read_csv(done[0] / folds.OOF_SUBTYPES, index_col=0)  # every patient's call, out of fold
    assert sorted(subtypes.index) == sorted(oof.index) and subtypes["call"].isin(subtypes["label"].unique()).all()
    scores = folds.subtype_scores(done[0])
    assert scores["accuracy"] == pytest.approx((subtypes["call"] == subtypes["label"]).mean())
    assert scores["confusion"].to_numpy().sum() == len(subtypes)
    genes = pd.read_csv(done[0] / folds.GENES, index_col=0)
    assert set(genes.columns) == {"mean_rho", "sd_rho", "folds_significant", "out_of_fold_rho"}
    assert genes["folds_significant"].between(0, 4).all() and len(genes) == len(oof.columns)


@pytest.mark.slow
def test_a_killed_crossval_resumes_at_its_first_unfinished_fold(cohorts, done, tmp_path, monkeypatch):
    informative, _, _ = cohorts
    copy = shutil.copytree(done[0], tmp_path / "cv")
    shutil.rmtree(copy / "fold-3")  # killed while fold 3 trained: its folder was never renamed into place
    (copy / folds.SUMMARY).unlink()
    trained = []
    real = runner.train_run
    monkeypatch.setattr(runner, "train_run", lambda inputs, out, *a, **k: trained.append(out.name) or real(inputs, out,
                                                                                                              *a, **k))
    runner.crossval(informative, copy, TRAIN, folds=4, seed=0)
    assert trained == ["fold-3"] and (copy / folds.SUMMARY).is_file()
    with pytest.raises(folds.CrossvalError, match=r"other settings \(train.seed: 0 -> 5; seed: 0 -> 5\)"):
        runner.crossval(informative, copy, replace(TRAIN, seed=5), folds=4, seed=5)
    with pytest.raises(folds.CrossvalError, match="folds: 4 -> 3"):
        runner.crossval(informative, copy, TRAIN, folds=3, seed=0)
    with pytest.raises(folds.CrossvalError, match=r"train.head_options: \[\] -> \['kernel_size=3'\]"):
        runner.crossval(informative, copy, replace(TRAIN, head_options=("kernel_size=3",)), folds=4, seed=0)


def test_impossible_fold_counts_are_refused_with_the_subtypes_counts(cohorts, tmp_path):
    informative, _, _ = cohorts
    counts = read_labels(informative.labels).value_counts()
    for k in (1, int(counts.min()) + 1):
        with pytest.raises(folds.CrossvalError, match=rf"--folds {k}: needs 2 to {counts.min()}.*{counts.idxmin()} "
                                                      rf"{counts.min()}"):
            runner.crossval(informative, tmp_path / f"cv{k}", TRAIN, folds=k)
        assert not (tmp_path / f"cv{k}").exists()


def test_a_folder_an_earlier_refused_crossval_left_is_begun_again_with_the_corrected_settings(cohorts, tmp_path,
                                                                                               monkeypatch):
    """Before 0.8.0 a refused crossval (a fold that could not train) left crossval.json, folds.csv and splits/;
    the corrected command then found "a crossval made with other settings". A folder of no fold begun is
    begun again; one with a fold begun keeps its settings (resumed or refused, never mixed)."""
    informative, _, _ = cohorts
    out = tmp_path / "cv"
    out.mkdir()
    (out / folds.SETTINGS).write_text('{"inputs": {}, "train": {"head_options": ["filters=4"]}, "folds": 9}')
    (out / folds.FOLDS).write_text("patient_id,label,fold\nX,LumA,1\n")
    (out / "splits").mkdir()
    begun = []

    def stopped(inputs, fold_dir, *args, **kwargs):  # killed as the first fold starts: what was begun is on disk
        begun.append(fold_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_run", stopped)
    with pytest.raises(KeyboardInterrupt):
        runner.crossval(informative, out, TRAIN, folds=4, seed=0)
    assert begun == [out / "fold-1"] and '"folds": 4' in (out / folds.SETTINGS).read_text()
    assert sorted(folds.read_folds(out).unique()) == [1, 2, 3, 4]
    (out / "fold-1").mkdir()  # a fold begun: the folder is that crossval's
    with pytest.raises(folds.CrossvalError, match="a crossval made with other settings .*folds: 4 -> 3"):
        runner.crossval(informative, out, TRAIN, folds=3, seed=0)


@pytest.mark.slow
def test_the_paired_comparison_finds_the_informative_features_better(done, capsys):
    """`hist2rna report CV --compare CV2`: per gene, the informative features' fold-mean correlation
    is higher, significantly (Wilcoxon over the 50 genes), and the report says so."""
    from hist2rna_tf.cli import main

    comparison = folds.compare(done[0], done[1], ("good", "noise"))
    assert comparison.better == "good" and comparison.wilcoxon_p < 0.05
    assert len(comparison.genes) == 50 and (comparison.fold_differences > 0).all()
    swapped = folds.compare(done[1], done[0], ("noise", "good"))
    assert swapped.better == "good" and swapped.wilcoxon_p == pytest.approx(comparison.wilcoxon_p)
    out = done[0].parent / "report" / "report.html"
    assert main(["report", str(done[0]), "--compare", str(done[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cv-good predicts better than cv-noise, over genes and in every fold" in printed
    assert "Wilcoxon signed-rank over 50 genes" in printed
    assert "Wilcoxon signed-rank over 50 genes" in out.read_text()
    assert "PAM50 subtype from the out-of-fold predicted genes" in out.read_text()


@pytest.mark.slow
def test_crossvals_of_other_folds_are_not_compared(done, tmp_path):
    """Two patients of different subtypes in swapped folds (another seed's crossval): refused, named."""
    other = shutil.copytree(done[1], tmp_path / "cv-other")
    table = pd.read_csv(other / folds.FOLDS, dtype={"patient_id": str})
    first = table.index[0]
    second = table.index[table["fold"] != table.loc[first, "fold"]][0]
    table.loc[[first, second], "fold"] = table.loc[[second, first], "fold"].to_numpy()
    table.to_csv(other / folds.FOLDS, index=False)
    with pytest.raises(folds.CrossvalError, match=rf"hold different folds \(2 patients in other folds \(e.g. "
                                                  rf"{table.loc[first, 'patient_id']}: fold"):
        folds.compare(done[0], other)


def test_a_verdict_says_better_only_as_far_as_genes_and_folds_agree():
    """Significant over genes but a fold CI that includes 0 (-0.21 to +0.95): not "better" without the
    caveat; neither: no difference."""
    genes = pd.DataFrame({"difference": [0.2, 0.3, 0.1]})
    spread = folds.Comparison(("uni", "efficientnetv2s"), genes, 0.0, 0.001, pd.Series([0.9, -0.1, 0.5]),
                              (0.37, -0.21, 0.95))
    assert "gene by gene" in spread.verdict() and "but not consistently across folds" in spread.verdict()
    assert "-0.210 to +0.950, which includes 0" in spread.verdict()
    none = folds.Comparison(("uni", "efficientnetv2s"), genes, 0.0, 0.4, pd.Series([0.1, -0.1]), (0.0, -0.5, 0.5))
    assert none.verdict().startswith("no significant difference between uni and efficientnetv2s")


def test_summary_intervals_stay_within_what_a_figure_can_be():
    """A t-interval on counts never goes below 0, one on correlations never beyond [-1, 1]."""
    assert folds._clipped("genes_fdr_0.05", folds.mean_ci([0, 0, 9]))[1] == 0.0
    mean, low, high = folds._clipped("median_rho_genes", folds.mean_ci([0.99, 0.2, 0.98]))
    assert -1 <= low and high == 1.0


def test_compared_crossvals_are_named_by_their_folders_and_what_differs(monkeypatch):
    """Two crossvals of one features folder, the paper's head and ABMIL, were both named after the features
    ("feat" and "feat (abmil)"): each is its folder's name, with the head or features where they differ."""
    from pathlib import Path

    from hist2rna_tf.report import crossval as report

    trained = {"cv-paper": ("hist2rna", "uni"), "cv-abmil": ("abmil", "uni"), "cv-virchow": ("abmil", "virchow2")}
    monkeypatch.setattr(report, "_trained_on", lambda folder: trained[folder.name])
    assert report._names([Path("a/cv-paper"), Path("a/cv-abmil")]) == ["cv-paper (hist2rna)", "cv-abmil (abmil)"]
    assert report._names([Path("a/cv-abmil"), Path("a/cv-virchow")]) == ["cv-abmil (uni)", "cv-virchow (virchow2)"]
    assert report._names([Path("a/cv-paper"), Path("b/cv-paper")]) == ["a/cv-paper", "b/cv-paper"]


def test_a_folds_file_gives_k_and_a_crossval_is_not_compared_with_itself(cohorts, done, tmp_path, capsys):
    """`--folds` beside `--folds-file` is refused before anything is read (the file gives K); a crossval
    compared with itself is refused. (A site-preserved crossval from a folds file, its site-leak gap and
    per-site figures: the demo's, tests/demo/test_chain.py.)"""
    from hist2rna_tf.cli import main

    informative, _, _ = cohorts
    pd.DataFrame({"patient_id": ["TCGA-SY-0000", "TCGA-SY-0001"], "fold": [1, 2]}).to_csv(tmp_path / "f.csv",
                                                                                         index=False)
    assert main(["crossval", "--features", informative.features, "--expression", informative.expression, "--labels",
                 informative.labels, "--folds", "3", "--folds-file", str(tmp_path / "f.csv"), "--out",
                 str(tmp_path / "cv")]) == 2
    assert "--folds 3 and --folds-file: the file gives the folds" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
    with pytest.raises(folds.CrossvalError, match="the crossval itself"):
        folds.compare(done[0], done[0])


def test_folds_files_of_any_numbering_and_their_mistakes(tmp_path):
    """Howard's published table: a slide a row, its patient's fold in a named column, 0-based or blank."""
    path = tmp_path / "splits.csv"
    pd.DataFrame({"slide": ["TCGA-A1-0001-01Z-00-DX1", "TCGA-A1-0001-01Z-00-DX2", "TCGA-B2-0002-01Z-00-DX1", "P3"],
                  "CV3": ["0", "0", "2", ""]}).to_csv(path, index=False)
    assert folds.folds_from_file(path, "CV3").to_dict() == {"TCGA-A1-0001": 1, "TCGA-B2-0002": 2}
    for frame, message in (({"slide": ["A", "B"], "fold": ["1", "x"]}, "holds 'x'; folds are whole numbers"),
                           ({"slide": ["A", "A"], "fold": ["1", "2"]}, "patient A is in folds 1 and 2"),
                           ({"slide": ["A", "B"], "fold": ["1", "1"]}, "names 1 fold; a crossval needs 2")):
        pd.DataFrame(frame).to_csv(path, index=False)
        with pytest.raises(folds.CrossvalError, match=message):
            folds.folds_from_file(path, "fold")
    with pytest.raises(folds.CrossvalError, match=r"no column 'CV3_brca' \(columns: slide, fold\); give --folds-column"):
        folds.folds_from_file(path, "CV3_brca")


def test_a_site_leak_gap_is_said_only_as_far_as_genes_and_folds_agree():
    genes = pd.DataFrame({"difference": [0.2, 0.3, 0.1]})
    folds_ = pd.DataFrame({"a": [0.5, 0.6], "b": [0.3, 0.2]})
    both = folds.SiteLeakGap(("a", "b"), genes, 0.0, 0.001, folds_, (0.3, 0.1, 0.5))
    assert both.verdict().endswith("Part of the patient-level figures is the site: report the site-preserved ones.")
    genes_only = folds.SiteLeakGap(("a", "b"), genes, 0.0, 0.001, folds_, (0.02, -0.6, 0.64))
    assert "(95% CI -0.600 to +0.640), which includes 0" in genes_only.verdict()
    assert "no gap shown" in genes_only.verdict()
    none = folds.SiteLeakGap(("a", "b"), genes, 0.0, 0.4, folds_, (0.0, -0.5, 0.5))
    assert none.verdict().endswith("No significant gap: the patient-level figures do not lean on the sites here.")
