"""The floor in a point map: its distance below the camera along the up direction a camera's mount angles give.

A camera at a known height above a flat floor knows one metric length; the floor's distance in the predicted points
then gives the scale (height / distance). A network's predicted floor is seldom flat (it bends and tilts by several
degrees, 10 % of its distance and more), and a plane fitted with a free normal follows that tilt to a distance
15-25 % off; the floor's depth along the known up direction stays within a few percent. So the search uses the
mount's up: candidates are points below the horizon whose local surface normal (from their neighbours in the point
map) lies within the tilt limit of up, which drops walls, boxes and other vertical surfaces, and the floor's
distance is the robust location (densest half, then a Tukey biweight) of their log depth below the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mgeo_ros.geometry.robust import robust_location

GRID_POINTS = 16384  # the point map is read on a regular grid of about this many pixels


def up_in_optical(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World up as a unit vector in the optical frame (x right, y down, z forward) of a camera pitched down by
    `pitch_deg` and rolled by `roll_deg` about its optical axis (positive roll tips the camera's x axis, image right,
    down). Level camera: (0, -1, 0)."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    return np.array([-math.sin(r) * math.cos(p), -math.cos(r) * math.cos(p), -math.sin(p)])


@dataclass(frozen=True)
class GroundPlane:
    """n·p + distance = 0 for floor points p (n the mount's unit up direction, distance > 0 the camera's height in
    the points' units); `inliers` points fit it, `spread` = median |n·p + distance| / distance over them."""

    normal: np.ndarray
    distance: float
    inliers: int
    spread: float


@dataclass(frozen=True)
class GroundSearch:
    """A found plane, or None with the reason."""

    plane: GroundPlane | None
    reason: str = ''
    candidates: int = 0


def _dot3(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """p · n for N x 3 points and one normal (3,) or K normals (K x 3 -> N x K), in elementwise numpy: a 3-long
    inner dimension gains nothing from BLAS, whose threads only contend with the node's other work."""
    if n.ndim == 1:
        return p[:, 0] * n[0] + p[:, 1] * n[1] + p[:, 2] * n[2]
    return p[:, 0, None] * n[None, :, 0] + p[:, 1, None] * n[None, :, 1] + p[:, 2, None] * n[None, :, 2]


def _flat_normals(grid: np.ndarray, up: np.ndarray) -> np.ndarray:
    """|cos| of the angle between up and each grid point's surface normal (central differences to its four
    neighbours; NaN where a neighbour is missing and at the border): 1 on a floor, 0 on a wall. The cross product
    is written out per component on contiguous planes (np.cross on H x W x 3 costs five times as much)."""
    cos = np.full(grid.shape[:2], np.nan, dtype=np.float32)
    if grid.shape[0] < 3 or grid.shape[1] < 3:
        return cos
    planes = [np.ascontiguousarray(grid[..., i]) for i in range(3)]
    ax, ay, az = (c[1:-1, 2:] - c[1:-1, :-2] for c in planes)     # along the row
    bx, by, bz = (c[2:, 1:-1] - c[:-2, 1:-1] for c in planes)     # down the column
    nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    u = up.astype(np.float32)
    with np.errstate(invalid='ignore', divide='ignore'):
        cos[1:-1, 1:-1] = np.abs(nx * u[0] + ny * u[1] + nz * u[2]) / np.sqrt(nx * nx + ny * ny + nz * nz)
    return cos


def find_ground_plane(points: np.ndarray, valid: np.ndarray | None, pitch_deg: float = 0.0, roll_deg: float = 0.0,
                      max_tilt_deg: float = 20.0, *, min_inliers: int = 50) -> GroundSearch:
    """The floor in an H x W x 3 (or N x 3) point map in the optical frame.

    Candidates are valid finite points below the horizon (depth below the camera h = -up·p > 0) whose surface
    normal lies within `max_tilt_deg` of up (an H x W map only: an N x 3 cloud has no neighbours, and all its points
    below the horizon are candidates). The floor's distance is the robust location of log h over them; its inliers
    are the candidates the biweight keeps. Fewer than `min_inliers` candidates or inliers: no plane, reason
    'plane not found ...'."""
    up = up_in_optical(pitch_deg, roll_deg)
    up32 = up.astype(np.float32)
    pts = np.asarray(points)
    mask = None if valid is None else np.asarray(valid, dtype=bool)
    count = pts.size // 3
    stride = max(1, math.isqrt(count // GRID_POINTS))  # a regular grid of the image first: no full-size pass
    if pts.ndim == 3:
        grid = np.asarray(pts[::stride, ::stride], dtype=np.float32)
        if mask is not None:
            grid = np.where(mask[::stride, ::stride, None], grid, np.float32(np.nan))
        flat = _flat_normals(grid, up) >= math.cos(math.radians(max_tilt_deg))
        p = grid[flat]
    else:
        p = np.asarray(pts, dtype=np.float32).reshape(-1, 3)[::stride * stride]
        if mask is not None:
            p = p[mask.reshape(-1)[::stride * stride]]
    h = -_dot3(p, up32)
    h = h[np.isfinite(h) & (h > 0.0)]
    n_cand = int(h.size)
    need = max(3, min_inliers)
    if n_cand < need:
        return GroundSearch(None, f'plane not found ({n_cand} valid points below the horizon on surfaces within '
                            f'{max_tilt_deg:g} deg of level, need {need})', n_cand)
    log_h = np.log(h.astype(np.float64))
    centre, inl = robust_location(log_h)
    n_in = int(inl.sum())
    if n_in < need:
        return GroundSearch(None, f'plane not found ({n_in} points on the best floor candidate, need {need})',
                            n_cand)
    distance = math.exp(centre)
    spread = float(np.median(np.abs(h[inl] / distance - 1.0)))
    return GroundSearch(GroundPlane(up, distance, n_in, spread), '', n_cand)
