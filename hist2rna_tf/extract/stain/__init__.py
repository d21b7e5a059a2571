"""Stain normalisation: Macenko as compiled TensorFlow stages (`macenko`), and the normalisers the
pipeline can run (`normalisers`: the TensorFlow Macenko variants, staintools', none; a reference
image's targets; one image file)."""
