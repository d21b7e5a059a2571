"""Spatial transcriptomics: samples whose spots were measured on the H&E of the same section.

`sample.py` (one sample: spots, their centres in full-resolution pixels, counts, genes, image, um/px;
the checks every reader's sample passes), `hest.py` (a HEST-1k sample as downloaded; HEST's patch and
embedding files), `spaceranger.py` (a Space Ranger output folder with its full-resolution image),
`patches.py` (the patch HEST cuts at each spot), `bench.py` (HEST-Benchmark's ridge probe, as HEST runs it).
"""
