"""A `hist2rna spatial` folder in one place (as model/runs.py is for a run folder): every file name it
holds, written by spatial.py and read by the report, the command line and the demo.

  <out>/
    <slide>_tiles.csv        tiles x genes of predicted log2(1+RSEM), level-0 x, y; PAM50 call, probabilities
    <slide>_tiles.geojson    the same tiles as QuPath tile objects (qupath.py)
    <slide>_PAM50.png        each tile's PAM50 call over the slide's thumbnail
    <slide>_<gene>.png       a mapped gene's predicted expression over the thumbnail
    <slide>_attention.png    (heads that read every tile) each tile's attention in the slide's bag
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TILES, OBJECTS, SUBTYPES = "_tiles.csv", "_tiles.geojson", "PAM50"


@dataclass(frozen=True)
class SpatialFolder:
    path: Path

    def tiles(self, slide_id: str) -> Path:
        return Path(self.path) / f"{slide_id}{TILES}"

    def objects(self, slide_id: str) -> Path:
        return Path(self.path) / f"{slide_id}{OBJECTS}"

    def map(self, slide_id: str, gene: str = SUBTYPES) -> Path:
        """A gene's map, or (the default) the PAM50 calls' map."""
        return Path(self.path) / f"{slide_id}_{gene}.png"

    def slides(self) -> list[str]:
        """The slides mapped (those with a tiles table), sorted."""
        return sorted(p.name.removesuffix(TILES) for p in Path(self.path).glob(f"*{TILES}"))

    def object_files(self) -> dict[str, Path]:
        """slide -> its QuPath objects."""
        return {slide: self.objects(slide) for slide in self.slides() if self.objects(slide).is_file()}

    def maps(self) -> list[tuple[str, str, Path]]:
        """(slide, gene or "PAM50", PNG) of every map, by slide then name; a map's slide is the mapped slide
        whose id its name starts with (a slide id may hold '_')."""
        slides = sorted(self.slides(), key=len, reverse=True)
        found = []
        for png in sorted(Path(self.path).glob("*.png")):
            slide = next((s for s in slides if png.stem.startswith(f"{s}_")), None)
            if slide is not None:
                found.append((slide, png.stem[len(slide) + 1:], png))
        return sorted(found)
