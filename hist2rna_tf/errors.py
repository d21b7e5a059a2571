"""Exceptions a user can act on: each message names the file, what is wrong and the fix."""


class Hist2RNAError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits non-zero."""


class ArgumentError(Hist2RNAError, ValueError):
    """A library call or config dataclass given an argument of the wrong type or out of range (the
    Python API's form of the command line's refusals at parse time): the message names the argument,
    its value and what it takes."""


class SlideError(Hist2RNAError):
    """A slide cannot be opened, read or tiled (not a slide, truncated, no tissue, ...)."""


class MissingMPPError(SlideError):
    """A slide or image carries no microns-per-pixel metadata."""


class AnnotationError(SlideError):
    """A QuPath GeoJSON annotation is missing, malformed or lies outside its slide."""


class ExpressionError(Hist2RNAError):
    """An expression table, gene list, label table or split cannot be used as given."""


class ClinicalError(Hist2RNAError):
    """A clinical table or column mapping that cannot be used."""


class BackboneError(Hist2RNAError):
    """A feature extractor cannot be built (unknown name, weights unavailable, bad model file)."""


class DeviceError(Hist2RNAError):
    """An option needs a device this machine lacks (mixed precision or XLA without a GPU)."""


class RecordError(Hist2RNAError):
    """A feature TFRecord is unreadable or does not match what the caller expects."""


class SettingsError(Hist2RNAError):
    """An output folder holds results made with other settings than this run's."""


class StainError(Hist2RNAError):
    """A stain reference image cannot be used (too little stain to fit targets to)."""


class ExportError(Hist2RNAError):
    """A model cannot be exported where asked (the version exists)."""


class RunError(Hist2RNAError):
    """A folder that is not a complete, readable training run (no config.json, a damaged one, files missing)."""


class OutputError(Hist2RNAError):
    """An output that would destroy an input, the working folder, or files this tool did not make."""


class ModelError(Hist2RNAError):
    """A trained model file cannot be loaded (corrupt, or from an unsafe or incompatible source)."""


class CrossvalError(Hist2RNAError):
    """A crossval folder, or a comparison of crossvals, that cannot be used as asked."""


class SpatialError(Hist2RNAError):
    """Some slides given could not be mapped (the others were); `written` holds the files that were."""

    def __init__(self, message: str, written: list | None = None):
        super().__init__(message)
        self.written = written or []


class ClaimedElsewhere(Exception):
    """Not an error: another run into the same features folder holds this slide (`done` False: the
    message says who), or finished it meanwhile (`done` True); the slide is left to it."""

    def __init__(self, holder: str, done: bool = False):
        super().__init__(holder)
        self.done = done


class SpotError(Hist2RNAError):
    """A spatial transcriptomics sample (HEST-1k, Space Ranger) that cannot be read as given."""
