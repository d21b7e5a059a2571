"""Tile predictions as QuPath objects: a GeoJSON FeatureCollection with one locked tile object per tile,
its square in level-0 pixels, its predicted genes and PAM50 class probabilities as measurements and
its PAM50 call as its classification, coloured as in our figures. Drag the file onto the slide open in
QuPath (or File > Import objects); Measure > Show measurement maps colours the tiles by any gene.

Written to what QuPath's reader accepts (qupath/qupath, qupath-core `QuPathTypeAdapters`
PathObjectTypeAdapter.parseObject, MeasurementListTypeAdapter and `GsonTools` PathClassTypeAdapter):
`objectType` "tile" makes a tile object; `isLocked` a boolean; `measurements` an object of name ->
number (NaN written as the string "NaN", which it parses); `classification` an object with `name`
AND `color` [r, g, b] (either alone is refused); geometry a GeoJSON Polygon with a closed ring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import write_text
from hist2rna_tf.config import SUBTYPE_COLOURS

# The PAM50 colours of our figures, as QuPath's [r, g, b].
SUBTYPE_RGB = {name: tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) for name, colour in SUBTYPE_COLOURS.items()}
UNKNOWN_RGB = (0, 0, 0)


def _number(value: float) -> float | str:
    return float(value) if math.isfinite(value) else ("NaN" if math.isnan(value) else
                                                       ("Infinity" if value > 0 else "-Infinity"))


def measurement_name(column: str) -> str:
    """A tile table's column as a QuPath measurement: a gene as itself, `p_LumA` as 'PAM50 LumA probability'."""
    return f"PAM50 {column[2:]} probability" if column.startswith("p_") else column


def tile_objects(tiles: pd.DataFrame, footprint_px: float, genes: list[str]) -> dict:
    """The FeatureCollection of a slide's tiles: `tiles` has level-0 `x`, `y` (each tile's top-left),
    the predicted `genes`, and, when the PAM50 map was made, `call` and `p_<subtype>` columns;
    `footprint_px`: a tile's side in level-0 pixels."""
    probabilities = [c for c in tiles.columns if c.startswith("p_")]
    measured = [*genes, *probabilities]
    values = tiles[measured].to_numpy(np.float64)
    calls = tiles["call"].astype(str).tolist() if "call" in tiles.columns else None
    features = []
    for i, (x, y) in enumerate(tiles[["x", "y"]].to_numpy(np.float64)):
        x1, y1 = round(x + footprint_px, 2), round(y + footprint_px, 2)
        x0, y0 = round(x, 2), round(y, 2)
        properties = {"objectType": "tile", "isLocked": True,
                      "measurements": {measurement_name(c): _number(round(v, 4)) for c, v in zip(measured, values[i])}}
        if calls is not None:
            properties["classification"] = {"name": calls[i], "color": list(SUBTYPE_RGB.get(calls[i], UNKNOWN_RGB))}
        features.append({"type": "Feature",
                         "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1],
                                                                          [x0, y0]]]},
                         "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_tile_objects(path: str | Path, tiles: pd.DataFrame, footprint_px: float, genes: list[str]) -> Path:
    """`tile_objects` as a GeoJSON file, written aside and renamed into place."""
    return write_text(Path(path), json.dumps(tile_objects(tiles, footprint_px, genes), separators=(",", ":")))
