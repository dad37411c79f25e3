"""Surface normals from an organized point map (ROS optical frame), oriented toward the camera like MoGe's GT.

Each pixel averages the unit normals of the (up to) four triangles it forms with its valid 4-neighbours
(up x left, left x down, down x right, right x up): robust at depth edges, where one side of the pixel is missing.
Normals are then flipped where needed so that n . p < 0 (the surface faces the camera at the origin).
"""
from __future__ import annotations

import numpy as np

__all__ = ['normals_from_points']

_EPS = 1e-12


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith('torch') and hasattr(x, 'detach')


def _normals_numpy(points: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Computed in the input's precision (float32 points: float32, 4-5x faster than float64 at 640x480; float64
    and others: float64), component by component: np.cross and np.linalg.norm on H x W x 3 cost twice as much."""
    p = np.asarray(points)
    dtype = np.float32 if p.dtype == np.float32 else np.float64
    h, w = p.shape[-3:-1]
    valid = np.isfinite(p).all(-1)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    pad = np.zeros((*p.shape[:-3], h + 2, w + 2, 3), dtype)
    centre = pad[..., 1:-1, 1:-1, :]
    centre[...] = p
    centre[~valid] = 0.0
    vpad = np.zeros((*p.shape[:-3], h + 2, w + 2), dtype=bool)
    vpad[..., 1:-1, 1:-1] = valid
    around = [(slice(None, -2), slice(1, -1)), (slice(1, -1), slice(None, -2)),  # up, left
              (slice(2, None), slice(1, -1)), (slice(1, -1), slice(2, None))]    # down, right
    diff = [pad[..., rows, cols, :] - centre for rows, cols in around]
    nval = [vpad[..., rows, cols] for rows, cols in around]
    tx, ty, tz = (np.zeros(valid.shape, dtype) for _ in range(3))
    count = np.zeros(valid.shape, dtype=np.int32)
    for k in range(4):
        a, b = diff[k], diff[(k + 1) % 4]
        ok = valid & nval[k] & nval[(k + 1) % 4]
        nx = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
        ny = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
        nz = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
        weight = np.sqrt(nx * nx + ny * ny + nz * nz)
        weight += _EPS
        np.divide(ok, weight, out=weight)  # 1/|n| where the triangle exists, else 0
        tx += nx * weight
        ty += ny * weight
        tz += nz * weight
        count += ok
    norm = np.sqrt(tx * tx + ty * ty + tz * tz)
    good = (count > 0) & (norm > _EPS)
    facing_away = tx * centre[..., 0] + ty * centre[..., 1] + tz * centre[..., 2] > 0
    scale = np.where(good, np.where(facing_away, -1.0, 1.0) / np.maximum(norm, _EPS), np.nan).astype(dtype)
    return np.stack([tx * scale, ty * scale, tz * scale], -1).astype(np.float32)


def _normals_torch(points, mask):
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(points).all(-1)
    if mask is not None:
        valid = valid & mask.to(torch.bool)
    p = torch.where(valid[..., None], points, torch.zeros_like(points))
    pad = F.pad(p.movedim(-1, -3), (1, 1, 1, 1)).movedim(-3, -1)        # [..., H+2, W+2, 3]
    vpad = F.pad(valid.to(p.dtype), (1, 1, 1, 1)) > 0
    centre = pad[..., 1:-1, 1:-1, :]
    nbr = [pad[..., :-2, 1:-1, :], pad[..., 1:-1, :-2, :], pad[..., 2:, 1:-1, :], pad[..., 1:-1, 2:, :]]
    nval = [vpad[..., :-2, 1:-1], vpad[..., 1:-1, :-2], vpad[..., 2:, 1:-1], vpad[..., 1:-1, 2:]]
    total = torch.zeros_like(centre)
    count = torch.zeros_like(valid, dtype=torch.int32)
    for k in range(4):
        ok = valid & nval[k] & nval[(k + 1) % 4]
        n = torch.linalg.cross(nbr[k] - centre, nbr[(k + 1) % 4] - centre, dim=-1)
        n = n / (torch.linalg.norm(n, dim=-1, keepdim=True) + _EPS)
        total = total + n * ok[..., None]
        count = count + ok.to(torch.int32)
    norm = torch.linalg.norm(total, dim=-1, keepdim=True)
    out = total / norm.clamp_min(_EPS)
    sign = torch.where((out * centre).sum(-1, keepdim=True) > 0, -1.0, 1.0).to(out.dtype)
    out = out * sign
    good = (count > 0) & (norm[..., 0] > _EPS)
    return torch.where(good[..., None], out, torch.full_like(out, float('nan')))


def normals_from_points(points, mask=None):
    """Unit normals [..., H, W, 3] of a point map [..., H, W, 3] (numpy -> float32 numpy, torch -> torch with grad).

    Invalid pixels (masked out, non-finite, or without two valid neighbours forming a triangle) are NaN.
    """
    if _is_tensor(points):
        return _normals_torch(points, mask)
    return _normals_numpy(points, mask)
