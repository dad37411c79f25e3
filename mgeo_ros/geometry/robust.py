"""A robust 1-D location: the centre of the densest half, refined by a Tukey biweight.

Shared by the scale anchors (log of anchor / predicted depth) and the floor search (log of the points' depth below
the camera along up): both need one value that a minority of wrong samples, however far, cannot move.
"""
from __future__ import annotations

import numpy as np

TUKEY_C = 2.5                 # biweight cut in σ: measured best against a fifth of the anchors off by 3x


def shortest_half(x_sorted: np.ndarray) -> tuple[float, float]:
    """(centre, width) of the shortest interval holding half of the sorted values: the densest half, which a
    minority of wrong samples, however far, cannot move much (unlike the median, which every wrong one pushes)."""
    n = x_sorted.size
    h = max(1, (n + 1) // 2)
    widths = x_sorted[h - 1:] - x_sorted[:n - h + 1]
    i = int(np.argmin(widths))
    return 0.5 * float(x_sorted[i] + x_sorted[i + h - 1]), float(widths[i])


def robust_location(values: np.ndarray, c: float = TUKEY_C, max_iter: int = 50,
                    sigma_floor: float = 1e-3) -> tuple[float, np.ndarray]:
    """(location, inlier mask) of `values`: a Tukey biweight location started at the centre of the shortest half,
    with σ from that half's width (2·0.6745σ for normal data) and weights falling to zero at c·σ, iterated
    (reweighted means) to convergence; inliers are the values with non-zero weight.

    Why not the median and one k·MAD cut: with a fifth of the samples off by a factor of three and a spread of
    10-30 % in the rest, the median sits between the two groups and one cut keeps part of the wrong group."""
    r = np.asarray(values, dtype=np.float64)
    centre, width = shortest_half(np.sort(r))
    sigma = max(width / (2.0 * 0.6745), sigma_floor)
    cut = c * sigma
    w = np.empty_like(r)                              # one buffer for every iteration's weights
    for _ in range(max_iter):
        np.subtract(r, centre, out=w)
        w *= 1.0 / cut
        np.square(w, out=w)
        np.subtract(1.0, w, out=w)
        np.maximum(w, 0.0, out=w)
        np.square(w, out=w)
        total = float(w.sum())
        if total <= 0.0:
            break
        new = float(np.dot(w, r)) / total
        done = abs(new - centre) < 1e-9
        centre = new
        if done:
            break
    return centre, np.abs(r - centre) < cut
