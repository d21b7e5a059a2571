"""Which tiles of a slide are kept: tissue mask, QuPath tumour annotations, the tile grid, the cap.

All masks live on a low-resolution grid (about `mask_mpp` um per mask pixel); `scale` is the number
of level-0 pixels per mask pixel. Tile coordinates are level-0 pixels (top-left corners).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from hist2rna_tf.errors import AnnotationError, SlideError
from hist2rna_tf.extract.slides import read_thumbnail, tile_footprint_px

log = logging.getLogger(__name__)


# --- tissue ---------------------------------------------------------------------------------------


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values (maximises the between-class variance)."""
    hist = np.bincount(values.ravel().astype(np.uint8), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(hist * levels) / np.maximum(weight_low, 1)
    mean_high = ((hist * levels).sum() - np.cumsum(hist * levels)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(np.argmax(between))


def tissue_mask(thumb_rgb: np.ndarray, min_saturation: int = 20) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Tissue is coloured (saturation above Otsu's threshold, and at least `min_saturation` so that a
    blank slide yields nothing); black regions (folds, marker, scanner edges) and green ink are
    obvious artefacts and are removed. Small specks are dropped and holes filled.
    """
    hsv = np.asarray(Image.fromarray(thumb_rgb).convert("HSV"))
    hue, sat, val = hsv[..., 0].astype(int), hsv[..., 1], hsv[..., 2]
    threshold = max(otsu_threshold(sat), min_saturation)
    mask = sat > threshold
    mask &= val > 50  # black: folds, marker, out-of-focus edges
    mask &= ~((hue > 40) & (hue < 130) & (sat > 60))  # green/cyan ink is never H&E
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 16))
    return mask


# --- QuPath annotations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """One polygon: exterior ring then holes, level-0 (x, y) pixels; its QuPath class name."""

    rings: tuple[np.ndarray, ...]
    classification: str


def load_annotations(path: str | Path) -> list[Annotation]:
    """Polygons of a QuPath GeoJSON export (FeatureCollection, Feature, list of Features, geometry)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable GeoJSON file ({exc}); re-export it from QuPath "
                              "(File > Export objects as GeoJSON).") from None
    try:
        annotations = [a for feature in _features(data) for a in _feature_polygons(feature)]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise AnnotationError(f"{path}: malformed GeoJSON ({exc}); expected Polygon/MultiPolygon features with "
                              "[x, y] level-0 pixel coordinates; re-export it from QuPath (File > Export objects "
                              "as GeoJSON).") from None
    if not annotations:
        raise AnnotationError(f"{path}: holds no Polygon or MultiPolygon annotation.")
    return [part for i, a in enumerate(annotations) for part in _valid_parts(a, i, path)]


def _valid_parts(annotation: Annotation, index: int, path: Path) -> list[Annotation]:
    """The annotation as it is when it is a valid polygon; else repaired by shapely's `make_valid`
    (a self-intersecting outline becomes the polygons it encloses), with a warning naming it."""
    from shapely import make_valid
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    exterior, *holes = annotation.rings
    polygon = Polygon(exterior, holes)
    if polygon.is_valid:
        return [annotation]
    repaired = make_valid(polygon)
    parts = [g for g in getattr(repaired, "geoms", [repaired]) if g.geom_type in ("Polygon", "MultiPolygon")]
    polygons = [p for g in parts for p in getattr(g, "geoms", [g]) if p.area > 0]
    log.warning("%s: polygon %d (%s) is not a valid outline (%s); repaired with shapely's make_valid into %d "
                "polygon(s). Check it in QuPath.", path, index + 1, annotation.classification,
                explain_validity(polygon), len(polygons))
    return [Annotation(tuple(np.asarray(ring.coords)[:, :2] for ring in (p.exterior, *p.interiors)),
                       annotation.classification) for p in polygons]


def _features(data) -> list[dict]:
    if isinstance(data, list):
        return [f for item in data for f in _features(item)]
    if not isinstance(data, dict):
        raise ValueError(f"a GeoJSON object is a JSON object, not {type(data).__name__} {str(data)[:40]!r}")
    kind = data.get("type")
    if kind == "FeatureCollection":
        return list(data["features"])
    if kind == "Feature":
        return [data]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise ValueError(f"unexpected GeoJSON type {kind!r}")


def _feature_polygons(feature: dict) -> list[Annotation]:
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise ValueError(f"a feature's properties are a JSON object, not {type(properties).__name__} "
                         f"{str(properties)[:40]!r}")
    name = _class_name(properties)
    return [Annotation(rings, name) for rings in _geometry_polygons(feature["geometry"])]


def _class_name(properties: dict) -> str:
    classification = properties.get("classification")
    if isinstance(classification, dict):
        return str(classification.get("name", "Unclassified"))
    if isinstance(classification, str):
        return classification
    return "Unclassified"


def _geometry_polygons(geometry: dict) -> list[tuple[np.ndarray, ...]]:
    if not isinstance(geometry, dict):
        raise ValueError(f"a geometry is a JSON object, not {type(geometry).__name__} {str(geometry)[:40]!r}")
    kind = geometry["type"]
    if kind == "Polygon":
        polygons = [geometry["coordinates"]]
    elif kind == "MultiPolygon":
        polygons = geometry["coordinates"]
    elif kind == "GeometryCollection":
        return [p for g in geometry["geometries"] for p in _geometry_polygons(g)]
    else:
        return []  # points and lines (QuPath detections, rulers) mark no region
    out = []
    for polygon in polygons:
        if any(isinstance(value, (str, bool)) for ring in polygon for point in ring for value in point):
            raise ValueError("coordinates are numbers ([x, y] level-0 pixels), not text")
        rings = tuple(np.asarray(ring, dtype=np.float64)[:, :2] for ring in polygon)
        if not rings:
            raise ValueError("a polygon needs an outer ring of [x, y] points")
        if any(len(r) < 3 or not np.isfinite(r).all() for r in rings):
            raise ValueError("a polygon ring needs at least 3 finite [x, y] points")
        out.append(rings)
    return out


def annotation_mask(
    annotations: list[Annotation],
    shape: tuple[int, int],
    scale: float,
    slide_size_px: tuple[int, int],
    tumour_classes: tuple[str, ...] = (),
    exclude_classes: tuple[str, ...] = ("Necrosis",),
    source: str | Path = "annotation",
) -> np.ndarray:
    """Rasterise tumour polygons (minus holes and excluded classes) onto a mask of `shape`."""
    _check_inside(annotations, slide_size_px, source)
    include = [a for a in annotations if a.classification not in exclude_classes
               and (not tumour_classes or a.classification in tumour_classes)]
    exclude = [a for a in annotations if a.classification in exclude_classes]
    if not include:
        found = sorted({a.classification for a in annotations})
        wanted = ", ".join(tumour_classes) or f"anything but {', '.join(exclude_classes)}"
        raise AnnotationError(f"{source}: no tumour annotation (classes found: {', '.join(found)}; "
                              f"counted as tumour: {wanted}). Adjust --tumour-classes.")
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for annotation, value in [(a, 1) for a in include] + [(a, 0) for a in exclude]:
        exterior, *holes = annotation.rings
        draw.polygon([tuple(p) for p in exterior / scale], fill=value)
        if value:  # a hole in a tumour polygon is not tumour; a hole in an excluded one stays as it was
            for hole in holes:
                draw.polygon([tuple(p) for p in hole / scale], fill=0)
    return np.asarray(canvas, dtype=bool)


def _check_inside(annotations: list[Annotation], slide_size_px: tuple[int, int], source) -> None:
    width_px, height_px = slide_size_px
    points = np.concatenate([a.rings[0] for a in annotations])
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width_px) & (points[:, 1] >= 0) & (points[:, 1] <= height_px)
    if not inside.any():
        lo, hi = points.min(axis=0), points.max(axis=0)
        raise AnnotationError(
            f"{source}: annotation lies outside the slide (x {lo[0]:.0f}-{hi[0]:.0f}, y {lo[1]:.0f}-{hi[1]:.0f} "
            f"vs slide {width_px}x{height_px} px). Export it from this slide, in level-0 pixel coordinates."
        )


