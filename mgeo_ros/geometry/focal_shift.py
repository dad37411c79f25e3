"""Recover the camera focal and the z shift from an affine-invariant point map, exactly as MoGe-2 does.

A MoGe point map is right up to a z shift: the true camera points are (x, y, z + shift). For a pinhole camera centred
on the image, focal * (x, y) / (z + shift) must equal the pixel's view-plane uv (units of the half image diagonal,
see `uv.py`). We fit the single scalar `shift` by least squares on a fixed 64x64 nearest subsample; for each shift
the best focal has a closed form (variable projection), so the fit is 1-D. MoGe runs scipy's LM with ftol=1e-3 from
shift 0; we run a vectorized (over the batch) 1-D Levenberg-Marquardt to convergence, which lands on the same
optimum (agreement ~1e-3 or better) without scipy. Each iteration reduces the samples to a few sums (see
`_Moments`), so a 64x64 fit takes well under a millisecond.

`focal` is relative to the half image diagonal: fx = fy = focal * sqrt(W^2 + H^2) / 2 pixels.
"""
from __future__ import annotations

import functools
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


def _gradient_and_curvature(f, df, s1a, s2a, s2b, s3b, s4b):
    """(g, h) of `_Moments` from the moments (floats or arrays alike): the one formula both solvers use."""
    return f * df * s2b - f * f * s3b - df * s1a + f * s2a, df * df * s2b - 2.0 * f * df * s3b + f * f * s4b


class _Moments:
    """Everything the fit needs at one shift, from sums over the samples (no per-sample 2-vectors).

    With w = 1 / (z + shift), A = (x, y) . (u, v) and B = |(x, y)|^2 per sample, the residual r = f w (x, y) - (u, v)
    and its derivative along the shift j = (x, y) (df w - f w^2) give
      a = sum A w, b = sum B w^2 (the closed-form focal is a / b), and
      g = sum r.j = f df S2B - f^2 S3B - df S1A + f S2A,  h = sum |j|^2 = df^2 S2B - 2 f df S3B + f^2 S4B,
    where SkA = sum A w^k and SkB = sum B w^k. The cost sum |r|^2 is summed from the residuals themselves, since its
    moment form (U - a^2 / b) cancels catastrophically when the fit is nearly exact.
    """

    __slots__ = ('f', 'df', 'cost', 'g', 'h')

    def __init__(self, data: tuple, shift: np.ndarray, focal: np.ndarray | None) -> None:
        x, y, z, u, v, ab, valid = data
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            powers = np.empty((z.shape[0], 4, z.shape[1]))  # w, w^2, w^3, w^4 per sample
            w = powers[:, 0]
            np.divide(1.0, np.where(valid, z + shift[:, None], 1.0), out=w)  # invalid: x = y = u = v = 0, no effect
            np.multiply(w, w, out=powers[:, 1])
            np.multiply(powers[:, 1], w, out=powers[:, 2])
            np.multiply(powers[:, 1], powers[:, 1], out=powers[:, 3])
            sums = ab @ powers.transpose(0, 2, 1)  # [B, (A, B), (w .. w^4)]: all moments in one matrix product
            s1a, s2a, s2b, s3b, s4b = sums[:, 0, 0], sums[:, 0, 1], sums[:, 1, 1], sums[:, 1, 2], sums[:, 1, 3]
            if focal is None:
                ok = s2b > 0
                b_safe = np.where(ok, s2b, 1.0)
                f = np.where(ok, s1a / b_safe, 1.0)
                df = np.where(ok, (-s2a * s2b + 2.0 * s1a * s3b) / b_safe ** 2, 0.0)
            else:
                f, df = focal, np.zeros_like(focal)
            fw = w * f[:, None]
            rx = fw * x - u
            ry = fw * y - v
            cost = np.einsum('bn,bn->b', rx, rx) + np.einsum('bn,bn->b', ry, ry)
            self.cost = np.where(np.isfinite(cost), cost, np.inf)
            self.g, self.h = _gradient_and_curvature(f, df, s1a, s2a, s2b, s3b, s4b)
        self.f, self.df = f, df


def _solve_batch(uv: np.ndarray, xyz: np.ndarray, valid: np.ndarray, focal: np.ndarray | None):
    """1-D LM on the shift for every batch item at once. uv [B,N,2], xyz [B,N,3] (0 where invalid), valid [B,N]
    -> (focal, shift). Each iteration costs a few passes over N scalars (see `_Moments`)."""
    bsz = xyz.shape[0]
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    u, v = uv[..., 0] * valid, uv[..., 1] * valid
    data = (x, y, z, u, v, np.stack([x * u + y * v, x * x + y * y], axis=1), valid)  # [B, 2, N]
    shift = np.zeros(bsz)
    lam = np.full(bsz, 1e-3)
    active = np.ones(bsz, dtype=bool)
    cur = _Moments(data, shift, focal)
    f, cost, g, h = cur.f, cur.cost, cur.g, cur.h
    for _ in range(_MAX_ITERS):
        with np.errstate(invalid='ignore', divide='ignore'):
            step = np.where(active & (h > 0), -g / np.where(h > 0, h, 1.0) / (1.0 + lam), 0.0)
        trial = shift + step
        new = _Moments(data, trial, focal)
        better = active & (new.cost <= cost)
        small = np.abs(step) <= 1e-10 * (1.0 + np.abs(shift))
        flat = better & (cost - new.cost <= 1e-14 * cost)
        shift = np.where(better, trial, shift)
        f = np.where(better, new.f, f)
        g, h = np.where(better, new.g, g), np.where(better, new.h, h)
        cost = np.where(better, new.cost, cost)
        lam = np.where(better, lam * 0.1, lam * 10.0)
        active &= ~(small | flat | (lam > 1e12))
        if not active.any():
            break
    return f, shift


