"""Feature extractors: the catalog of named backbones (`catalog`, no TensorFlow), building one with
its own preprocessing and weights (`build`), the architectures Keras lacks (`regnet`; `vit`, the one
ViT of the pathology encoders), and the encoders' weights the user brings (`weights`: read, checked,
converted, cached; `checkpoints/`: the layouts their files come in, one module each; `posembed`, `resize`: the reference's
resampling of position embeddings and of tiles)."""
