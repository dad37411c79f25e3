"""Surface normals of a pinhole depth map (ROS optical frame), oriented toward the camera like MoGe's GT.

Each pixel combines the (up to) four triangles it forms with its valid 4-neighbours (up-left, left-down,
down-right, right-up): robust at depth edges, where one side of the pixel is missing. The normals face the camera
(n . p < 0). See `DepthNormals` for the formula.
"""
from __future__ import annotations

import cv2
import numpy as np

from mgeo_ros.geometry.projection import pixel_rays

__all__ = ['DepthNormals', 'normals_from_depth']

_MAX_FLOAT_BITS = int(np.array(np.finfo(np.float32).max, np.float32).view(np.int32))


def normals_from_depth(depth: np.ndarray, intrinsics, mask: np.ndarray | None = None,
                       out: np.ndarray | None = None, scratch: DepthNormals | None = None) -> np.ndarray:
    """Unit normals of a float32 H x W depth map, facing the camera (see `DepthNormals` for the formula), NaN where
    the depth is not positive and finite, `mask` is False or no triangle with valid neighbours exists. `out`: float32
    H x W x 3 to write into; `scratch`: a `DepthNormals` whose buffers are reused (per-frame callers keep one)."""
    return (scratch or DepthNormals())(depth, intrinsics, mask, out)


