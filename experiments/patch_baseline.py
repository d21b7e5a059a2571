"""The patch-based comparison on TCGA-BRCA: Figures 6 and 10 of Mondol et al., Cancers 2023 (hist2RNA).

Reproduces: Figure 10 (patch-based median Spearman across genes 0.18 with RegNet, 68 genes p < 0.05,
against hist2RNA's 0.29) and Figure 6 (training energy: EfficientNet patch-based 4 x 8.48 h x 300 W =
10.2 kWh against hist2RNA's 0.66 h, 0.19 kWh on one GPU, 50x less).

Stages, top to bottom: extract features WITH the per-tile features kept (the patch-based approach
trains on tiles; ~5-15 MB a slide) and train hist2RNA's head on the same split as the EfficientNetV2S
run (tcga_brca.run), then the patch-based baseline on that run's patients, split and genes: "frozen"
(the head on each tile's feature) or, with BASELINE's mode="finetune", the backbone itself trained on
the tile images as the paper did (needs a GPU: days on a CPU). Energy uses device_watts per device
(the paper's 300 W V100). Edit CONFIG below; run from the repository's folder: python -m experiments.patch_baseline,
then open runs/<backbone>_patch/report.html.
"""


from hist2rna_tf.config import BaselineConfig, ReportInputs
from hist2rna_tf.model import runs

from experiments.tcga_brca import REFERENCE, TCGA, Experiment, run

BACKBONE = "regnety320"
CONFIG = dict(
    data=TCGA(),
    # hist2RNA on the slide means of features that keep every tile's vector (timed: the cost figure's first bar)
    experiment=Experiment(BACKBONE, save_tile_features=True, name=f"{BACKBONE}_tiles",
                          split=runs.split_path(TCGA().runs / REFERENCE)),  # the main experiment's patients
    baseline=BaselineConfig(mode="frozen", device_watts=300.0),  # mode="finetune": the paper's (GPU)
    out=TCGA().runs / f"{BACKBONE}_patch",
)

if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(prog="python -m experiments.patch_baseline", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()  # --help: this, no run
    from hist2rna_tf.model.baseline import train_patch_baseline
    from hist2rna_tf.report.report import build_report

    # 1. + 2. features with every tile's vector kept, and hist2RNA trained on their slide means
    run_dir = run(CONFIG["experiment"], CONFIG["data"])
    # 3. the patch-based baseline on the same patients, split, genes and settings (the second bar)
    summary = train_patch_baseline(run_dir, CONFIG["out"], CONFIG["baseline"], slides=[CONFIG["data"].slides],
                                   annotations_dir=CONFIG["data"].annotations, verbose=2, overwrite=True)
    print("patch-based median across genes:", round(summary.metrics["across_genes"]["median"], 3))
    # 4. one report with Figure 10 and the cost figure
    print("report:", build_report(ReportInputs(run=run_dir, baseline=CONFIG["out"]), CONFIG["out"] / "report.html"))
