"""Independent references for `DepthNormals` on the 3-D points in float64. Each triangle a pixel forms with two valid
4-neighbours (up-left, left-down, down-right, right-up) has the cross product n. `plane_sum_normals` is DepthNormals'
own definition: the triangle spans the plane m . q = 1, m = n / (n . p), and the pixel's normal is
-sum(m) / |sum(m)|. `mean_unit_normals` weighs the triangles equally: the mean of n / |n|, turned to face the camera.
Both are NaN without a triangle."""
from __future__ import annotations

import numpy as np

from mgeo_ros.geometry import unproject


def _triangles(depth: np.ndarray, intrinsics, mask: np.ndarray | None):
    """(valid [H, W], points p [H, W, 3], the cross product of each of the four triangles [4, H, W, 3]), float64."""
    d = np.asarray(depth, np.float64)
    valid = np.isfinite(d) & (d > 0)
    if mask is not None:
        valid &= mask
    p = unproject(np.where(valid, d, np.nan), intrinsics).astype(np.float64)
    h, w = d.shape
    pad = np.full((h + 2, w + 2, 3), np.nan)
    pad[1:-1, 1:-1] = p
    around = [pad[:-2, 1:-1], pad[1:-1, :-2], pad[2:, 1:-1], pad[1:-1, 2:]]  # up, left, down, right
    return valid, p, np.stack([np.cross(around[k] - p, around[(k + 1) % 4] - p) for k in range(4)])


def plane_sum_normals(depth: np.ndarray, intrinsics, mask: np.ndarray | None = None) -> np.ndarray:
    valid, p, crossed = _triangles(depth, intrinsics, mask)
    with np.errstate(invalid='ignore', divide='ignore'):
        m = crossed / (crossed * p).sum(-1, keepdims=True)
        total = np.where(np.isfinite(m).all(-1, keepdims=True), m, 0.0).sum(0)
        out = -total / np.linalg.norm(total, axis=-1, keepdims=True)
    return np.where(valid[..., None] & np.isfinite(out), out, np.nan).astype(np.float32)


def mean_unit_normals(depth: np.ndarray, intrinsics, mask: np.ndarray | None = None) -> np.ndarray:
    valid, p, crossed = _triangles(depth, intrinsics, mask)
    with np.errstate(invalid='ignore', divide='ignore'):
        unit = crossed / np.linalg.norm(crossed, axis=-1, keepdims=True)
        total = np.where(np.isfinite(unit).all(-1, keepdims=True), unit, 0.0).sum(0)
        out = total / np.linalg.norm(total, axis=-1, keepdims=True)
        out = np.where((out * p).sum(-1, keepdims=True) > 0, -out, out)
    return np.where(valid[..., None] & np.isfinite(out), out, np.nan).astype(np.float32)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between the unit normals of the pixels where both are finite."""
    both = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    return np.degrees(np.arccos(np.clip((a[both].astype(np.float64) * b[both]).sum(-1), -1.0, 1.0)))
