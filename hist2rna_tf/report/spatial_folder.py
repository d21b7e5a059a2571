"""A `hist2rna spatial` folder in one place (as model/runs.py is for a run folder): every file name it
holds, written by spatial.py and read by the report, the command line and the demo; and the report's
captions of its maps and QuPath objects.

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

from hist2rna_tf.errors import Hist2RNAError
from hist2rna_tf.model import runs

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


# --- the report's captions of a folder's maps and objects ---

def map_files(folder: str | Path) -> dict[str, Path]:
    """Caption -> GeoJSON for every slide's QuPath objects in a `hist2rna spatial` folder (for the report)."""
    return {f"{slide}: every tile as a QuPath object (its predicted genes and PAM50 probabilities as measurements, "
            "its PAM50 call as its class); drag the file onto the slide open in QuPath, or File > Import objects": path
            for slide, path in SpatialFolder(Path(folder)).object_files().items()}


def map_figures(folder: str | Path, roles: dict[str, str] | None = None) -> dict[str, Path]:
    """Title -> PNG for every map in a `hist2rna spatial` folder (for the report); `roles`: patient ->
    'train' or 'test' (the run's split), said in each title."""
    from hist2rna_tf.barcodes import patient_id

    maps = SpatialFolder(Path(folder)).maps()
    if not maps:
        raise Hist2RNAError(f"{folder}: no PNG maps; run `hist2rna spatial ... --out {folder}` first.")
    said = {"train": " (a training patient)", "test": " (held out)"}
    return {f"Spatial map (beyond the paper): {slide}{said.get((roles or {}).get(patient_id(slide)), '')}, "
            f"{'PAM50 call per tile' if what == SUBTYPES else 'predicted ' + what}": path for slide, what, path in maps}


def roles_of(run: Path) -> dict[str, str]:
    """patient -> 'train' / 'test' of a run (none for a run without a split, e.g. imported)."""
    path = runs.split_path(run)
    return runs.read_split(run).to_dict() if path.is_file() else {}
