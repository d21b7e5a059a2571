"""hist2rna-tf: hist2RNA (Mondol et al., Cancers 2023) in Keras 3 / TensorFlow.

Importing the package is cheap: TensorFlow is imported only by the modules that need it
(stain, backbones, regnet, features, records, head, train, export), when they are used, never here.
"""

__version__ = "0.4.0"
