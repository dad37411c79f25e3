"""Depth <-> points in the ROS optical frame (x right, y down, z forward), integer pixel-centre convention."""
from __future__ import annotations

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics


def pixel_rays(intrinsics: Intrinsics, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Per-column x/z and per-row y/z ratios ((W,), (H,)): points = depth * ray, broadcast without an H×W×2 grid."""
    u = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    return u.astype(dtype), v.astype(dtype)


def decimated_shape(height: int, width: int, stride: int) -> tuple[int, int]:
    """Rows and columns kept when every `stride`-th row and column (starting at 0) is kept (`Intrinsics.decimated`'s
    grid)."""
    return -(-height // stride), -(-width // stride)


def unproject(depth: np.ndarray, intrinsics: Intrinsics, out: np.ndarray | None = None) -> np.ndarray:
    """H×W z-depth (metres, NaN/inf allowed) -> H×W×3 float32 points; `out` reuses a buffer on hot paths."""
    depth = np.asarray(depth)
    h, w = depth.shape
    if (w, h) != (intrinsics.width, intrinsics.height):
        raise ValueError(f'depth is {w}x{h} but intrinsics are for {intrinsics.width}x{intrinsics.height}')
    ru, rv = pixel_rays(intrinsics)
    if out is None:
        out = np.empty((h, w, 3), dtype=np.float32)
    np.multiply(depth, ru[None, :], out=out[..., 0])
    np.multiply(depth, rv[:, None], out=out[..., 1])
    out[..., 2] = depth
    return out


def project(points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """N×3 (or ...×3) points -> ...×2 pixel coordinates (integer pixel-centre convention)."""
    p = np.asarray(points, dtype=np.float64)
    z = p[..., 2]
    return np.stack([p[..., 0] / z * intrinsics.fx + intrinsics.cx, p[..., 1] / z * intrinsics.fy + intrinsics.cy],
                    axis=-1)
