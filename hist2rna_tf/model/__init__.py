"""Stored features + RNA-seq -> a trained, self-contained run folder, and what is done with it.

heads (the registry: the paper's Conv1D head, ABMIL) and bags (tile features streamed) -> train (one
fit loop; features + RNA-seq -> a run) -> runs and run_record (the run folder: its files and its typed
record, config.json) -> predict (patients x genes from features or slides) -> export (SavedModels for
serving); baseline (the paper's patch-based comparison) and costs (training time and energy, Figure 6).

Imports the base, extract/ (features, settings) and analysis/ (a run's held-out metrics).
"""
