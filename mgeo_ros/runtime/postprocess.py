"""The numpy/OpenCV pieces of the frame stage (runtime/frame_stage.py), shared by every backend so all of them give
the same result for a frame: mask threshold and focal/shift recovery (MoGe) on the network grid — only the shift
when intrinsics are known (`recover`); metric depth = (z + shift) · metric scale (`network_depth`); upsampling to the
frame size with NaN where invalid; the normal head's map upsampled and renormalized (`unit_normals_at`).

Upsampling is *normalized bilinear*: depth·valid and valid are resized bilinearly and divided, so an output pixel
blends only valid network pixels (no depth bleeding into holes or across the mask border). The output mask is
"bilinear coverage of valid ≥ 0.5", which behaves like a centred nearest-neighbour resize of the mask; where it is
true the coverage is > 0, so the division is safe.

The mask probability (the per-pixel confidence) is brought to the frame size the same way, on both sides of the
mask border: a valid output pixel blends only valid network pixels, an invalid one only invalid pixels
(`upsample_confidence`), so a confident surface does not lend its confidence to the sky beside it or the reverse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mgeo_ros.geometry import Intrinsics
from mgeo_ros.geometry.focal_shift import intrinsics_from_focal, recover_focal_shift
from mgeo_ros.runtime.backends.base import RawOutput


def upsample_valid(values: np.ndarray, valid: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized bilinear resize of h×w(×c) `values` over `valid` to width×height (see the module docstring).

    Returns (values float32 with NaN outside the new mask, new mask bool).
    """
    out, mask_up, _ = _upsample_valid(values, valid, width, height)
    return out, mask_up


