"""Real-data depth refinement (MoGe-2's pipeline): local mismatch filtering against a teacher's prediction, then
log-space Poisson completion of the holes guided by the teacher's log-depth gradients.

Real sensor depth is wrong in structured ways: edges bleed (foreground depth smeared over background pixels),
thin structures vanish, and there are holes. A teacher trained on synthetic data gets edges and shapes right but
not the absolute scale. So we trust the sensor's values and the teacher's shapes:

1. **Mismatch filter.** The frame is tiled into patches (two tilings, offset by half a patch). In each patch the
   teacher is scale-aligned to the sensor depth by exact truncated-L1 (ROE) with weights 1/d:
   s = argmin Σ_i min(trunc, |s·t_i − d_i| / d_i). A pixel's aligned relative error under a tiling is
   e = |s·t − d| / d; it is removed when min(e_tiling1, e_tiling2) > threshold, i.e. no local alignment explains it.
2. **Poisson completion.** Unknown x = log depth on the holes (removed + originally missing pixels where the
   teacher is valid). For each hole pixel i with 4-neighbours j (inside the frame, teacher valid):
   Σ_j (x_i − x_j) = Σ_j (g_i − g_j), g = log teacher, known x_j moved to the right side (Dirichlet boundary).
   A weak tie λ·(x_i − (g_i + log s_global)) keeps components without any known neighbour well posed.
   Solved with scipy.sparse + spsolve; depth = exp(x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch


@dataclass
class RefineConfig:
    patch: int = 16                   # patch side (pixels) of the local alignment tiles
    threshold: float = 0.05           # aligned relative error above which a pixel is removed
    trunc: float = 0.2                # ROE truncation of the per-patch alignment (relative error units)
    min_valid: int = 8                # patches with fewer valid pixels keep their pixels unfiltered
    fill: bool = True                 # run the Poisson completion
    anchor_weight: float = 1e-3       # λ of the weak tie to the globally aligned teacher


@dataclass
class RefineResult:
    depth: np.ndarray                 # H×W metres, NaN where still unknown
    removed: np.ndarray               # bool: sensor pixels dropped by the mismatch filter
    filled: np.ndarray                # bool: pixels completed by the Poisson solve
    stats: dict = field(default_factory=dict)


def _tile_scales(depth: np.ndarray, teacher: np.ndarray, valid: np.ndarray, patch: int, offset: int,
                 trunc: float, min_valid: int) -> np.ndarray:
    """Per-pixel scale of the tile containing it (tiling shifted by `offset`); NaN where the tile is too empty."""
    from mgeo_ros.geometry.alignment import align_depth_scale

    h, w = depth.shape
    pad_top, pad_left = offset, offset
    ph = math.ceil((h + pad_top) / patch) * patch
    pw = math.ceil((w + pad_left) / patch) * patch

    def tiles(a: np.ndarray, fill) -> np.ndarray:
        out = np.full((ph, pw), fill, dtype=a.dtype)
        out[pad_top:pad_top + h, pad_left:pad_left + w] = a
        return out.reshape(ph // patch, patch, pw // patch, patch).transpose(0, 2, 1, 3).reshape(-1, patch * patch)

    d = tiles(np.where(valid, depth, 1.0).astype(np.float64), 1.0)
    t = tiles(np.where(valid, teacher, 1.0).astype(np.float64), 1.0)
    m = tiles(valid, False)
    weight = np.where(m, 1.0 / d, 0.0)
    s = align_depth_scale(torch.from_numpy(t), torch.from_numpy(d), torch.from_numpy(weight), trunc).numpy()
    s = np.where((m.sum(axis=1) >= min_valid) & (s > 0), s, np.nan)
    grid = np.repeat(np.repeat(s.reshape(ph // patch, pw // patch), patch, axis=0), patch, axis=1)
    return grid[pad_top:pad_top + h, pad_left:pad_left + w]


def mismatch_filter(depth: np.ndarray, teacher: np.ndarray, cfg: RefineConfig = RefineConfig()) -> np.ndarray:
    """Bool mask of the sensor pixels to remove (see the module docstring, step 1)."""
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(teacher) & (teacher > 0)
    errors = []
    for offset in (0, cfg.patch // 2):
        s = _tile_scales(depth, teacher, valid, cfg.patch, offset, cfg.trunc, cfg.min_valid)
        with np.errstate(invalid='ignore', divide='ignore'):
            e = np.abs(s * teacher - depth) / depth
        errors.append(np.where(np.isfinite(e), e, 0.0))    # tiles without enough support never remove
    return valid & (np.minimum(errors[0], errors[1]) > cfg.threshold)


def global_scale(depth: np.ndarray, teacher: np.ndarray, valid: np.ndarray) -> float:
    """Robust teacher->sensor scale over the whole frame: median of d/t (1 when nothing is valid)."""
    if not valid.any():
        return 1.0
    return float(np.median(depth[valid] / teacher[valid]))


def poisson_fill(depth: np.ndarray, teacher: np.ndarray, known: np.ndarray, holes: np.ndarray,
                 anchor_weight: float = 1e-3) -> np.ndarray:
    """Log-space Poisson completion of `holes` (see the module docstring, step 2). Returns the completed depth."""
    h, w = depth.shape
    out = np.where(known, depth, np.nan).astype(np.float64)
    teacher_ok = np.isfinite(teacher) & (teacher > 0)
    holes = holes & teacher_ok & ~known
    n = int(holes.sum())
    if n == 0:
        return out
    g = np.log(np.where(teacher_ok, teacher, 1.0))
    log_s = math.log(global_scale(depth, teacher, known & teacher_ok))
    xk = np.log(np.where(known, depth, 1.0))
    index = np.full((h, w), -1, dtype=np.int64)
    index[holes] = np.arange(n)
    hy, hx = np.nonzero(holes)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, anchor_weight)]
    rhs = anchor_weight * (g[hy, hx] + log_s)
    diag = np.zeros(n)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = hy + dy, hx + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ny_c, nx_c = np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)
        usable = inside & teacher_ok[ny_c, nx_c] & (holes[ny_c, nx_c] | known[ny_c, nx_c])
        diag += usable
        guide = np.where(usable, g[hy, hx] - g[ny_c, nx_c], 0.0)
        rhs += guide
        neighbour_hole = usable & holes[ny_c, nx_c]
        rows.append(np.nonzero(neighbour_hole)[0])
        cols.append(index[ny_c, nx_c][neighbour_hole])
        vals.append(-np.ones(int(neighbour_hole.sum())))
        neighbour_known = usable & known[ny_c, nx_c]
        rhs += np.where(neighbour_known, xk[ny_c, nx_c], 0.0)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    x = spla.spsolve(a.tocsc(), rhs)
    out[hy, hx] = np.exp(x)
    return out


def refine_depth(depth: np.ndarray, teacher: np.ndarray, cfg: RefineConfig = RefineConfig()) -> RefineResult:
    """Filter then complete one frame. depth: sensor metres (NaN/0 invalid); teacher: H×W depth up to scale."""
    depth = np.asarray(depth, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    if depth.shape != teacher.shape:
        raise ValueError(f'depth {depth.shape} and teacher {teacher.shape} differ in shape')
    valid_in = np.isfinite(depth) & (depth > 0)
    removed = mismatch_filter(depth, teacher, cfg)
    known = valid_in & ~removed
    if cfg.fill:
        refined = poisson_fill(depth, teacher, known, ~known, cfg.anchor_weight)
    else:
        refined = np.where(known, depth, np.nan)
    filled = np.isfinite(refined) & ~known
    stats = {'valid_in': int(valid_in.sum()), 'removed': int(removed.sum()), 'filled': int(filled.sum()),
             'valid_out': int(np.isfinite(refined).sum()), 'pixels': int(depth.size)}
    return RefineResult(depth=refined.astype(np.float32), removed=removed, filled=filled, stats=stats)