class DepthNormals:
    """Normals of a pinhole depth map, with its working buffers kept from one call to the next.

    In inverse depth w = 1/z the plane through a pixel and two of its 4-neighbours is w = w_p + a (x - x_p) +
    b (y - y_p) (x, y: normalized image coordinates) and its normal is parallel to m = (a, b, w_p - a x_p - b y_p),
    with |m| = 1 / (the plane's distance from the camera). The pixel's normal is -m / |m| for the sum of m over its
    (up to) four triangles (up-left, left-down, down-right, right-up) whose corners are all valid: each triangle's
    unit normal weighted by the inverse distance of its plane. As m is linear in (a, b), that sum is m of the mean
    slopes: the central difference fx (w_right - w_left) / 2 where both horizontal neighbours are valid, the one-sided
    difference where one is, none (NaN) where neither is; the same vertically. On a plane this is the plane's normal
    exactly; on a smooth surface it stays within a fraction of a degree of the mean of the triangles' unit normals,
    more only on rough surfaces and across depth jumps. It faces the camera by construction
    (m . (x_p, y_p, 1) = w_p > 0). About 20 passes over a block of rows at a time (the working rows stay in the CPU
    cache), against some 50 for the mean of unit normals.
    """

    _BLOCK = 32768  # pixels per block of rows: its 8 working planes stay in a core's L2 cache

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None

    def _buffers(self, h: int, w: int) -> None:
        if self._shape != (h, w):
            self._shape = (h, w)
            self._rows = max(8, self._BLOCK // (w + 2))
            self._inv = np.empty((h + 2, w + 2), np.float32)  # w = 1/z, NaN padded and where invalid
            self._ok, self._bad = np.empty((h, w), np.uint8), np.empty((h, w), np.uint8)  # 0 or 255
            self._nan = np.full((self._rows, w), np.nan, np.float32)
            self._work = np.empty((8, (self._rows + 2) * (w + 2)), np.float32)
            self._rays_of = None

    def _rays(self, k, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """x of a block of padded rows as a plane (a contiguous operand is 2x faster than a broadcast one), y of each
        padded row as a column; kept while the intrinsics stay."""
        key = (k.fx, k.fy, k.cx, k.cy)
        if self._rays_of != key:
            xs, ys = pixel_rays(k)
            self._x = np.zeros((self._rows, w + 2), np.float32)
            self._x[:, 1:-1] = xs
            self._y = np.zeros((h + 2, 1), np.float32)
            self._y[1:-1, 0] = ys
            self._rays_of = key
        return self._x, self._y

    def __call__(self, depth: np.ndarray, intrinsics, mask: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> np.ndarray:
        d = np.asarray(depth)
        if d.dtype != np.float32 or d.ndim != 2:
            raise ValueError(f'depth must be float32 H x W, got {d.dtype} {d.shape}')
        h, w = d.shape
        if (w, h) != (intrinsics.width, intrinsics.height):
            raise ValueError(f'depth is {w}x{h} but intrinsics are for {intrinsics.width}x{intrinsics.height}')
        if out is None:
            out = np.empty((h, w, 3), np.float32)
        elif out.shape != (h, w, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f'out must be C-contiguous float32 {(h, w, 3)}, got {out.dtype} {out.shape}')
        if h * w == 0:
            return out
        self._buffers(h, w)
        wp = self._inv
        wp[0], wp[-1], wp[:, 0], wp[:, -1] = np.nan, np.nan, np.nan, np.nan
        m = None if mask is None else np.ascontiguousarray(mask, bool)  # OpenCV reads it as bytes
        x, y = self._rays(intrinsics, h, w)
        rows = self._rows
        with np.errstate(divide='ignore', invalid='ignore'):
            self._inverse(d, m, 0, min(rows, h))
            for r0 in range(0, h, rows):
                r1 = min(r0 + rows, h)
                if r1 < h:  # the next rows first: this block's vertical differences reach into them
                    self._inverse(d, m, r1, min(r1 + rows, h))
                self._block(r0, r1, intrinsics, x, y, out)
        return out

    def _inverse(self, d: np.ndarray, mask: np.ndarray | None, r0: int, r1: int) -> None:
        """Rows r0..r1-1 of w = 1/z, NaN where the depth is not positive and finite or the mask is False."""
        inv, ok, bad = self._inv[r0 + 1:r1 + 1, 1:-1], self._ok[r0:r1], self._bad[r0:r1]
        np.divide(np.float32(1.0), d[r0:r1], out=inv)
        # w positive and finite: its float32 bits as an int32 in 1 ..= those of the largest float (NaN: above)
        cv2.inRange(inv.view(np.int32), 1, _MAX_FLOAT_BITS, ok)
        if mask is None:
            cv2.bitwise_not(ok, bad)
        else:
            cv2.compare(cv2.bitwise_and(ok, mask[r0:r1].view(np.uint8), ok), 0, cv2.CMP_EQ, bad)
        cv2.copyTo(self._nan[:r1 - r0], bad, inv)

    def _block(self, r0: int, r1: int, k, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
        """Rows r0..r1-1 of the normals into out. Computed on the padded map flattened to one dimension, where the
        neighbours of a pixel are -1, +1, -(W+2), +(W+2) elements away: every operation is one contiguous loop; the
        padding columns are computed too and dropped."""
        row = self._inv.shape[1]
        flat = self._inv.reshape(-1)
        s, e = (r0 + 1) * row, (r1 + 1) * row  # this block's padded rows in flat
        n = e - s
        mx, my, mz, mag, hi, lo, dx, dy = self._work
        mx, my, mz, mag, hi, lo = mx[:n], my[:n], mz[:n], mag[:n], hi[:n], lo[:n]
        dx, dy = dx[:n + 1], dy[:n + row]
        # the mean of the valid one-sided differences is (max + min) / 2 of the pair, NaN-ignoring (fmax, fmin)
        np.subtract(flat[s:e + 1], flat[s - 1:e], out=dx)  # dx[i]: w[i] - w[i - 1]
        np.fmax(dx[:-1], dx[1:], out=hi)
        np.fmin(dx[:-1], dx[1:], out=lo)
        cv2.addWeighted(hi, 0.5 * k.fx, lo, 0.5 * k.fx, 0.0, mx)  # a
        np.subtract(flat[s:e + row], flat[s - row:e], out=dy)  # dy[i]: w[i] - w[i - row]
        np.fmax(dy[:-row], dy[row:], out=hi)
        np.fmin(dy[:-row], dy[row:], out=lo)
        cv2.addWeighted(hi, 0.5 * k.fy, lo, 0.5 * k.fy, 0.0, my)  # b
        np.subtract(flat[s:e], np.multiply(mx, x.reshape(-1)[:n], out=hi), out=mz)  # w_p - a x_p - b y_p
        rows = (r1 - r0, row)
        mz -= np.multiply(my.reshape(rows), y[r0 + 1:r1 + 1], out=hi.reshape(rows)).reshape(-1)
        cv2.magnitude(mx, my, mag)
        cv2.magnitude(mag, mz, mag)
        np.divide(np.float32(-1.0), mag, out=mag)  # towards the camera
        mx *= mag
        my *= mag
        mz *= mag
        cv2.merge([c.reshape(rows)[:, 1:-1] for c in (mx, my, mz)], out[r0:r1])
