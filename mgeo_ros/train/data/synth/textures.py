"""Procedural textures evaluated in WORLD units (metres on the surface), so that their feature size is a scale cue.

Every function takes surface coordinates u, v (metres), an integer seed per pixel and returns albedo in [0, 1].
Detail whose size falls below the pixel footprint fades to the mean colour (a cheap mip), so distant texture does
not alias into fake high-frequency structure.
"""
from __future__ import annotations

import torch

from mgeo_ros.train.data.synth.scene import BRICK, FACADE, NOISE, TILES, WOOD

_M31 = 0x7FFFFFFF


def hash3(ix: torch.Tensor, iy: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Integer lattice hash -> float in [0, 1). int64 arithmetic kept below 2^62 so it never overflows (lattice
    coordinates stay far below 2^26 in magnitude and seeds below 2^31)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ ((seed & _M31) * 83492791)
    h = h & _M31
    h = ((h ^ (h >> 13)) * 1274126177) & _M31
    h = h ^ (h >> 16)
    return h.to(torch.float32) * (1.0 / 2147483648.0)


def value_noise(u: torch.Tensor, v: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Smooth lattice noise in [0, 1) with unit feature size."""
    fu, fv = torch.floor(u), torch.floor(v)
    tu, tv = u - fu, v - fv
    tu, tv = tu * tu * (3.0 - 2.0 * tu), tv * tv * (3.0 - 2.0 * tv)
    iu, iv = fu.to(torch.int64), fv.to(torch.int64)
    a, b = hash3(iu, iv, seed), hash3(iu + 1, iv, seed)
    c, d = hash3(iu, iv + 1, seed), hash3(iu + 1, iv + 1, seed)
    return torch.lerp(torch.lerp(a, b, tu), torch.lerp(c, d, tu), tv)


def fbm(u, v, seed, octaves: int = 3) -> torch.Tensor:
    """Fractal noise in [0, 1): octaves of value noise, halving size and amplitude."""
    total, amp, norm = torch.zeros_like(u), 1.0, 0.0
    for k in range(octaves):
        total = total + amp * value_noise(u * (2.0 ** k), v * (2.0 ** k), seed + 7919 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def _fade(footprint: torch.Tensor, feature_m) -> torch.Tensor:
    """1 where a feature of this size spans >= 3 pixels, 0 where it is below one pixel."""
    return ((feature_m / footprint.clamp_min(1e-6) - 1.0) / 2.0).clamp(0.0, 1.0)


def _mix(c1, c2, t):
    return c1 + (c2 - c1) * t[..., None]


def _noise_tex(u, v, seed, size, c1, c2, fp):
    n = fbm(u / size, v / size, seed)
    fine = value_noise(u / (size * 0.15), v / (size * 0.15), seed + 13)
    t = 0.5 + (n - 0.5) * _fade(fp, size) + 0.25 * (fine - 0.5) * _fade(fp, size * 0.15)
    return _mix(c1, c2, t)


def _tiles_tex(u, v, seed, size, c1, c2, fp):
    gu, gv = u / size, v / size
    iu, iv = torch.floor(gu), torch.floor(gv)
    fu, fv = gu - iu, gv - iv
    grout = 0.006 / size
    edge = torch.minimum(torch.minimum(fu, 1.0 - fu), torch.minimum(fv, 1.0 - fv)) < grout
    tile = _mix(c1, c2, hash3(iu.to(torch.int64), iv.to(torch.int64), seed) * 0.6)
    tile = tile * (0.92 + 0.16 * value_noise(u / 0.05, v / 0.05, seed + 3)[..., None] * _fade(fp, 0.05)[..., None])
    grout_col = c1 * 0.45 + 0.12
    edge_w = _fade(fp, 0.012)  # thin grout lines vanish with distance, blending into the tile colour
    sharp = torch.where(edge[..., None], grout_col, tile)
    mean = tile * (1.0 - 2.0 * grout)[..., None] + grout_col * (2.0 * grout)[..., None]
    return torch.lerp(mean, sharp, edge_w[..., None])


def _wood_tex(u, v, seed, size, c1, c2, fp):
    plank_len = size * 8.0
    row = torch.floor(v / size)
    offset = hash3(row.to(torch.int64), torch.zeros_like(row, dtype=torch.int64), seed) * plank_len
    gu = (u + offset) / plank_len
    col = torch.floor(gu)
    fv = v / size - row
    plank = hash3(row.to(torch.int64), col.to(torch.int64), seed + 1)
    grain = torch.sin(6.2831853 * (v / 0.008 + 4.0 * fbm(u / 0.4, v / 0.05, seed + 2)))
    t = 0.25 + 0.5 * plank + 0.25 * grain * _fade(fp, 0.008)
    col_rgb = _mix(c1, c2, t.clamp(0, 1))
    gap = (fv < 0.04) | ((gu - col) < 0.004 / (plank_len / size))
    return torch.where((gap & (_fade(fp, 0.01) > 0.5))[..., None], col_rgb * 0.45, col_rgb)


def _brick_tex(u, v, seed, size, c1, c2, fp):
    bw, bh, mortar = 0.21, 0.07, 0.01   # 0.2 x 0.06 m bricks + 1 cm joints
    row = torch.floor(v / bh)
    su = u + (row.remainder(2.0)) * (bw / 2)
    col = torch.floor(su / bw)
    fu, fv = su - col * bw, v - row * bh
    joint = (fu < mortar) | (fv < mortar)
    brick = _mix(c1, c2, hash3(row.to(torch.int64), col.to(torch.int64), seed))
    brick = brick * (0.9 + 0.2 * value_noise(u / 0.03, v / 0.03, seed + 5)[..., None] * _fade(fp, 0.03)[..., None])
    mortar_col = torch.full_like(brick, 0.72)
    sharp = torch.where(joint[..., None], mortar_col, brick)
    mean = 0.78 * _mix(c1, c2, torch.full_like(u, 0.5)) + 0.22 * mortar_col
    return torch.lerp(mean, sharp, _fade(fp, mortar * 2)[..., None])


def _facade_tex(u, v, seed, size, c1, c2, fp):
    storey = 3.2
    col, row = torch.floor(u / size), torch.floor(v / storey)
    fu, fv = u / size - col, v - row * storey
    half_w = (0.6 / size).clamp(max=0.4)                 # ~1.2 m wide windows
    window = ((fu - 0.5).abs() < half_w) & (fv > 0.9) & (fv < 2.4) & (row >= 0)
    lit = hash3(col.to(torch.int64), row.to(torch.int64), seed + 9)[..., None]
    glass = torch.stack((0.12 + 0.5 * lit[..., 0] ** 6, 0.15 + 0.4 * lit[..., 0] ** 6,
                         0.2 + 0.2 * lit[..., 0] ** 6), -1)
    wall = _noise_tex(u, v, seed, torch.full_like(size, 0.5), c1, c2, fp)
    sharp = torch.where(window[..., None], glass, wall)
    frac = 2 * half_w * 1.5 / storey
    mean = wall * (1 - frac)[..., None] + glass * frac[..., None]
    return torch.lerp(mean, sharp, _fade(fp, 0.3)[..., None])


def albedo(u, v, kind, size, seed, c1, c2, footprint) -> torch.Tensor:
    """Per-pixel albedo [P,3] from per-pixel material parameters (kind [P] int, size [P] m, seed [P] int64,
    colours [P,3]) and pixel footprint [P] in metres."""
    out = torch.empty_like(c1)
    for k, fn in ((NOISE, _noise_tex), (TILES, _tiles_tex), (WOOD, _wood_tex), (BRICK, _brick_tex),
                  (FACADE, _facade_tex)):
        sel = (kind == k).nonzero(as_tuple=True)[0]
        if sel.numel():
            out[sel] = fn(u[sel], v[sel], seed[sel], size[sel], c1[sel], c2[sel], footprint[sel])
    return out.clamp(0.0, 1.0)
