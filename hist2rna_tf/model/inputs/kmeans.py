"""The cluster means SEQUOIA's head reads (inputs/clusters.py): each slide's tile features summarised as
K cluster means, made as their `pre_processing/kmean_features.py` makes them (gevaertlab/sequoia-pub,
MIT): scikit-learn `KMeans(n_clusters=K, random_state=0)` on the slide's tile features, then the mean of
each cluster in label order (0..K-1) -> [K, F]. A slide with fewer tiles than clusters has none (theirs skips it; here
it is named and refused).

Computed once per slide and cached beside its record (`<record's folder>/cluster_means/`), the file's
name keyed by what made it: the record's bytes, K, the k-means settings and scikit-learn's version. A
folder that cannot be written to (a shared, read-only cohort) caches in the user's cache folder instead.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from hist2rna_tf.atomic import atomic_path
from hist2rna_tf.errors import RecordError

log = logging.getLogger(__name__)

CACHE_FOLDER = "cluster_means"
RANDOM_STATE = 0  # kmean_features.py's KMeans(n_clusters=K, random_state=0)


def cluster_means(tiles: np.ndarray, k: int) -> np.ndarray:
    """The mean tile feature of each of `k` k-means clusters of `tiles` [N, F], in label order [k, F]
    (kmean_features.py's loop)."""
    from sklearn.cluster import KMeans

    tiles = np.asarray(tiles)
    labels = KMeans(n_clusters=k, random_state=RANDOM_STATE).fit(tiles).labels_
    return np.stack([tiles[labels == label].mean(axis=0) for label in range(k)]).astype(np.float32)


def cache_key(record_path: str | Path, k: int) -> str:
    """What made a slide's cluster means: its record's bytes, K and the k-means (scikit-learn's version)."""
    import sklearn

    digest = hashlib.sha256(f"k={k};random_state={RANDOM_STATE};sklearn={sklearn.__version__};".encode())
    with open(record_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def _user_cache() -> Path:
    from hist2rna_tf.extract.backbones.weights import cache_folder

    return cache_folder() / CACHE_FOLDER


def cache_file(record_path: str | Path, k: int, folder: Path | None = None) -> Path:
    """Where a slide's cluster means are cached (beside its record, or in `folder`)."""
    record_path = Path(record_path)
    folder = folder if folder is not None else record_path.parent / CACHE_FOLDER
    return folder / f"{record_path.stem}.k{k}-{cache_key(record_path, k)}.npy"


def slide_cluster_file(record_path: str | Path, k: int) -> Path:
    """The file of one slide's cluster means [k, F] (float32 .npy), computed from its record's tile
    features unless cached."""
    from hist2rna_tf.extract.records import read_record

    for folder in (None, _user_cache()):
        path = cache_file(record_path, k, folder)
        if path.is_file():
            return path
    record = read_record(record_path)
    if record.tile_features is None:
        raise RecordError(f"{record_path}: no per-tile features, which SEQUOIA's head clusters; extract again with "
                          "--save-tile-features.")
    if len(record.tile_features) < k:
        raise RecordError(f"{record_path}: {len(record.tile_features)} tiles, fewer than the {k} clusters; give "
                          f"--head-option clusters={len(record.tile_features)} or fewer, or leave the slide out.")
    means = cluster_means(record.tile_features, k)
    for folder in (None, _user_cache()):
        path = cache_file(record_path, k, folder)
        try:
            with atomic_path(path) as tmp:
                np.save(tmp, means)
            return path
        except OSError as exc:
            log.warning("%s: cannot cache cluster means there (%s); caching in %s.", path.parent, exc, _user_cache())
    raise RecordError(f"{record_path}: its cluster means could be cached neither beside it nor in {_user_cache()}; "
                      "make one of them writable.")


def cluster_files(paths, k: int, progress: bool = False) -> list[str]:
    """Each record's cluster-means file (computed once, cached), in order."""
    from hist2rna_tf.progress import bar

    paths = list(paths)
    with bar(total=len(paths), desc=f"cluster means (k={k})", unit="slide", enabled=progress) as slides:
        files = []
        for path in paths:
            files.append(str(slide_cluster_file(path, k)))
            slides.update(1)
    return files
