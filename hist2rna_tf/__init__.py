"""hist2rna-tf: hist2RNA (Mondol et al., Cancers 2023) in Keras 3 / TensorFlow.

The package reads as the data flow: the base (config, errors, atomic, barcodes, tfenv, expression),
then extract/ (slides -> stored features), analysis/ (statistics on tables), model/ (features +
RNA-seq -> a run that stands alone -> predictions, exports), report/ (figures, the HTML report,
spatial maps), demo/ and cli/. Imports only go down those floors.

Importing the package is cheap: TensorFlow is imported only by the modules that need it, when they
are used, never here.
"""

__version__ = "0.6.0"