# --- the grid -------------------------------------------------------------------------------------


def grid_tiles(region: np.ndarray, scale: float, footprint_px: float, slide_size_px: tuple[int, int],
               min_fraction: float) -> np.ndarray:
    """Level-0 (x, y) of non-overlapping tiles with at least `min_fraction` of their area in `region`.

    Returns int64 [N, 2], in row-major grid order.
    """
    width_px, height_px = slide_size_px
    cols = int(width_px // footprint_px)
    rows = int(height_px // footprint_px)
    if cols == 0 or rows == 0:
        return np.zeros((0, 2), dtype=np.int64)
    integral = np.pad(region.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    xs = np.arange(cols) * footprint_px
    ys = np.arange(rows) * footprint_px
    x0 = np.clip(np.round(xs / scale).astype(int), 0, region.shape[1])
    x1 = np.clip(np.round((xs + footprint_px) / scale).astype(int), 0, region.shape[1])
    y0 = np.clip(np.round(ys / scale).astype(int), 0, region.shape[0])
    y1 = np.clip(np.round((ys + footprint_px) / scale).astype(int), 0, region.shape[0])
    x1 = np.maximum(x1, np.minimum(x0 + 1, region.shape[1]))
    y1 = np.maximum(y1, np.minimum(y0 + 1, region.shape[0]))
    inside = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    area = np.maximum((y1 - y0)[:, None] * (x1 - x0)[None, :], 1)
    keep_rows, keep_cols = np.nonzero(inside / area >= min_fraction)
    return np.stack([np.round(xs[keep_cols]), np.round(ys[keep_rows])], axis=1).astype(np.int64)


def spread_sample(coords_px: np.ndarray, max_tiles: int) -> np.ndarray:
    """At most `max_tiles` coordinates, evenly spaced along a Z-order curve: deterministic and spatially
    spread (every part of the region keeps its share), in Z order."""
    if len(coords_px) <= max_tiles:
        return coords_px
    order = np.argsort(_morton_codes(coords_px), kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, max_tiles)).astype(int))
    return coords_px[order[picks]]


def _morton_codes(coords_px: np.ndarray) -> np.ndarray:
    span = np.maximum(coords_px.max(axis=0) - coords_px.min(axis=0), 1)
    cells = ((coords_px - coords_px.min(axis=0)) * 65535 // span).astype(np.uint64)
    code = np.zeros(len(coords_px), dtype=np.uint64)
    for bit in range(16):
        for axis in (0, 1):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit + axis)
    return code


def select_tiles(slide, mpp: float, tiles, annotation_path: str | Path | None, source: str | Path
                 ) -> tuple[np.ndarray, dict]:
    """Tile coordinates for one opened slide under a TileConfig, plus a summary of the selection."""
    thumb, scale = read_thumbnail(slide, mpp, tiles.mask_mpp)
    region = tissue_mask(thumb)
    if not region.any():
        raise SlideError(f"{source}: no tissue found (the thumbnail is blank or all artefact). "
                         "Check the slide, or remove it from the cohort.")
    if annotation_path is not None:
        annotations = load_annotations(annotation_path)
        region &= annotation_mask(annotations, region.shape, scale, slide.dimensions,
                                  tiles.tumour_classes, tiles.exclude_classes, annotation_path)
        if not region.any():
            raise SlideError(f"{source}: the tumour annotation {annotation_path} covers no tissue; "
                             "check that it belongs to this slide.")
    footprint_px = tile_footprint_px(tiles.tile_size_px, tiles.target_mpp, mpp)
    width_px, height_px = slide.dimensions
    if footprint_px > min(width_px, height_px):
        raise SlideError(f"{source}: a {tiles.tile_size_px}-px tile at {tiles.target_mpp:g} um/px covers "
                         f"{tiles.tile_size_um / 1000:.3g} mm, more than the slide's {width_px * mpp / 1000:.3g} x "
                         f"{height_px * mpp / 1000:.3g} mm; give a finer --target-mpp (the paper: 0.25) or a smaller "
                         "--tile-px.")
    candidates = grid_tiles(region, scale, footprint_px, slide.dimensions, tiles.min_region_fraction)
    if len(candidates) == 0:
        raise SlideError(f"{source}: no {tiles.tile_size_um:.0f} um tile has {tiles.min_region_fraction:.0%} "
                         "of its area in the tissue/tumour region; lower --min-region-fraction.")
    chosen = spread_sample(candidates, tiles.max_tiles)
    summary = {"candidate_tiles": int(len(candidates)), "tiles": int(len(chosen)),
               "region_mm2": float(region.sum() * (scale * mpp / 1000) ** 2)}
    return chosen, summary