def _state_single(x, y, z, u, v, ab, powers, shift: float, focal: float | None):
    """`_Moments` for one map whose samples are all valid, in Python floats: (f, cost, g, h)."""
    w = powers[0]
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        np.add(z, shift, out=w)
        np.divide(1.0, w, out=w)
        np.multiply(w, w, out=powers[1])
        np.multiply(powers[1], w, out=powers[2])
        np.multiply(powers[1], powers[1], out=powers[3])
        (s1a, s2a, _, _), (_, s2b, s3b, s4b) = (ab @ powers.T).tolist()
        if focal is None:
            if s2b > 0:
                f = s1a / s2b
                df = (-s2a * s2b + 2.0 * s1a * s3b) / (s2b * s2b)
            else:
                f, df = 1.0, 0.0
        else:
            f, df = focal, 0.0
        fw = w * f
        rx = fw * x - u
        ry = fw * y - v
        cost = float(rx @ rx + ry @ ry)
    if not math.isfinite(cost):
        cost = math.inf
    return f, cost, *_gradient_and_curvature(f, df, s1a, s2a, s2b, s3b, s4b)


def _solve_single(uv: np.ndarray, xyz: np.ndarray, focal: float | None) -> tuple[float, float]:
    """`_solve_batch` for one map of valid samples only (uv [N, 2], xyz [N, 3]): the same iteration in Python
    floats, where a batch of one would spend most of its time in numpy calls on 1-element arrays."""
    x, y, z = (np.ascontiguousarray(xyz[:, i]) for i in range(3))
    u, v = np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1])
    ab = np.stack([x * u + y * v, x * x + y * y])
    powers = np.empty((4, z.size))
    shift, lam = 0.0, 1e-3
    f, cost, g, h = _state_single(x, y, z, u, v, ab, powers, shift, focal)
    for _ in range(_MAX_ITERS):
        step = -g / h / (1.0 + lam) if h > 0 else 0.0  # NaN h (a degenerate start) is not > 0: no step
        trial = shift + step
        f_t, cost_t, g_t, h_t = _state_single(x, y, z, u, v, ab, powers, trial, focal)
        better = cost_t <= cost
        small = abs(step) <= 1e-10 * (1.0 + abs(shift))
        flat = better and cost - cost_t <= 1e-14 * cost
        if better:
            shift, f, cost, g, h = trial, f_t, cost_t, g_t, h_t
            lam *= 0.1
        else:
            lam *= 10.0
        if small or flat or lam > 1e12:
            break
    return f, shift


@functools.lru_cache(maxsize=32)
def _sample_uv(height: int, width: int, sh: int, sw: int) -> np.ndarray:
    """[1, sh*sw, 2] view-plane uv of the nearest-subsampled pixels of a height x width map (read-only, cached)."""
    iy, ix = _legacy_nearest_index(height, sh), _legacy_nearest_index(width, sw)
    u, v = _uv_axes(width, height)
    uv = np.stack(np.broadcast_arrays(u[ix][None, :], v[iy][:, None]), axis=-1).reshape(1, -1, 2)
    uv.setflags(write=False)
    return uv


def _recover_subsampled(xyz: np.ndarray, valid, focal, height: int, width: int):
    """xyz [B, h, w, 3] already subsampled from a height x width map (valid alike, or None), focal [B] | None
    -> (focal [B], shift [B]) float64."""
    bsz, sh, sw, _ = xyz.shape
    uv = _sample_uv(height, width, sh, sw)
    xyz = xyz.reshape(bsz, -1, 3).astype(np.float64)
    valid = np.ones(xyz.shape[:2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(bsz, -1)
    valid = valid & np.isfinite(xyz).all(-1)
    xyz = np.where(valid[..., None], xyz, 0.0)
    uv = np.broadcast_to(uv, (bsz, uv.shape[1], 2))
    focal64 = None if focal is None else np.asarray(focal, dtype=np.float64).reshape(bsz)
    if bsz == 1:  # one map (the node's case): its valid samples only, scalar bookkeeping
        keep = valid[0]
        f1, s1 = _solve_single(uv[0, keep], xyz[0, keep], None if focal64 is None else float(focal64[0]))
        f, shift = np.array([f1]), np.array([s1])
    else:
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
    rows, cols = iy[:, None], ix[None, :]  # one gather of the 64 x 64 samples, not a 64-row copy first
    m = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), pts4.shape[:3])[:, rows, cols]
    fk = None if focal is None else np.broadcast_to(np.asarray(focal, dtype=np.float64).reshape(-1), (pts4.shape[0],))
    f, s = _recover_subsampled(pts4[:, rows, cols], m, fk, h, w)
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
