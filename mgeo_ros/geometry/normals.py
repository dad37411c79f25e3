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
    p = np.asarray(points, dtype=np.float64)
    h, w = p.shape[-3:-1]
    valid = np.isfinite(p).all(-1)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    pad = np.zeros((*p.shape[:-3], h + 2, w + 2, 3))
    pad[..., 1:-1, 1:-1, :] = np.where(valid[..., None], p, 0.0)
    vpad = np.zeros((*p.shape[:-3], h + 2, w + 2), dtype=bool)
    vpad[..., 1:-1, 1:-1] = valid
    centre = pad[..., 1:-1, 1:-1, :]
    nbr = [pad[..., :-2, 1:-1, :], pad[..., 1:-1, :-2, :], pad[..., 2:, 1:-1, :], pad[..., 1:-1, 2:, :]]  # u l d r
    nval = [vpad[..., :-2, 1:-1], vpad[..., 1:-1, :-2], vpad[..., 2:, 1:-1], vpad[..., 1:-1, 2:]]
    total = np.zeros_like(centre)
    count = np.zeros(valid.shape, dtype=np.int32)
    for k in range(4):
        a, b = nbr[k] - centre, nbr[(k + 1) % 4] - centre
        ok = valid & nval[k] & nval[(k + 1) % 4]
        n = np.cross(a, b)
        n = n / (np.linalg.norm(n, axis=-1, keepdims=True) + _EPS)
        total += n * ok[..., None]
        count += ok
    norm = np.linalg.norm(total, axis=-1, keepdims=True)
    out = total / np.maximum(norm, _EPS)
    facing_away = (out * centre).sum(-1) > 0
    out = np.where(facing_away[..., None], -out, out)
    good = (count > 0) & (norm[..., 0] > _EPS)
    return np.where(good[..., None], out, np.nan).astype(np.float32)


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
