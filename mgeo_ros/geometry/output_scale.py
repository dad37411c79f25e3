"""Outputs at a fraction of the frame size, sized and calibrated as image_proc's resize node sizes and calibrates a
resized image, so a client that knows image_proc reads them the same way.

image_proc's resize (`use_scale`) shrinks the image with `cv::resize(src, dst, Size(0, 0), s, s)`, whose size is
W·s and H·s rounded to the nearest integer, ties to even; it multiplies K's fx, cx, fy, cy and P's fx, cx, Tx, fy, cy by
s and keeps the header. Its camera_info width/height truncate W·s instead; they differ from the image only when W·s
ends in exactly .5 and rounds up, so `output_size` gives the image's size and the camera_info carries that same size.

Scaling cx by s puts the principal point at the corner-origin position; the pixel-centre exact form
(`Intrinsics.resized`, for images resized by area) is (cx + 0.5)·s − 0.5, 0.5·(1 − s) px away (0.25 px at s = ½).
"""
from __future__ import annotations

import math

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics


def check_output_scale(scale: float) -> float:
    """`scale` as a float when 0 < scale <= 1 (BadInputError otherwise)."""
    value = float(scale)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise BadInputError(f'output_scale must be in (0, 1] (1 = the frame size, 0.5 = half each side), got {scale!r}')
    return value


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(W, H) of the outputs of a width x height frame at `scale`: W·s and H·s rounded as cv::resize rounds them
    (nearest, ties to even: 643 x ½ -> 322, 641 x ½ -> 320), at least 1 pixel."""
    s = check_output_scale(scale)
    if int(width) <= 0 or int(height) <= 0:
        raise BadInputError(f'frame size must be positive, got {width}x{height}')
    return max(1, round(int(width) * s)), max(1, round(int(height) * s))


def scale_camera_matrices(k, p, scale_x: float, scale_y: float) -> tuple[np.ndarray, np.ndarray]:
    """CameraInfo's row-major K (9) and P (12) scaled as image_proc's resize scales them: fx, cx (and P's Tx) by
    scale_x, fy, cy by scale_y; everything else as it was. Returns new float64 arrays of the same lengths."""
    k_out = np.array(k, dtype=np.float64).reshape(-1)
    p_out = np.array(p, dtype=np.float64).reshape(-1)
    if k_out.size != 9 or p_out.size != 12:
        raise BadInputError(f'K must have 9 and P 12 elements, got {k_out.size} and {p_out.size}')
    k_out[[0, 2]] *= scale_x
    k_out[[4, 5]] *= scale_y
    p_out[[0, 2, 3]] *= scale_x
    p_out[[5, 6]] *= scale_y
    return k_out, p_out


def scaled_intrinsics(intr: Intrinsics, scale: float) -> Intrinsics:
    """The camera of the outputs at `scale` (`output_size`), as image_proc's resize publishes it: fx, fy, cx, cy
    times s (`scale_camera_matrices`). `intr` itself at scale 1."""
    s = check_output_scale(scale)
    if s == 1.0:
        return intr
    width, height = output_size(intr.width, intr.height, s)
    return Intrinsics(intr.fx * s, intr.fy * s, intr.cx * s, intr.cy * s, width, height)
