"""An independent reference for `DepthNormals`, written from its definition on the 3-D points in float64: each
triangle a pixel forms with two valid 4-neighbours (up-left, left-down, down-right, right-up) spans the plane m . q = 1,
m = n / (n . p) for its cross product n; the pixel's normal is -sum(m) / |sum(m)| (NaN without a triangle)."""
from __future__ import annotations

import numpy as np

from mgeo_ros.geometry import unproject


def plane_sum_normals(depth: np.ndarray, intrinsics, mask: np.ndarray | None = None) -> np.ndarray:
    d = np.asarray(depth, np.float64)
    valid = np.isfinite(d) & (d > 0)
    if mask is not None:
        valid &= mask
    p = unproject(np.where(valid, d, np.nan), intrinsics).astype(np.float64)
    h, w = d.shape
    pad = np.full((h + 2, w + 2, 3), np.nan)
    pad[1:-1, 1:-1] = p
    around = [pad[:-2, 1:-1], pad[1:-1, :-2], pad[2:, 1:-1], pad[1:-1, 2:]]  # up, left, down, right
    total = np.zeros((h, w, 3))
    with np.errstate(invalid='ignore', divide='ignore'):
        for k in range(4):
            n = np.cross(around[k] - p, around[(k + 1) % 4] - p)
            m = n / (n * p).sum(-1, keepdims=True)
            total += np.where(np.isfinite(m).all(-1, keepdims=True), m, 0.0)
        out = -total / np.linalg.norm(total, axis=-1, keepdims=True)
    return np.where(valid[..., None] & np.isfinite(out), out, np.nan).astype(np.float32)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between the unit normals of the pixels where both are finite."""
    both = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    return np.degrees(np.arccos(np.clip((a[both].astype(np.float64) * b[both]).sum(-1), -1.0, 1.0)))
