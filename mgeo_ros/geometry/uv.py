"""MoGe's view-plane uv grid: pixel-centre coordinates in units of the half image diagonal (+x right, +y down)."""
from __future__ import annotations

import math

import numpy as np


def _uv_extent(width: int, height: int, aspect_ratio: float | None) -> tuple[float, float]:
    a = width / height if aspect_ratio is None else aspect_ratio
    span_x = a / math.sqrt(1.0 + a * a)
    span_y = 1.0 / math.sqrt(1.0 + a * a)
    return span_x, span_y


def normalized_view_plane_uv(width: int, height: int, aspect_ratio: float | None = None,
                             dtype=np.float32) -> np.ndarray:
    """H×W×2 numpy grid: u over ±span_x·(W−1)/W, v over ±span_y·(H−1)/H (pixel centres)."""
    sx, sy = _uv_extent(width, height, aspect_ratio)
    u = np.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width, dtype=np.float64)
    v = np.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height, dtype=np.float64)
    uu, vv = np.meshgrid(u, v, indexing='xy')
    return np.stack([uu, vv], axis=-1).astype(dtype)


def normalized_view_plane_uv_torch(width: int, height: int, aspect_ratio: float | None = None,
                                   dtype=None, device=None):
    """Torch twin of `normalized_view_plane_uv` (H×W×2), built on `device` so no host->device copy is needed."""
    import torch

    sx, sy = _uv_extent(width, height, aspect_ratio)
    u = torch.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height, dtype=dtype, device=device)
    vv, uu = torch.meshgrid(v, u, indexing='ij')
    return torch.stack([uu, vv], dim=-1)
