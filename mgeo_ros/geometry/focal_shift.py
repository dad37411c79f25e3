"""Recover the camera focal and the z shift from an affine-invariant point map, exactly as MoGe-2 does.

A MoGe point map is right up to a z shift: the true camera points are (x, y, z + shift). For a pinhole camera centred
on the image, focal * (x, y) / (z + shift) must equal the pixel's view-plane uv (units of the half image diagonal,
see `uv.py`). We fit the single scalar `shift` by least squares on a fixed 64x64 nearest subsample; for each shift
the best focal has a closed form (variable projection), so the fit is 1-D. MoGe runs scipy's LM with ftol=1e-3 from
shift 0; we run a vectorized (over the batch) 1-D Levenberg-Marquardt to convergence, which lands on the same
optimum (agreement ~1e-3 or better) without scipy and in a few milliseconds.

`focal` is relative to the half image diagonal: fx = fy = focal * sqrt(W^2 + H^2) / 2 pixels.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.uv import _uv_extent

__all__ = ['recover_focal_shift', 'focal_from_fov_x', 'fov_x_from_focal', 'normalized_intrinsics_from_focal',
           'intrinsics_from_focal']

_MAX_ITERS = 100


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith('torch') and hasattr(x, 'detach')


def _legacy_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of torch's legacy 'nearest' resize: floor(i * n_in / n_out)."""
    return np.minimum((np.arange(n_out) * n_in) // n_out, n_in - 1)


def _uv_axes(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The u (per column) and v (per row) values of MoGe's view-plane uv grid, without building the H x W grid."""
    sx, sy = _uv_extent(width, height, None)
    u = np.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width)
    v = np.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height)
    return u, v


def _focal_and_jacobian(uv, xyz, shift, valid, focal):
    """Residuals r = f p - uv for the given shifts (f closed-form when `focal` is None), their d/dshift, and f."""
    den = xyz[..., 2] + shift[:, None]
    den = np.where(valid, den, 1.0)
    p = xyz[..., :2] / den[..., None] * valid[..., None]          # [B, N, 2], zero where invalid
    dp = -p / den[..., None]
    if focal is None:
        a = (p * uv).sum((1, 2))
        b = (p * p).sum((1, 2))
        da = (dp * uv).sum((1, 2))
        db = 2.0 * (p * dp).sum((1, 2))
        b_safe = np.where(b > 0, b, 1.0)
        f = np.where(b > 0, a / b_safe, 1.0)
        df = np.where(b > 0, (da * b - a * db) / b_safe ** 2, 0.0)
    else:
        f, df = focal, np.zeros_like(focal)
    r = f[:, None, None] * p - uv * valid[..., None]
    jac = df[:, None, None] * p + f[:, None, None] * dp
    return r, jac, f


def _sq(r):
    c = (r * r).sum((1, 2))
    return np.where(np.isfinite(c), c, np.inf)


def _solve_batch(uv: np.ndarray, xyz: np.ndarray, valid: np.ndarray, focal: np.ndarray | None):
    """1-D LM on the shift for every batch item at once. uv [B,N,2], xyz [B,N,3], valid [B,N] -> (focal, shift)."""
    bsz = xyz.shape[0]
    shift = np.zeros(bsz)
    lam = np.full(bsz, 1e-3)
    active = np.ones(bsz, dtype=bool)
    r, jac, f = _focal_and_jacobian(uv, xyz, shift, valid, focal)
    cost = _sq(r)
    for _ in range(_MAX_ITERS):
        g = (r * jac).sum((1, 2))
        h = (jac * jac).sum((1, 2))
        step = np.where(active & (h > 0), -g / np.where(h > 0, h, 1.0) / (1.0 + lam), 0.0)
        trial = shift + step
        r_t, jac_t, f_t = _focal_and_jacobian(uv, xyz, trial, valid, focal)
        new_cost = _sq(r_t)
        better = active & (new_cost <= cost)
        small = np.abs(step) <= 1e-10 * (1.0 + np.abs(shift))
        flat = better & (cost - new_cost <= 1e-14 * cost)
        shift = np.where(better, trial, shift)
        r, jac = np.where(better[:, None, None], r_t, r), np.where(better[:, None, None], jac_t, jac)
        f = np.where(better, f_t, f)
        cost = np.where(better, new_cost, cost)
        lam = np.where(better, lam * 0.1, lam * 10.0)
        active &= ~(small | flat | (lam > 1e12))
        if not active.any():
            break
    return f, shift


