"""Slides -> stored features: the first floor of the data flow.

slides (open, MPP, read at a target um/px) -> regions (tissue mask, QuPath annotations, the grid)
-> plan (a slide's chosen tiles and their reader) -> stain (Macenko in TensorFlow ops) -> backbones
(name -> model, its own preprocessing, feature size) -> stream (one tf.data pipeline over a cohort)
-> extractor (the backbone's step and the running per-slide mean) -> records (one TFRecord a slide)
-> cohort (a folder's run: resume, shards, manifest), with settings (how features were made: one
schema, one comparison), claims (per-slide locks for concurrent runs) and distributed (Ray).

Imports only the base (config, errors, atomic, barcodes, tfenv, expression). Importing this package
is cheap: TensorFlow loads with the modules that use it.
"""
