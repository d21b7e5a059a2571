"""hist2rna-tf: hist2RNA (Mondol et al., Cancers 2023) in Keras 3 / TensorFlow.

The package reads as the data flow: the base (config, errors, atomic, barcodes, tfenv, expression),
then extract/ (slides -> stored features), analysis/ (statistics on tables), model/ (features +
RNA-seq -> a run that stands alone -> predictions, exports), report/ (figures, the HTML report,
spatial maps), demo/ and cli/. Imports only go down those floors.

Importing the package is cheap: TensorFlow is imported only by the modules that need it, when they
are used, never here. For a notebook, the library in five calls (api.py), loaded on first use:

    import hist2rna_tf as h2r
    h2r.extract_features("slides/", "features", backbone="efficientnetv2s", weights="imagenet")
    h2r.train("features/efficientnetv2s", "rsem.txt", "labels.csv", out="runs/effnet")
    h2r.predict("runs/effnet", features="features/efficientnetv2s")   # patients x genes (pandas)
    h2r.export("runs/effnet", "saved_models")
    h2r.write_report("runs/effnet")
"""

__version__ = "0.8.0.dev0"
__all__ = ["extract_features", "train", "predict", "export", "write_report", "__version__"]
_API = ("extract_features", "train", "predict", "export", "write_report")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


def __getattr__(name: str):
    if name in _API:
        from hist2rna_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'hist2rna_tf' has no attribute {name!r}")
