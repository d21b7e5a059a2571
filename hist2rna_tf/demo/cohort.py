"""The embedded demo cohort: synthetic pyramidal slides assembled from real TCGA-BRCA tiles.

SYNTHETIC. Each slide is a pyramidal tiled TIFF (JPEG, levels 1/4/16, 0.25 um/px, MPP in the TIFF
resolution tags, so OpenSlide reads it) of near-white glass with one blob of tissue made of the 25
real H&E tiles shipped in `data/tcga_tiles` (rotated, flipped, placed off the extraction grid), a
stain cast that is mostly its tissue source site's (six made-up sites named with TCGA codes, `site` in
cohort.csv and clinical.csv; a site's slides share a cast, as a hospital's stainer and scanner make
them; which tumours a slide mixes does not depend on its site), and on some slides a green ink
stroke (an artefact the tissue mask must drop).
Beside each slide lies a QuPath-style GeoJSON tumour annotation (class "Tumor"; some slides also a
"Necrosis" region, some a hole). The real tiles come from four TCGA tumours (6-7 tiles each, which
look different: dense tumour cells in some, stroma in others). Each demo slide mixes the four in its
own proportions (Dirichlet-drawn); the share of each source tumour inside the tumour annotation is
recorded per slide in `cohort.csv` (`share_<barcode>`). Those shares are a property the images
really show; `write_demo_expression` ties the synthetic RNA-seq to them. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hist2rna_tf.atomic import atomic_path, write_text
from hist2rna_tf.config import PAM50_LABEL_COLUMN, PAPER_SUBTYPES
from hist2rna_tf.expression import load_panel
from hist2rna_tf.progress import bar

log = logging.getLogger(__name__)

DEMO_MPP = 0.25
CELL_PX = 224  # the real tiles' size: the tissue is a grid of them, offset from the extraction grid
# The four source tumours (TCGA patient barcodes of the shipped tiles) that demo slides mix.
SOURCES = ("TCGA-A2-A04R", "TCGA-A2-A04Y", "TCGA-A2-A0YG", "TCGA-E2-A15K")
MIX_CONCENTRATION = 0.7  # Dirichlet concentration of a slide's source shares (< 1: often one dominates)
SYNTHETIC_NOTE = ("SYNTHETIC demo cohort: slides assembled from 25 real TCGA-BRCA tiles (shipped in "
                  "hist2rna_tf/data/tcga_tiles); layouts, stain casts and annotations are made up.")


# The demo's tissue source sites: six TCGA-BRCA site codes, the names only (the slides are made up). A slide's
# stain cast is mostly its site's (SITE_CAST_SD), a little its own (SLIDE_CAST_SHARE of a slide's own draw):
# a site's slides look alike, as a hospital's stainer and scanner make them. Slide i lies at site i mod 6.
DEMO_SITES = ("A2", "AR", "BH", "D8", "E2", "GM")
SITE_CAST_SD, SLIDE_CAST_SHARE = 0.15, 0.3


@dataclass(frozen=True)
class DemoSlide:
    slide_id: str
    slide_path: Path
    annotation_path: Path
    source_shares: tuple[float, ...]  # share of each of SOURCES inside the tumour annotation
    site: str = ""  # its tissue source site (DEMO_SITES)


def real_tiles() -> tuple[list[np.ndarray], np.ndarray]:
    """The shipped TCGA tiles (uint8 [224, 224, 3]) and the index in SOURCES of each one's tumour."""
    folder = resources.files("hist2rna_tf") / "data" / "tcga_tiles"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    tiles = [np.asarray(Image.open(folder / name).convert("RGB")) for name in names]
    return tiles, np.array([SOURCES.index(name[:12]) for name in names])


