"""Feature extractors: the catalog of named backbones (`catalog`, no TensorFlow), building one with
its own preprocessing and weights (`build`), and the architectures Keras lacks (`regnet`)."""
