"""The embedded SYNTHETIC demo cohort (`cohort`: slides built from real TCGA tiles, synthetic RNA-seq
and clinical tables) and the whole chain run on it as one call (`chain.run_demo`)."""