def _blob(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A tissue blob on the cell grid: the union of 2-3 random ellipses, 35-60% of the slide."""
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
    while True:
        mask = np.zeros((rows, cols), bool)
        for _ in range(rng.integers(2, 4)):
            cy, cx = rng.uniform(0.3, 0.7) * rows, rng.uniform(0.3, 0.7) * cols
            ry, rx = rng.uniform(0.2, 0.4) * rows, rng.uniform(0.2, 0.4) * cols
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if 0.35 <= mask.mean() <= 0.6:
            return mask


def _stain_cast(rng: np.random.Generator) -> np.ndarray:
    """Per-channel optical-density gains: a slide's own stain intensity and hue."""
    return 1.0 + rng.normal(0.0, 0.12, size=3)


def demo_site(index: int) -> str:
    return DEMO_SITES[index % len(DEMO_SITES)]


def site_cast(seed: int, site: str) -> np.ndarray:
    """A site's optical-density gains: its stain's intensity and hue, the same for all its slides."""
    return 1.0 + np.random.default_rng([seed, 11, DEMO_SITES.index(site)]).normal(0.0, SITE_CAST_SD, size=3)


def _apply_cast(tile: np.ndarray, gains: np.ndarray) -> np.ndarray:
    od = -np.log((tile.astype(np.float32) + 1.0) / 256.0)
    return np.clip(256.0 * np.exp(-od * gains) - 1.0, 0, 255).astype(np.uint8)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = [[round(cx + rx * np.cos(a), 1), round(cy + ry * np.sin(a), 1)] for a in angles]
    return ring + [ring[0]]


@dataclass(frozen=True)
class Layout:
    """Where a rendered slide's tissue lies: its cell grid's level-0 offset (x, y) and each cell's source
    tumour (an index into SOURCES; -1 where there is glass)."""

    offset: np.ndarray
    cells: np.ndarray  # int [rows, cols]

    def sources_at(self, xy_px: np.ndarray) -> np.ndarray:
        """The source tumour under each level-0 point (x, y) (-1: glass)."""
        col, row = np.floor((np.asarray(xy_px, float) - self.offset) / CELL_PX).astype(int).T
        inside = (row >= 0) & (col >= 0) & (row < self.cells.shape[0]) & (col < self.cells.shape[1])
        found = np.full(len(col), -1)
        found[inside] = self.cells[row[inside], col[inside]]
        return found


def render_slide(index: int, seed: int, tiles: list[np.ndarray], source: np.ndarray,
                 rows: int = 10, cols: int = 13, site: str | None = None) -> tuple[np.ndarray, dict, tuple[float, ...],
                                                                                    Layout]:
    """Level-0 RGB pixels, the GeoJSON annotation, each source tumour's share inside the tumour, and the
    tissue's layout. At a `site` (DEMO_SITES), the stain cast is mostly the site's."""
    rng = np.random.default_rng([seed, index])
    offset = rng.integers(40, CELL_PX - 40, size=2)  # the tissue grid is off the extraction grid
    height_px, width_px = rows * CELL_PX + CELL_PX, cols * CELL_PX + CELL_PX
    glass = rng.normal(243, 2.0, size=(height_px, width_px, 3))
    image = np.clip(glass, 0, 255, out=glass).astype(np.uint8)  # in place: a second 0.2 GB array cost 0.7 s a slide
    tissue = _blob(rng, rows, cols)
    mix = rng.dirichlet(np.full(len(SOURCES), MIX_CONCENTRATION))
    gains = _stain_cast(rng)  # drawn in any case: the slide's layout is the same with or without a site
    if site is not None:
        gains = site_cast(seed, site) + SLIDE_CAST_SHARE * (gains - 1.0)
    drawn = np.full((rows, cols), -1)
    for r, c in zip(*np.nonzero(tissue)):
        drawn[r, c] = rng.choice(len(SOURCES), p=mix)
        tile = tiles[rng.choice(np.flatnonzero(source == drawn[r, c]))]
        tile = np.rot90(tile, k=int(rng.integers(4)))
        tile = tile[:, ::-1] if rng.random() < 0.5 else tile
        y, x = offset[1] + r * CELL_PX, offset[0] + c * CELL_PX
        image[y:y + CELL_PX, x:x + CELL_PX] = _apply_cast(tile, gains)
    # The tumour: an ellipse around the tissue's centre covering most of it.
    rr, cc = np.nonzero(tissue)
    cy, cx = offset[1] + (rr.mean() + 0.5) * CELL_PX, offset[0] + (cc.mean() + 0.5) * CELL_PX
    ry, rx = (np.ptp(rr) + 1) * CELL_PX * 0.42, (np.ptp(cc) + 1) * CELL_PX * 0.42
    tumour = {"type": "Polygon", "coordinates": [_ellipse(cx, cy, rx, ry)]}
    if index % 4 == 1:  # a hole in the tumour (e.g. a duct left out)
        tumour["coordinates"].append(_ellipse(cx, cy, rx * 0.25, ry * 0.25)[::-1])
    features = [_feature(tumour, "Tumor", [255, 0, 0])]
    necrosis = None
    if index % 3 == 2:
        necrosis = _ellipse(cx + rx * 0.4, cy, rx * 0.25, ry * 0.3)
        features.append(_feature({"type": "Polygon", "coordinates": [necrosis]}, "Necrosis", [50, 50, 50]))
    if index % 5 == 3:  # green ink outside the tissue: an artefact
        draw = Image.fromarray(image)
        ImageDraw.Draw(draw).line([(60, 60), (width_px // 3, 90)], fill=(40, 160, 70), width=50)
        image = np.asarray(draw).copy()
    region = _tumour_cells(rows, cols, offset, tumour, necrosis)
    inside = drawn[region & tissue]
    shares = tuple(float((inside == k).mean()) if inside.size else float("nan") for k in range(len(SOURCES)))
    return image, {"type": "FeatureCollection", "features": features}, shares, Layout(offset, drawn)


def _feature(geometry: dict, name: str, color: list[int]) -> dict:
    return {"type": "Feature", "geometry": geometry,
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": color}}}


def _tumour_cells(rows: int, cols: int, offset: np.ndarray, tumour: dict, necrosis) -> np.ndarray:
    """Cells whose centre lies in the tumour (not in its hole, not in necrosis)."""
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)

    def to_cells(ring):
        return [((x - offset[0]) / CELL_PX - 0.5, (y - offset[1]) / CELL_PX - 0.5) for x, y in ring]

    exterior, *holes = tumour["coordinates"]
    draw.polygon(to_cells(exterior), fill=1)
    for ring in holes + ([necrosis] if necrosis else []):
        draw.polygon(to_cells(ring), fill=0)
    return np.asarray(canvas, bool)


def write_pyramid_tiff(image: np.ndarray, path: Path, mpp: float = DEMO_MPP) -> None:
    """A tiled JPEG pyramidal TIFF (downsamples 1, 4, 16) with its MPP in the resolution tags."""
    import tifffile

    resolution = (1e4 / mpp, 1e4 / mpp)  # pixels per centimetre
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        level = image
        for i, factor in enumerate((1, 4, 16)):
            if factor > 1:
                size = (image.shape[1] // factor, image.shape[0] // factor)
                level = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
            tif.write(level, tile=(256, 256), compression="jpeg", compressionargs={"level": 90},
                      photometric="rgb", subfiletype=1 if i else 0,
                      resolution=(resolution[0] / factor, resolution[1] / factor), resolutionunit="CENTIMETER",
                      description=SYNTHETIC_NOTE if i == 0 else None, metadata=None)


def build_demo_cohort(out_dir: str | Path, n_slides: int = 24, seed: int = 0, progress: bool = False,
                      prefix: str = "demo", grid: tuple[int, int] = (10, 13)) -> list[DemoSlide]:
    """Write (or reuse) the demo cohort under `out_dir`: slides/, annotations/, cohort.csv. Slides are
    named `<prefix>-NN`; `grid` is the tissue area in 224-px cells (small grids look like TMA cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from hist2rna_tf.config import usable_cores

    out_dir = Path(out_dir)
    tiles, source = real_tiles()
    built = _built_shares(out_dir, seed)

    def slide(index: int) -> DemoSlide:  # each slide its own seed and files: written in any order, the same bytes
        slide_id = f"{prefix}-{index + 1:02d}"
        slide_path = out_dir / "slides" / f"{slide_id}.tiff"
        annotation_path = out_dir / "annotations" / f"{slide_id}.geojson"
        site = demo_site(index)
        if slide_id in built and slide_path.exists() and annotation_path.exists():
            return DemoSlide(slide_id, slide_path, annotation_path, built[slide_id], site)
        image, annotation, shares, _ = render_slide(index, seed, tiles, source, *grid, site=site)
        write_pyramid_tiff(image, slide_path)
        write_text(annotation_path, json.dumps(annotation, indent=1))
        return DemoSlide(slide_id, slide_path, annotation_path, shares, site)

    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:  # JPEG encoding and resizing release the GIL
        slides = list(bar(pool.map(slide, range(n_slides)), desc="demo slides", unit="slide", total=n_slides,
                          enabled=progress))
    _write_cohort_table(out_dir, slides, seed)
    return slides


SHARE_COLUMNS = tuple(f"share_{s}" for s in SOURCES)


def _built_shares(out_dir: Path, seed: int) -> dict[str, tuple[float, ...]]:
    """Slides an earlier build with the same seed recorded in cohort.csv (reused, not re-rendered)."""
    path = out_dir / "cohort.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        return {row["slide_id"]: tuple(float(row[c]) for c in SHARE_COLUMNS) for row in csv.DictReader(handle)
                if row.get("seed") == str(seed) and all(c in row for c in (*SHARE_COLUMNS, "site"))}


def read_source_shares(cohort_dir: str | Path):
    """slide_id x SOURCES: each demo slide's share of each source tumour (from cohort.csv)."""
    import pandas as pd

    table = pd.read_csv(Path(cohort_dir) / "cohort.csv", index_col="slide_id")
    return table[list(SHARE_COLUMNS)].set_axis(list(SOURCES), axis=1)


def read_sites(cohort_dir: str | Path):
    """slide_id -> its tissue source site (from cohort.csv; empty for a cohort built before sites)."""
    import pandas as pd

    table = pd.read_csv(Path(cohort_dir) / "cohort.csv", index_col="slide_id", dtype={"site": str})
    return table["site"] if "site" in table.columns else pd.Series(dtype=str)


def _write_cohort_table(out_dir: Path, slides: list[DemoSlide], seed: int) -> None:
    with atomic_path(out_dir / "cohort.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "slide", "annotation", *SHARE_COLUMNS, "site", "seed"])
        for s in slides:
            writer.writerow([s.slide_id, s.slide_path.relative_to(out_dir), s.annotation_path.relative_to(out_dir),
                             *(f"{v:.4f}" for v in s.source_shares), s.site, seed])
    (out_dir / "README.txt").write_text(SYNTHETIC_NOTE + "\n" + (__doc__ or ""))


# --- synthetic expression (for training on the demo cohort) --------------------------------------


def gene_model(model_seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The demo genes' made-up "biology", shared by every demo cohort (and its spots): the panel's genes,
    each one's baseline log2 expression (4-12) and loadings on the four source tumours' shares."""
    genes = load_panel("panel")
    model = np.random.default_rng([model_seed, 7])
    baseline = model.uniform(4.0, 12.0, len(genes))
    return genes, baseline, model.normal(0.0, 1.5, (len(SOURCES), len(genes)))


def write_demo_expression(cohort_dir: str | Path, seed: int = 0, model_seed: int = 0) -> tuple[Path, Path]:
    """SYNTHETIC RNA-seq and labels for the demo slides, tied to what the images show.

    Each gene's log2 expression is a gene-specific baseline (4-12) plus gene-specific loadings
    (normal, sd 1.5) on the slide's four source-tumour shares (centred at 1/4; see the module
    docstring), plus noise (sd 0.25); raw values are 2^v - 1, like RSEM. Several independent image
    properties drive the genes, so a model trained on shuffled targets cannot score well by luck of
    sign. `model_seed` fixes baselines and loadings (the same for the training and the external demo
    cohorts); `seed` the noise. The label (for the stratified split) is the dominant source tumour, named like the paper's
    four PAM50 subtypes only so that the paper's pipeline runs unchanged. These numbers say nothing
    about real biology.
    """
    cohort_dir = Path(cohort_dir)
    shares = read_source_shares(cohort_dir)
    genes, baseline, loadings = gene_model(model_seed)
    noise = np.random.default_rng([seed, 8]).normal(0.0, 0.25, (len(shares), len(genes)))
    log2_values = baseline + (shares.to_numpy() - 1.0 / len(SOURCES)) @ loadings + noise
    raw = np.round(2.0 ** log2_values - 1.0, 4)
    expression = cohort_dir / "expression.csv"
    with atomic_path(expression) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PATIENT_ID", *genes])
        for slide_id, values in zip(shares.index, raw):
            writer.writerow([slide_id, *values])
    names = np.array(DEMO_SUBTYPES)[shares.to_numpy().argmax(axis=1)]
    sites = read_sites(cohort_dir).reindex(shares.index).fillna("")
    labels = cohort_dir / "clinical.csv"
    with atomic_path(labels) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PATIENT", PAM50_LABEL_COLUMN, "site", "note"])
        for slide_id, name, site in zip(shares.index, names, sites):
            writer.writerow([slide_id, name, site, "SYNTHETIC"])
    return expression, labels


DEMO_SUBTYPES = PAPER_SUBTYPES  # stand-in names for the dominant source tumour


def write_demo_clinical(cohort_dir: str | Path, seed: int = 0, filename: str = "clinical_external.csv") -> Path:
    """A SYNTHETIC clinical table for a demo cohort (as for the paper's external TMA cohort), drawn
    from the cohort's synthetic log2 expression (`expression.csv`, see `write_demo_expression`):
    ER/PR/HER2 IHC follow ESR1/PGR/ERBB2, Ki67 % and grade follow MKI67, the IHC subtype follows
    the usual surrogate rules (ER or PR positive: LumA when HER2-negative and Ki67 < 20 %, else LumB;
    ER- PR- HER2+: Her2; else Basal), and overall survival is exponential with a higher hazard for
    age > 55, size > 20 mm, node-positive tumours and tumours whose dominant source tumour carries
    the demo's "LumB" label (so the hist2RNA-predicted LumB, which learns that label, is prognostic,
    as in the paper), censored at 5-12 years. Columns use
    the names `clinical.ClinicalColumns` expects. Nothing here is real."""
    import pandas as pd

    cohort_dir = Path(cohort_dir)
    log2 = np.log2(1.0 + pd.read_csv(cohort_dir / "expression.csv", index_col=0))
    z = (log2 - log2.mean()) / log2.std()
    rng = np.random.default_rng([seed, 11])
    n = len(z)

    def noisy(gene, scale=0.6):
        return z[gene].to_numpy() + rng.normal(0, scale, n)

    er, pr, her2 = noisy("ESR1") > -0.1, noisy("PGR") > 0.4, noisy("ERBB2") > 0.9
    proliferation = noisy("MKI67", 0.4)
    ki67 = np.clip(20 + 12 * proliferation + rng.normal(0, 5, n), 1, 90).round(0)
    grade = np.digitize(proliferation + rng.normal(0, 0.5, n), [-0.6, 0.5]) + 1
    luminal = er | pr
    subtype = np.where(luminal, np.where(~her2 & (ki67 < 20), "LumA", "LumB"), np.where(her2, "Her2", "Basal"))
    age = rng.uniform(35, 80, n).round(0)
    size = np.clip(rng.gamma(4.0, 6.0, n), 3, 90).round(0)
    node = rng.random(n) < 0.4
    lumb_label = read_source_shares(cohort_dir).loc[z.index].to_numpy().argmax(axis=1) == DEMO_SUBTYPES.index("LumB")
    hazard = 0.002 * np.exp(1.0 * (age > 55) + 0.5 * (size > 20) + 0.3 * node + 0.8 * lumb_label)
    death = rng.exponential(1 / hazard)
    censor = rng.uniform(60, 144, n)
    table = pd.DataFrame({
        "patient_id": z.index, "os_months": np.minimum(death, censor).round(1), "os_event": (death <= censor).astype(int),
        "grade": grade, "size_mm": size, "age": age, "node_positive": np.where(node, "pos", "neg"),
        "er": np.where(er, "pos", "neg"), "pr": np.where(pr, "pos", "neg"), "her2": np.where(her2, "pos", "neg"),
        "ki67_percent": ki67, "ihc_subtype": subtype, "note": "SYNTHETIC"})
    path = cohort_dir / filename
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
