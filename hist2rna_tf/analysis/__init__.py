"""Statistics on tables (patients x genes, clinical columns), as pure functions: evaluate (Spearman,
FDR, R2, bootstrap CIs), subtype (PAM50 calls, the paper's soft-voting classifier), survival (Cox,
Kaplan-Meier, log-rank), clinical (the external cohort's tables and tests).

Imports only the base: a run (model/) is scored with these, never the reverse.
"""
