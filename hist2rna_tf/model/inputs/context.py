"""A spot's neighbourhood, the input of a head that sees around a spot: beside its own features, the
mean features of the spots (or, on a slide, the tiles) whose patches lie within `context_um` of it,
centre to centre; a spot with none takes its own. 150 um takes a Visium spot's ring of six (100 um
apart); on a slide's 56-um tiles, the 3 or so tiles each way. The same on spots and slides, so a run
trained with it maps whole slides (spatial, predict) with it."""

from __future__ import annotations

import numpy as np

from hist2rna_tf.errors import Hist2RNAError


def neighbourhood_means(features: np.ndarray, corners_px: np.ndarray, radius_px: float) -> np.ndarray:
    """[N, F]: each row's mean of the other rows whose position lies within `radius_px` (its own where none)."""
    from scipy.spatial import cKDTree

    features = np.asarray(features, np.float32)
    tree = cKDTree(np.asarray(corners_px, np.float64))
    pairs = tree.query_pairs(radius_px, output_type="ndarray")
    sums, counts = np.zeros_like(features, np.float64), np.zeros(len(features))
    for a, b in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        np.add.at(sums, a, features[b])
        np.add.at(counts, a, 1)
    alone = counts == 0
    sums[alone], counts[alone] = features[alone], 1
    return (sums / counts[:, None]).astype(np.float32)


def with_context(features: np.ndarray, corners_px: np.ndarray, mpp: float, context_um: float, source,
                 spots: bool = False) -> np.ndarray:
    """`features` [N, F] as a head of `context_um` reads them: unchanged at 0, else [N, 2F], each row's own
    then its neighbourhood's mean (positions `corners_px`, level-0 pixels of `mpp` um; a spot's patch may
    start left of or above the image, `spots`; a pre-tiled folder's tiles without positions are (-1, -1))."""
    if not context_um:
        return np.asarray(features, np.float32)
    corners = np.asarray(corners_px)
    if not spots and (corners == -1).all(axis=1).any():
        raise Hist2RNAError(f"{source}: its tiles carry no positions (a pre-tiled folder without coordinates in the "
                            f"names), and the run's head reads each tile's neighbourhood ({context_um:g} um).")
    means = neighbourhood_means(features, corners, context_um / mpp)
    return np.concatenate([np.asarray(features, np.float32), means], axis=1)
