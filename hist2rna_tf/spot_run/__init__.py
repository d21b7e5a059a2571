"""Spot runs (issue 37, beyond the paper): a head trained on spatial transcriptomics, each spot an example,
its features its patch's (`hist2rna extract-spots`), its targets the log1p of its counts. A spot run is a
run folder like any (model/runs.py's files; the rows of its tables are spots, `SAMPLE:BARCODE`), so that
`predict`, `spatial`, `export` and `report` take it; its record's `spots` says what differs.

`cohort.py` (the spots, their features and targets, the split by patient, the genes chosen on the
training samples; a spot's neighbourhood, beside its own features, is model/inputs/context.py's),
`train.py` (the fit, HEST's ridge beside it, the run folder), `metrics.py`
(per held-out sample and gene: Pearson, Spearman, FDR).
"""
