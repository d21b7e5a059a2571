"""Feature extractors: the catalog of named backbones (`catalog`, no TensorFlow), building one with
its own preprocessing and weights (`build`), the architectures Keras lacks (`regnet`; `vit`, the one
ViT of the pathology encoders), and the encoders' weights the user brings (`weights`: read, checked,
converted, cached; `layouts`: which tensor goes where; `posembed`, `resize`: the reference's
resampling of position embeddings and of tiles)."""
