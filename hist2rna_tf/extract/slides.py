"""Open a slide (OpenSlide, plain image, pre-tiled folder), find its MPP, read tiles at a target um/px.

Units: `x_px`, `y_px` are always level-0 pixel coordinates; `mpp` is microns per level-0 pixel;
`tile_size_px` is the size of the tile handed to the backbone (after resampling).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hist2rna_tf.barcodes import patient_id
from hist2rna_tf.errors import MissingMPPError, SlideError

log = logging.getLogger(__name__)

# What OpenSlide reads (plus generic TIFF); plain images need a declared --mpp.
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
TIFF_SUFFIXES = {".svs", ".tif", ".tiff"}  # TIFF inside: their truncation can be read off their structure
# Coordinates in tile file names: ours (`_x123_y456`) and the authors' (`[x=123,y=456,...]`).
_TILE_XY = (re.compile(r"_x(\d+)_y(\d+)"), re.compile(r"\[x=(\d+),y=(\d+)"))

Image.MAX_IMAGE_PIXELS = None  # TMA cores and exported regions can be large; they are the user's own files


@dataclass(frozen=True)
class SlideRef:
    """One input: a slide file, a plain image, or a folder of ready-made tiles (kind='tiles')."""

    path: Path
    kind: str  # openslide | image | tiles

    @property
    def slide_id(self) -> str:
        name = self.path.name
        for suffix in (".ome.tiff", ".ome.tif"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem if self.kind != "tiles" else name

    @property
    def patient_id(self) -> str:
        return patient_id(self.slide_id)


def find_slides(inputs: list[str | Path], tile_size_px: int = 224) -> list[SlideRef]:
    """Expand files and folders into slide references, sorted by slide id, duplicates refused.

    A folder holding only images of exactly `tile_size_px` square is one pre-tiled patient (the
    authors' layout); any other folder is searched (one level of sub-folders too) for slides.
    """
    refs: list[SlideRef] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise SlideError(f"{item}: no such file or folder; check the --slides path.")
        if item.is_file():
            refs.append(SlideRef(item, _file_kind(item)))
        elif _is_tile_folder(item, tile_size_px):
            refs.append(SlideRef(item, "tiles"))
        else:
            refs.extend(_scan_folder(item, tile_size_px))
    seen: dict[str, Path] = {}
    for ref in refs:
        if ref.slide_id in seen and seen[ref.slide_id] != ref.path:
            raise SlideError(
                f"two inputs share the slide id {ref.slide_id!r}: {seen[ref.slide_id]} and {ref.path}; "
                "rename one (outputs are named by slide id)."
            )
        seen[ref.slide_id] = ref.path
    return sorted({r.path: r for r in refs}.values(), key=lambda r: r.slide_id)


def _scan_folder(folder: Path, tile_size_px: int) -> list[SlideRef]:
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            if _is_tile_folder(child, tile_size_px):
                found.append(SlideRef(child, "tiles"))
        elif child.suffix.lower() in SLIDE_SUFFIXES | IMAGE_SUFFIXES:
            found.append(SlideRef(child, _file_kind(child)))
    return found


def _file_kind(path: Path) -> str:
    import openslide

    try:
        if openslide.OpenSlide.detect_format(str(path)) is not None:
            return "openslide"
    except openslide.OpenSlideError:
        pass
    return "image"


def _is_tile_folder(folder: Path, tile_size_px: int) -> bool:
    """Only image files, and the first readable one a `tile_size_px` square (an unreadable file among
    them does not make it something else: `tile_folder_files` leaves it out, named)."""
    return tile_folder_size(folder) == tile_size_px


def tile_folder_size(folder: Path) -> int | None:
    """The side in px of the tiles of what looks like a pre-tiled folder (only image files, the first
    readable one square), else None."""
    files = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    if not files or any(f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES for f in files):
        return None
    for file in files:
        size = _image_size(file)
        if size is not None:
            return size[0] if size[0] == size[1] else None
    return None


def other_tile_sizes(inputs: list[str | Path], tile_size_px: int) -> str:
    """A hint for inputs in which no slide was found: the folders among them (or one level down) that
    look pre-tiled at another size than `tile_size_px`, and the --tile-px that would take them."""
    found = {}
    for item in map(Path, inputs):
        for folder in [item, *sorted(item.iterdir())] if item.is_dir() else []:
            size = tile_folder_size(folder) if folder.is_dir() else None
            if size is not None and size != tile_size_px:
                found[folder] = size
    if not found:
        return ""
    folder, size = next(iter(found.items()))
    return (f" {folder} holds {size}-px tiles{f' (and {len(found) - 1} more folders)' if len(found) > 1 else ''}, not "
            f"{tile_size_px}-px ones: give --tile-px {size} to take them as they are.")


def _image_size(path: Path) -> tuple[int, int] | None:
    """An image file's (width, height) from its header; None when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError):  # Pillow's errors for truncated or garbage files
        return None


# --- opening and metadata -------------------------------------------------------------------------


def open_slide(ref: SlideRef):
    """An OpenSlide-like handle (OpenSlide or ImageSlide) for a slide or plain image."""
    import openslide

    try:
        if ref.kind == "openslide":
            return openslide.OpenSlide(str(ref.path))
        with Image.open(ref.path) as probe:
            probe.verify()
        return openslide.ImageSlide(str(ref.path))
    except (openslide.OpenSlideError, OSError, SyntaxError, ValueError) as exc:
        truncated = truncation(ref.path)
        if truncated:
            raise SlideError(f"{ref.path}: the file is truncated ({truncated}); download or copy it again.") from None
        raise SlideError(
            f"{ref.path}: not a readable slide or image ({exc}). Check that the file is complete "
            "(re-download a truncated slide) and in a format OpenSlide or Pillow reads."
        ) from None


def truncation(path: Path) -> str | None:
    """Why a TIFF-based file (svs, tif, tiff) is incomplete, by its own structure: an image directory
    past the end of the file, or image data running past it. None when it looks whole, or is of
    another format (asked only once something else went wrong, so a file tifffile cannot parse is
    never refused for it)."""
    import tifffile

    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    size = path.stat().st_size
    complaints: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: complaints.append(record.getMessage())
    tiff_log = logging.getLogger("tifffile")
    tiff_log.addHandler(handler)
    propagate, tiff_log.propagate = tiff_log.propagate, False  # its complaints are the finding, not for the user
    try:
        with tifffile.TiffFile(path) as tif:
            ends = [max((o + c for o, c in zip(p.dataoffsets, p.databytecounts)), default=0) for p in tif.pages]
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: nothing to say
        return None
    finally:
        tiff_log.removeHandler(handler)
        tiff_log.propagate = propagate
    if any("offset" in text for text in complaints):
        return f"its structure points past its last byte, {size}"
    if ends and max(ends) > size:
        return f"its image data runs to byte {max(ends)}, past its last, {size}"
    return None


def slide_mpp(slide, ref: SlideRef, override: float | None = None) -> float:
    """Microns per level-0 pixel: the file's own, else `override`, else a MissingMPPError."""
    import openslide

    if override is not None:
        return float(override)
    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    if value:
        return float(value)
    truncated = truncation(ref.path)
    if truncated:  # its resolution tags may be in the part that is missing
        raise SlideError(f"{ref.path}: the file is truncated ({truncated}); download or copy it again.")
    width, height = slide.dimensions
    tile = (f" If it is one tile of a pre-tiled folder, give --tile-px {width} to take its folder as it is."
            if ref.kind == "image" and width == height and tile_folder_size(ref.path.parent) == width else "")
    raise MissingMPPError(
        f"{ref.path}: no microns-per-pixel in the file. Pass --mpp with the scan resolution "
        "(e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)." + tile
    )


def tile_footprint_px(tile_size_px: int, target_mpp: float, mpp: float) -> float:
    """Level-0 pixels under one side of a `tile_size_px` tile at `target_mpp`, on a slide of `mpp`."""
    return tile_size_px * target_mpp / mpp


def level_for_mpp(downsamples: tuple[float, ...], mpp: float, target_mpp: float) -> int:
    """The coarsest pyramid level still at least as fine as the target (read it, then downsample)."""
    best = 0
    for level, downsample in enumerate(downsamples):
        if mpp * downsample <= target_mpp * 1.01:
            best = level
    return best


def read_thumbnail(slide, mpp: float, mask_mpp: float) -> tuple[np.ndarray, float]:
    """An RGB thumbnail at about `mask_mpp` and its scale in level-0 pixels per thumbnail pixel."""
    width_px, height_px = slide.dimensions
    factor = mpp / mask_mpp
    size = (max(1, round(width_px * factor)), max(1, round(height_px * factor)))
    thumb = np.asarray(slide.get_thumbnail(size).convert("RGB"))
    return thumb, width_px / thumb.shape[1]


# --- reading tiles --------------------------------------------------------------------------------


class TileReader:
    """Reads `tile_size_px` RGB tiles at `target_mpp` from level-0 coordinates, from any thread.

    All threads share one OpenSlide handle (an openslide_t "can be used concurrently from multiple
    threads without locking", OpenSlide's API documentation) and so its tile cache: a JPEG tile
    under two neighbouring tiles is decoded once, and a slide is opened once, not once a thread.
    Pass the handle planning already opened (`slide`) to reuse it; the reader then owns it, and
    `close()` closes it. Regions are read from the pyramid level nearest above the target
    resolution and resampled (area averaging when shrinking).
    """

    def __init__(self, ref: SlideRef, mpp: float, target_mpp: float, tile_size_px: int, slide=None):
        self.ref = ref
        self.tile_size_px = tile_size_px
        self.footprint_px = tile_footprint_px(tile_size_px, target_mpp, mpp)
        self._slide = slide if slide is not None else open_slide(ref)
        self._shared_image: Image.Image | None = None
        self._lock = threading.Lock()
        self.level = level_for_mpp(tuple(self._slide.level_downsamples), mpp, target_mpp)
        self._downsample = self._slide.level_downsamples[self.level]
        self.read_size_px = max(1, round(self.footprint_px / self._downsample))

    def close(self) -> None:
        """Close the slide (again: nothing)."""
        with self._lock:
            if self._slide is not None:
                self._slide.close()
            self._slide, self._shared_image = None, None

    def read(self, x_px: int, y_px: int) -> np.ndarray:
        """uint8 [tile, tile, 3]; area outside the slide is white."""
        if self.ref.kind == "image":
            region = self._image_region(int(x_px), int(y_px))
        else:
            region = self._slide.read_region((int(x_px), int(y_px)), self.level, (self.read_size_px,) * 2)
        return self._to_tile(region)

    def _image_region(self, x_px: int, y_px: int) -> Image.Image:
        # A plain image is decoded once and shared (read-only crops are thread-safe).
        with self._lock:
            if self._shared_image is None:
                with Image.open(self.ref.path) as img:
                    self._shared_image = img.convert("RGBA")
        size = self.read_size_px
        return self._shared_image.crop((x_px, y_px, x_px + size, y_px + size))

    def _to_tile(self, region: Image.Image) -> np.ndarray:
        region = opaque_rgb(region)
        if region.size != (self.tile_size_px,) * 2:
            shrinking = region.size[0] > self.tile_size_px
            resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
            region = region.resize((self.tile_size_px,) * 2, resample)
        return np.asarray(region, dtype=np.uint8)


def opaque_rgb(region: Image.Image) -> Image.Image:
    """An RGBA region as RGB on white (OpenSlide's transparent area outside the scan turns white).
    Most regions are opaque throughout, and then the compositing (a third of a read's time) is
    skipped: dropping the alpha band of an opaque image is what compositing would give."""
    if region.mode == "RGBA":
        if region.getchannel("A").getextrema()[0] == 255:
            return region.convert("RGB")
        background = Image.new("RGBA", region.size, (255, 255, 255, 255))
        region = Image.alpha_composite(background, region)
    return region.convert("RGB")


def tile_folder_files(folder: Path) -> list[Path]:
    """The readable image files of a pre-tiled folder, sorted by name; unreadable ones are left out
    and named in a warning (one corrupt tile does not cost the patient)."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
    unreadable = [f for f in files if _image_size(f) is None or not _ends_whole(f)]
    if unreadable:
        log.warning("%s: %d unreadable tile image(s) left out (%s%s); replace them to use them.", folder,
                    len(unreadable), ", ".join(f.name for f in unreadable[:3]), ", ..." if len(unreadable) > 3 else "")
    return [f for f in files if f not in set(unreadable)]


def _ends_whole(path: Path) -> bool:
    """Whether an image file ends as its format ends (PNG: the IEND chunk; JPEG: the end-of-image
    marker; others: it decodes): a tile cut short by a failed copy opens, then fails when read."""
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            tail = handle.read()
        return (b"IEND" in tail) if suffix == ".png" else (b"\xff\xd9" in tail)
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def tile_file_xy(path: Path) -> tuple[int, int]:
    """Level-0 (x, y) parsed from a tile's file name, (-1, -1) when the name carries none."""
    for pattern in _TILE_XY:
        match = pattern.search(path.name)
        if match:
            return int(match.group(1)), int(match.group(2))
    return -1, -1


def read_tile_file(path: str | Path, tile_size_px: int) -> np.ndarray:
    """One ready-made tile as uint8 RGB [tile, tile, 3]."""
    try:
        with Image.open(path) as img:
            tile = img.convert("RGB")
    except OSError as exc:
        raise SlideError(f"{path}: unreadable tile image ({exc}); remove or replace it.") from None
    if tile.size != (tile_size_px, tile_size_px):
        raise SlideError(f"{path}: tile is {tile.size[0]}x{tile.size[1]} px, expected {tile_size_px}x{tile_size_px}.")
    return np.asarray(tile, dtype=np.uint8)