def _upsample_valid(values: np.ndarray, valid: np.ndarray, width: int, height: int,
                    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`upsample_valid` plus the bilinear coverage of `valid` at width×height, which the confidence reuses. The
    division and the NaN fill are done in the resized buffer itself (no frame-sized temporaries). `out`: the
    (values, mask, coverage) arrays to write into (a caller's buffers kept between frames; 2-D values only)."""
    summed_out, mask_out, coverage_out = (None, None, None) if out is None else out
    weight = valid.astype(np.float32)
    coverage = cv2.resize(weight, (width, height), dst=coverage_out, interpolation=cv2.INTER_LINEAR)
    masked = np.where(valid[..., None] if values.ndim == 3 else valid, values, 0.0).astype(np.float32)
    summed = cv2.resize(masked, (width, height), dst=summed_out, interpolation=cv2.INTER_LINEAR)
    if summed.ndim == 2 and values.ndim == 3:  # cv2 drops a trailing channel axis of size 1
        summed = summed[..., None]
    mask_up = np.greater_equal(coverage, 0.5, out=mask_out)
    with np.errstate(invalid='ignore', divide='ignore'):
        np.divide(summed, coverage[..., None] if summed.ndim == 3 else coverage, out=summed)
    outside = ~mask_up
    np.copyto(summed, np.float32(np.nan), where=outside[..., None] if summed.ndim == 3 else outside)
    return summed, mask_up, coverage


def upsample_confidence(probability: np.ndarray, valid: np.ndarray, width: int, height: int,
                        coverage: np.ndarray | None = None, mask: np.ndarray | None = None,
                        out: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The h×w mask probability at width×height, float32 in [0, 1], blended on each side of the mask border apart.

    Output pixels inside the upsampled mask (bilinear coverage of `valid` ≥ 0.5, the rule `upsample_valid` uses)
    average only valid network pixels; the others only invalid ones (their coverage is then > 0.5). `coverage`:
    that bilinear coverage when the caller has it already (the depth's upsampling made it); it is not modified.
    `mask`: coverage >= 0.5 when the caller has it; `out`: (result, scratch) float32 width×height arrays to use.
    """
    # fmax then fmin: NaN and -inf -> 0, +inf -> 1, the rest clipped to [0, 1] (= nan_to_num then clip, 2 passes)
    prob = np.fmin(np.fmax(np.asarray(probability, np.float32), np.float32(0.0)), np.float32(1.0))
    if prob.shape == (height, width):
        return prob
    weight = valid.astype(np.float32)
    if coverage is None:
        coverage = cv2.resize(weight, (width, height), interpolation=cv2.INTER_LINEAR)
    result, scratch = (None, None) if out is None else out
    inside = cv2.resize(prob * weight, (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR)
    out = cv2.resize(prob, (width, height), dst=result, interpolation=cv2.INTER_LINEAR)
    out -= inside  # the invalid side's share
    mask_up = coverage >= 0.5 if mask is None else mask
    with np.errstate(invalid='ignore', divide='ignore'):
        np.divide(inside, coverage, out=out, where=mask_up)  # valid side: its sum over its coverage
        invalid_cover = np.subtract(np.float32(1.0), coverage, out=inside)  # `inside` is spent: reuse its buffer
        np.divide(out, invalid_cover, out=out, where=~mask_up)  # invalid side: the same with 1 - coverage
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass
class Recovery:
    """What the CPU solves on the network's small grid for one frame: the validity there, the camera, the z shift.

    mask: h×w bool, mask probability above the threshold and finite points; intrinsics: the camera at the frame
    size (given, or recovered from the point map); recovered: True when recovered; shift: the z shift (0 when the
    solve fails); metric_scale: the scale head's raw output."""

    mask: np.ndarray
    intrinsics: Intrinsics
    recovered: bool
    shift: float
    metric_scale: float


def recover(raw: RawOutput, frame_size: tuple[int, int], intrinsics: Intrinsics | None = None,
            mask_threshold: float = 0.5) -> Recovery:
    """Focal/shift recovery (MoGe) on the network grid; only the shift when intrinsics are known."""
    width, height = frame_size
    nh, nw = raw.mask.shape
    points = raw.points
    finite = np.isfinite(points[..., 0] + points[..., 1] + points[..., 2])  # 5x faster than .all(axis=-1)
    mask_n = (raw.mask > mask_threshold) & finite
    if intrinsics is not None:
        if (intrinsics.width, intrinsics.height) != (width, height):
            intrinsics = intrinsics.resized(width, height)
        focal = intrinsics.resized(nw, nh).moge_focal()
        _, shift = recover_focal_shift(points, mask_n, focal=focal)
        intr_used, recovered = intrinsics, False
    else:
        focal, shift = recover_focal_shift(points, mask_n)
        focal = float(focal)
        if not (math.isfinite(focal) and focal > 0):
            focal = 1.0  # degenerate map (nothing valid): MoGe's own fallback value
        intr_used, recovered = intrinsics_from_focal(focal, nw, nh).resized(width, height), True
    shift = float(shift) if math.isfinite(float(shift)) else 0.0
    return Recovery(mask_n, intr_used, recovered, shift, float(raw.metric_scale))


def network_depth(raw: RawOutput, rec: Recovery, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth, valid) on the network grid: (z + shift) * scale, valid where the mask holds and depth is positive."""
    with np.errstate(over='ignore', invalid='ignore'):  # a degenerate (e.g. untrained) map may overflow float32
        depth_n = (raw.points[..., 2] + np.float32(rec.shift)) * np.float32(scale)
    valid_n = rec.mask & (depth_n > 0) & np.isfinite(depth_n)
    return depth_n, valid_n


def unit_normals_at(normal: np.ndarray, mask: np.ndarray, width: int, height: int,
                    out: np.ndarray | None = None) -> np.ndarray:
    """The normal head's h×w×3 map at width×height (bilinear), renormalized, NaN outside `mask`; into `out`."""
    nh, nw = normal.shape[:2]
    if (nw, nh) == (width, height):
        normals = normal.astype(np.float32, copy=True) if out is None else out
        if out is not None:
            np.copyto(out, normal)
    else:
        normals = cv2.resize(normal, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
    inv = nx * nx + ny * ny + nz * nz  # elementwise: ~10x faster than np.linalg.norm(axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        np.sqrt(inv, out=inv)
        np.divide(1.0, inv, out=inv)
    inv[~mask] = np.nan
    normals *= inv[..., None]
    return normals
