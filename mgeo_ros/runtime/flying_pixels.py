"""Flying pixels: depth samples on an occlusion edge that sit between the foreground and the background.

A network predicts depth on a coarser grid and the frame is upsampled from it, so every occlusion edge leaves pixels
whose depth blends both sides; unprojected, they form the "veil" of points hanging in free space that costmaps mark
as obstacles. The test here is the one MoGe's own export tools use: a valid pixel is dropped when the depth range of
its valid neighbours (a (2r+1)x(2r+1) window) is larger than `max_rel_jump` times its own depth. It costs two
OpenCV morphology passes (min and max filters), well under a millisecond at 640x480.

What the tolerance means for planes: a plane's inverse depth is affine in the pixel coordinates, so its relative
depth change per pixel is 1 / (the pixel's distance to the plane's vanishing line). A plane therefore keeps every
pixel further than 2r / max_rel_jump pixels from its vanishing line (25 px with the defaults 0.08 and r = 1),
whatever its slant: a wall whose vanishing line lies outside the image keeps all its pixels. For a floor seen by a
level camera h metres above it, that band is the part beyond z = max_rel_jump * h * f / (2 r): 6.3 m for
h = 0.3 m, f = 525 px. There a floor is as grazing as the ramp of a blurred edge, and goes too.

Optionally a grazing-angle test drops pixels whose surface normal is nearly perpendicular to the viewing ray (angle
between ray and normal above `max_view_angle_deg`), given normals.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import pixel_rays

BIG = 3.0e38  # stands for +inf in the min filter (float32 max is 3.4e38; the post graph's too)


class DepthJumpTest:
    """The relative-jump test with its scratch buffers kept between frames (allocating four frame-sized float arrays
    per frame costs more than the test itself)."""

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None

    def _buffers(self, shape: tuple[int, int]) -> None:
        if self._shape != shape:
            self._shape = shape
            self._a, self._b, self._c = (np.empty(shape, np.float32) for _ in range(3))
            self._out = np.empty(shape, bool)

    def __call__(self, depth: np.ndarray, max_rel_jump: float, radius: int = 1) -> np.ndarray:
        """True where a valid pixel's window of valid neighbours spans more than max_rel_jump x its depth.

        depth: H x W float32 metres, NaN invalid. Invalid neighbours are ignored, so the border of the valid region
        is not an edge. The result is a buffer reused by the next call: copy it to keep it.
        """
        d = np.asarray(depth, dtype=np.float32)
        self._buffers(d.shape)
        a, b, c, out = self._a, self._b, self._c, self._out
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
        np.copyto(a, d)
        cv2.patchNaNs(a, 0.0)  # invalid -> 0: never the max of positive depths
        cv2.dilate(a, kernel, dst=b, borderType=cv2.BORDER_REPLICATE)
        np.copyto(a, d)
        cv2.patchNaNs(a, BIG)  # invalid -> huge: never the min
        cv2.erode(a, kernel, dst=c, borderType=cv2.BORDER_REPLICATE)
        np.subtract(b, c, out=b)  # the window's depth range
        np.multiply(d, np.float32(max_rel_jump), out=a)
        with np.errstate(invalid='ignore'):
            np.greater(b, a, out=out)  # NaN depth compares False: invalid pixels are never flagged
        return out


def grazing_mask(normals: np.ndarray, intrinsics: Intrinsics, max_view_angle_deg: float) -> np.ndarray:
    """True where the angle between the viewing ray and the surface normal exceeds max_view_angle_deg (NaN normals
    are never flagged)."""
    ru, rv = pixel_rays(intrinsics)
    n = np.asarray(normals, dtype=np.float32)
    # cos(angle) = |n . ray| / |ray| with ray = (u, v, 1) per pixel (normals are unit)
    dot = n[..., 0] * ru[None, :] + n[..., 1] * rv[:, None] + n[..., 2]
    ray_norm = np.sqrt(ru[None, :] ** 2 + rv[:, None] ** 2 + 1.0)
    with np.errstate(invalid='ignore'):
        return np.abs(dot) < np.float32(math.cos(math.radians(max_view_angle_deg))) * ray_norm