def _recover_subsampled(xyz: np.ndarray, valid, focal, height: int, width: int):
    """xyz [B, h, w, 3] already subsampled from a height x width map (valid alike, or None), focal [B] | None
    -> (focal [B], shift [B]) float64."""
    bsz, sh, sw, _ = xyz.shape
    iy, ix = _legacy_nearest_index(height, sh), _legacy_nearest_index(width, sw)
    u, v = _uv_axes(width, height)
    uv = np.stack(np.broadcast_arrays(u[ix][None, :], v[iy][:, None]), axis=-1).reshape(1, -1, 2)
    xyz = xyz.reshape(bsz, -1, 3).astype(np.float64)
    valid = np.ones(xyz.shape[:2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(bsz, -1)
    valid = valid & np.isfinite(xyz).all(-1)
    xyz = np.where(valid[..., None], xyz, 0.0)
    uv = np.broadcast_to(uv, (bsz, uv.shape[1], 2))
    focal64 = None if focal is None else np.asarray(focal, dtype=np.float64).reshape(bsz)
    f, shift = _solve_batch(uv, xyz, valid, focal64)
    few = valid.sum(1) < 2
    f = np.where(few, 1.0, f) if focal64 is None else focal64
    shift = np.where(few, 0.0, shift)
    return f, shift


def recover_focal_shift(points, mask=None, focal=None, downsample_size: tuple[int, int] = (64, 64)):
    """Focal (relative to the half image diagonal) and z shift that turn an affine-invariant point map into a camera.

    points: numpy [H, W, 3] (-> python floats) or [B, H, W, 3] (-> float64 arrays [B]); torch [B, H, W, 3] or
    [H, W, 3] (-> tensors [B] or 0-d, points' dtype and device; the 64x64 solve runs on CPU). mask: same leading
    shape or [H, W] shared by the batch, bool (None: all pixels). focal: known focal (float or per item) -> only
    the shift is solved and the focal comes back unchanged. Fewer than 2 valid samples -> focal 1 (or the known
    one), shift 0.
    """
    if _is_tensor(points):
        import torch

        single = points.ndim == 3
        pts = points.detach()[None] if single else points.detach()
        iy = torch.as_tensor(_legacy_nearest_index(pts.shape[1], downsample_size[0]), device=pts.device)
        ix = torch.as_tensor(_legacy_nearest_index(pts.shape[2], downsample_size[1]), device=pts.device)
        small = pts[:, iy][:, :, ix].cpu().double().numpy()
        m = None
        if mask is not None:
            if _is_tensor(mask):
                m = mask.detach().expand(pts.shape[:3])[:, iy][:, :, ix].cpu().bool().numpy()
            else:
                m = np.broadcast_to(np.asarray(mask, dtype=bool), pts.shape[:3])
                m = m[:, iy.cpu().numpy()][:, :, ix.cpu().numpy()]
        fk = None
        if focal is not None:
            fk = focal.detach().cpu().double().numpy() if _is_tensor(focal) else np.asarray(focal, dtype=np.float64)
            fk = np.broadcast_to(fk.reshape(-1), (pts.shape[0],))
        f, s = _recover_subsampled(small, m, fk, pts.shape[1], pts.shape[2])
        if focal is not None and _is_tensor(focal):
            f_out = focal.reshape(pts.shape[0]) if focal.numel() == pts.shape[0] else focal.expand(pts.shape[0])
        else:
            f_out = torch.as_tensor(f, dtype=points.dtype, device=points.device)
        s_out = torch.as_tensor(s, dtype=points.dtype, device=points.device)
        return (f_out[0], s_out[0]) if single else (f_out, s_out)

    pts = np.asarray(points)
    if pts.ndim not in (3, 4) or pts.shape[-1] != 3:
        from mgeo_ros.errors import BadInputError
        raise BadInputError(f'points must be [H, W, 3] or [B, H, W, 3], got shape {pts.shape}')
    single = pts.ndim == 3
    pts4 = pts[None] if single else pts
    h, w = pts4.shape[1:3]
    iy, ix = _legacy_nearest_index(h, downsample_size[0]), _legacy_nearest_index(w, downsample_size[1])
    m = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), pts4.shape[:3])[:, iy][:, :, ix]
    fk = None if focal is None else np.broadcast_to(np.asarray(focal, dtype=np.float64).reshape(-1), (pts4.shape[0],))
    f, s = _recover_subsampled(pts4[:, iy][:, :, ix], m, fk, h, w)
    if single:
        return (float(focal) if focal is not None and np.ndim(focal) == 0 else float(f[0])), float(s[0])
    return f, s


# ---- focal <-> camera ------------------------------------------------------------------------------------------
def focal_from_fov_x(fov_x: float, aspect_ratio: float) -> float:
    """MoGe focal (half-diagonal units) of a centred camera with horizontal FOV fov_x (rad) and aspect W/H."""
    return aspect_ratio / math.sqrt(1.0 + aspect_ratio ** 2) / math.tan(fov_x / 2.0)


def fov_x_from_focal(focal: float, aspect_ratio: float) -> float:
    """Horizontal FOV (rad) for a MoGe focal and aspect ratio W/H."""
    return 2.0 * math.atan(aspect_ratio / math.sqrt(1.0 + aspect_ratio ** 2) / focal)


def normalized_intrinsics_from_focal(focal: float, aspect_ratio: float) -> np.ndarray:
    """MoGe's normalized 3x3 (fx relative to width, fy to height, principal point 0.5, 0.5)."""
    k = math.sqrt(1.0 + aspect_ratio ** 2)
    return np.array([[focal / 2.0 * k / aspect_ratio, 0.0, 0.5], [0.0, focal / 2.0 * k, 0.5], [0.0, 0.0, 1.0]])


def intrinsics_from_focal(focal: float, width: int, height: int) -> Intrinsics:
    """Pixel intrinsics for a MoGe focal: fx = fy = focal * diag / 2, principal point at the image centre."""
    return Intrinsics.from_normalized(normalized_intrinsics_from_focal(float(focal), width / height), width, height)
