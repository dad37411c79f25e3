"""Batched analytic ray casting in torch. Ray directions are NOT normalized: a camera ray is R @ ((x-cx)/fx,
(y-cy)/fy, 1), so the hit parameter t along it is exactly the z-depth in the optical frame.

Shapes: origins [B,N,3] or [B,1,3], directions [B,N,3], primitives [B,K,...] with a validity mask [B,K];
every `hit_*` returns t [B,N,K] with +inf for a miss.
"""
from __future__ import annotations

import torch

EPS = 1e-4
INF = float('inf')


def _safe(d: torch.Tensor) -> torch.Tensor:
    """Direction components with exact zeros nudged, so slab divisions never produce NaN."""
    return torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)


def hit_boxes(o: torch.Tensor, d: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Boxes rotated about z: rows (cx, cy, cz, hx, hy, hz, yaw). Slab test in each box's frame, entry hit only."""
    c, s = torch.cos(boxes[..., 6])[:, None], torch.sin(boxes[..., 6])[:, None]           # [B,1,K]
    ox = o[..., 0:1] - boxes[:, None, :, 0]
    oy = o[..., 1:2] - boxes[:, None, :, 1]
    oz = o[..., 2:3] - boxes[:, None, :, 2]
    dx, dy, dz = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    px, py = c * ox + s * oy, c * oy - s * ox
    lx, ly = _safe(c * dx + s * dy), _safe(c * dy - s * dx)
    lz = _safe(dz).expand_as(lx)
    t_near = torch.full_like(px, -INF)
    t_far = torch.full_like(px, INF)
    for p, dd, h in ((px, lx, boxes[:, None, :, 3]), (py, ly, boxes[:, None, :, 4]), (oz, lz, boxes[:, None, :, 5])):
        inv = 1.0 / dd
        t1, t2 = (-h - p) * inv, (h - p) * inv
        t_near = torch.maximum(t_near, torch.minimum(t1, t2))
        t_far = torch.minimum(t_far, torch.maximum(t1, t2))
    ok = (t_far >= t_near) & (t_near > EPS) & valid[:, None, :]
    return torch.where(ok, t_near, torch.full_like(t_near, INF))


def hit_cylinders(o: torch.Tensor, d: torch.Tensor, cyl: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Vertical capped cylinders: rows (cx, cy, z0, z1, r)."""
    qx = o[..., 0:1] - cyl[:, None, :, 0]
    qy = o[..., 1:2] - cyl[:, None, :, 1]
    oz = o[..., 2:3]
    dx, dy, dz = d[..., 0:1], d[..., 1:2], _safe(d[..., 2:3])
    z0, z1, r = cyl[:, None, :, 2], cyl[:, None, :, 3], cyl[:, None, :, 4]
    a = (dx * dx + dy * dy).clamp_min(1e-12)
    b = qx * dx + qy * dy
    disc = b * b - a * (qx * qx + qy * qy - r * r)
    t_side = (-b - torch.sqrt(disc.clamp_min(0.0))) / a
    z = oz + t_side * dz
    best = torch.where((disc >= 0) & (t_side > EPS) & (z >= z0) & (z <= z1), t_side, torch.full_like(t_side, INF))
    for zc in (z0, z1):
        tc = (zc - oz) / dz
        cx, cy = qx + tc * dx, qy + tc * dy
        ok = (tc > EPS) & (cx * cx + cy * cy <= r * r)
        best = torch.minimum(best, torch.where(ok, tc, torch.full_like(tc, INF)))
    return torch.where(valid[:, None, :], best, torch.full_like(best, INF))


def hit_spheres(o: torch.Tensor, d: torch.Tensor, sph: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Spheres: rows (cx, cy, cz, r); first intersection in front of the origin."""
    qx = o[..., 0:1] - sph[:, None, :, 0]
    qy = o[..., 1:2] - sph[:, None, :, 1]
    qz = o[..., 2:3] - sph[:, None, :, 2]
    dx, dy, dz = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    a = dx * dx + dy * dy + dz * dz
    b = qx * dx + qy * dy + qz * dz
    r = sph[:, None, :, 3]
    disc = b * b - a * (qx * qx + qy * qy + qz * qz - r * r)
    t = (-b - torch.sqrt(disc.clamp_min(0.0))) / a
    ok = (disc >= 0) & (t > EPS) & valid[:, None, :]
    return torch.where(ok, t, torch.full_like(t, INF))


def exit_box(o: torch.Tensor, d: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a ray starting inside an axis-aligned box [B,6] (lo, hi) leaves it: t [B,N] and face [B,N]
    (0 x-, 1 x+, 2 y-, 3 y+, 4 floor z-, 5 ceiling z+)."""
    dd = _safe(d)
    lo, hi = box[:, None, :3], box[:, None, 3:]
    tt = torch.where(dd > 0, (hi - o) / dd, (lo - o) / dd)
    t, axis = tt.min(-1)
    positive = torch.gather(dd, -1, axis[..., None])[..., 0] > 0
    return t, axis * 2 + positive.long()
