"""The floor in a point map: the dominant plane whose normal is near the up direction a camera's mount angles give.

A camera at a known height above a flat floor knows one metric length; the floor's distance in the predicted points
then gives the scale (height / distance). The plane is found by RANSAC over points below the horizon (fixed seed,
all hypotheses scored at once), then refined by least squares on its inliers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# points on a plane sit near it; points of walls cut by a horizontal slab fill the slab evenly (median = half of it)
MAX_BAND_FILL = 0.4
MAD_TO_SIGMA = 1.4826
SCORE_POINTS = 1024
GRID_POINTS = 16384  # the point map is read on a regular grid of about this many pixels
MIN_WIDTH_RATIO = 0.2  # a floor patch is as wide as about a fifth of its length at least; a thinner one is a strip


def up_in_optical(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World up as a unit vector in the optical frame (x right, y down, z forward) of a camera pitched down by
    `pitch_deg` and rolled by `roll_deg` about its optical axis (positive roll tips the camera's x axis, image right,
    down). Level camera: (0, -1, 0)."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    return np.array([-math.sin(r) * math.cos(p), -math.cos(r) * math.cos(p), -math.sin(p)])


@dataclass(frozen=True)
class GroundPlane:
    """n·p + distance = 0 for floor points p (n the unit normal pointing up, distance > 0 the camera's height in the
    points' units); `inliers` points fit it, `spread` = median |n·p + distance| / distance over them."""

    normal: np.ndarray
    distance: float
    inliers: int
    spread: float
    tilt_deg: float


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


def _plane_through(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (K x 3) and offsets (K,) of the planes through K point triples (degenerate ones: normal 0)."""
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 1e-12)
    return n, -np.einsum('kd,kd->k', n, a)


def find_ground_plane(points: np.ndarray, valid: np.ndarray | None, pitch_deg: float = 0.0, roll_deg: float = 0.0,
                      max_tilt_deg: float = 20.0, *, min_inliers: int = 50, inlier_tol: float = 0.05,
                      hypotheses: int = 256, max_points: int = 4096, seed: int = 0) -> GroundSearch:
    """The floor in an H x W x 3 (or N x 3) point map in the optical frame.

    Candidates are valid finite points below the horizon (n_up·p < 0). A hypothesis counts when its normal is within
    `max_tilt_deg` of up and the camera is above it; its inliers are points within `inlier_tol` x (median candidate
    depth) of it. The best hypothesis (most inliers) is refined by least squares (twice, re-selecting inliers).
    Fewer than `min_inliers` candidates or inliers, or inliers along a strip (a band of a wall near the horizon
    rather than an area): no plane, reason 'plane not found ...'."""
    up = up_in_optical(pitch_deg, roll_deg)
    pts = np.asarray(points)
    mask = None if valid is None else np.asarray(valid, dtype=bool)
    count = pts.size // 3
    stride = max(1, math.isqrt(count // GRID_POINTS))  # a regular grid of the image first: no full-size pass
    if pts.ndim == 3:
        pts = pts[::stride, ::stride]
        mask = None if mask is None else mask[::stride, ::stride]
    elif stride > 1:
        pts = pts.reshape(-1, 3)[::stride * stride]
        mask = None if mask is None else mask.reshape(-1)[::stride * stride]
    p = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
    ok = np.isfinite(p).all(axis=1)
    if mask is not None:
        ok &= mask.reshape(-1)
    p = p[ok]
    p = p[_dot3(p, up.astype(np.float32)) < 0.0]
    if len(p) > max_points:  # an even spread over the image: every k-th candidate
        p = p[np.linspace(0, len(p) - 1, max_points).astype(np.int64)]
    n_cand = len(p)
    if n_cand < max(3, min_inliers):
        return GroundSearch(None, f'plane not found ({n_cand} valid points below the horizon, need {min_inliers})',
                            n_cand)
    p = p.astype(np.float64)
    tol = inlier_tol * float(np.median(np.linalg.norm(p, axis=1)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_cand, size=(hypotheses, 3))
    normals, offsets = _plane_through(p[idx[:, 0]], p[idx[:, 1]], p[idx[:, 2]])
    flip = normals @ up < 0.0
    normals[flip] *= -1.0
    offsets[flip] *= -1.0
    cos_tilt = math.cos(math.radians(max_tilt_deg))
    keep = (normals @ up >= cos_tilt) & (offsets > 0.0)
    if not keep.any():
        return GroundSearch(None, f'plane not found (no plane within {max_tilt_deg:g} deg of up below the camera)',
                            n_cand)
    normals, offsets = normals[keep], offsets[keep]
    scored = p[::max(1, n_cand // SCORE_POINTS)]  # hypotheses are ranked on a quarter; the refinement uses all
    counts = (np.abs(_dot3(scored, normals) + offsets) < tol).sum(axis=0)
    best = int(np.argmax(counts))
    normal, offset = normals[best], float(offsets[best])
    extent = np.zeros(3)
    band = tol
    previous = None
    for _ in range(8):  # least squares on the inliers; the band then narrows to 2.5 sigma of the plane's own noise
        inl = np.abs(_dot3(p, normal) + offset) < band
        if inl.sum() < max(3, min_inliers) or (previous is not None and np.array_equal(inl, previous)):
            break
        previous = inl
        q = p[inl]
        centre = q.mean(axis=0)
        _, extent, vt = np.linalg.svd(q - centre, full_matrices=False)
        normal = vt[2] if vt[2] @ up >= 0 else -vt[2]
        offset = float(-normal @ centre)
        band = min(tol, max(2.5 * MAD_TO_SIGMA * float(np.median(np.abs(_dot3(q, normal) + offset))), 1e-3 * tol))
    inl = np.abs(_dot3(p, normal) + offset) < tol
    n_in = int(inl.sum())
    tilt = math.degrees(math.acos(min(1.0, float(normal @ up))))
    if n_in < min_inliers:
        return GroundSearch(None, f'plane not found ({n_in} points on the best floor candidate, need {min_inliers})',
                            n_cand)
    if offset <= 0.0 or tilt > max_tilt_deg:
        return GroundSearch(None, f'plane not found (the best candidate tilts {tilt:.1f} deg from up, limit '
                            f'{max_tilt_deg:g} deg, or lies above the camera)', n_cand)
    if extent[1] < MIN_WIDTH_RATIO * extent[0]:
        return GroundSearch(None, f'plane not found (the best floor candidate is a strip, {n_in} points along a '
                            'line: a wall edge, not a floor)', n_cand)
    residual = float(np.median(np.abs(_dot3(p[inl], normal) + offset)))
    if residual > MAX_BAND_FILL * tol:
        return GroundSearch(None, f'plane not found (the best floor candidate is a slab through vertical surfaces, '
                            f'not a surface: median distance {residual / tol:.2f} of the tolerance)', n_cand)
    spread = residual / offset
    return GroundSearch(GroundPlane(normal, offset, n_in, spread, tilt), '', n_cand)
