"""Surface normals from an organized point map (ROS optical frame), oriented toward the camera like MoGe's GT.

Each pixel averages the unit normals of the (up to) four triangles it forms with its valid 4-neighbours
(up x left, left x down, down x right, right x up): robust at depth edges, where one side of the pixel is missing.
Normals are then flipped where needed so that n . p < 0 (the surface faces the camera at the origin).
"""
from __future__ import annotations

import cv2
import numpy as np

from mgeo_ros.geometry.projection import pixel_rays

__all__ = ['DepthNormals', 'normals_from_depth', 'normals_from_points']

_EPS = 1e-12
_MAX_FLOAT_BITS = int(np.array(np.finfo(np.float32).max, np.float32).view(np.int32))


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith('torch') and hasattr(x, 'detach')


def _normals_numpy(points: np.ndarray, mask: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """Computed in the input's precision (float32 points: float32, 4-5x faster than float64 at 640x480; float64
    and others: float64), one H x W map at a time (`_normals_map`)."""
    p = np.asarray(points)
    dtype = np.float32 if p.dtype == np.float32 else np.float64
    if p.ndim == 3:
        return _normals_map(p, None if mask is None else np.asarray(mask, dtype=bool), dtype, out)
    lead, (h, w) = p.shape[:-3], p.shape[-3:-1]
    batch = int(np.prod(lead))
    flat_p = p.reshape(batch, h, w, 3)
    flat_m = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), (*lead, h, w)).reshape(batch, h, w)
    out = np.empty((flat_p.shape[0], h, w, 3), np.float32)
    for i in range(flat_p.shape[0]):
        out[i] = _normals_map(flat_p[i], None if flat_m is None else flat_m[i], dtype)
    return out.reshape(*lead, h, w, 3)


_CHUNK = 1 << 15  # pixels per pass: the ~20 working arrays of a chunk stay in the CPU cache


def _normals_map(p: np.ndarray, mask: np.ndarray | None, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """One H x W x 3 map (see `_normals_planes`)."""
    def fill(centre: np.ndarray) -> None:
        for c in range(3):
            centre[c] = p[..., c]

    return _normals_planes(p.shape[0], p.shape[1], fill, mask, dtype, out)


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
    exactly; on a smooth surface it stays within a fraction of a degree of the mean of the triangles' unit normals
    (`normals_from_points`), more only on rough surfaces and across depth jumps. It faces the camera by construction
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


def _normals_planes(h: int, w: int, fill, mask: np.ndarray | None, dtype, out: np.ndarray | None) -> np.ndarray:
    """Normals of the H x W map whose x, y, z `fill(centre)` writes into centre[0..2]. The arithmetic is done on
    the zero-padded map flattened to one dimension, where the four neighbours of a pixel are the elements -W-2,
    -1, +W+2, +1 away: every operation is one contiguous loop (on 2-D padded views numpy loops row by row, 6x
    slower at 640x480), in place, over a cache-sized chunk of pixels at a time (`_normals_chunk`); the padding
    columns are computed too and dropped (they are invalid)."""
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    if h * w == 0:
        return out
    row = w + 2
    size = (h + 2) * row
    planes = np.zeros((3, h + 2, row), dtype)  # x, y, z padded by one zero pixel
    centre = planes[:, 1:-1, 1:-1]
    fill(centre)
    valid = np.ones((h, w), bool)
    for c in range(3):
        valid &= np.isfinite(centre[c])
    if mask is not None:
        valid &= mask
    invalid = ~valid
    for c in range(3):
        centre[c][invalid] = 0.0
    vpad = np.zeros((h + 2, row), dtype=bool)
    vpad[1:-1, 1:-1] = valid
    lo, hi = row + 1, size - row - 1  # flat range holding every interior pixel
    result = np.empty((3, size), dtype)
    scratch = _Scratch(min(_CHUNK, hi - lo), dtype)
    flat, vflat = planes.reshape(3, size), vpad.reshape(size)
    for start in range(lo, hi, _CHUNK):
        _normals_chunk(flat, vflat, row, start, min(start + _CHUNK, hi), result, scratch)
    for c in range(3):
        out[..., c] = result[c].reshape(h + 2, row)[1:-1, 1:-1]
    return out


class _Scratch:
    """The working arrays of one chunk, allocated once per map."""

    def __init__(self, m: int, dtype) -> None:
        self.diff = np.empty((4, 3, m), dtype)
        self.total, self.n = np.empty((3, m), dtype), np.empty((3, m), dtype)
        self.weight, self.tmp = np.empty(m, dtype), np.empty(m, dtype)
        self.count, self.ok = np.empty(m, np.int32), np.empty(m, bool)


def _normals_chunk(flat: np.ndarray, vflat: np.ndarray, row: int, lo: int, hi: int, result: np.ndarray,
                   s: _Scratch) -> None:
    """Normals of flat pixels lo..hi-1 into result[:, lo:hi] (NaN where none)."""
    m = hi - lo
    here, vhere = flat[:, lo:hi], vflat[lo:hi]
    diff, total, n = s.diff[..., :m], s.total[:, :m], s.n[:, :m]
    weight, tmp, count, ok = s.weight[:m], s.tmp[:m], s.count[:m], s.ok[:m]
    around = (-row, -1, row, 1)  # up, left, down, right
    for k, o in enumerate(around):
        for c in range(3):
            np.subtract(flat[c, lo + o:hi + o], here[c], out=diff[k, c])
    total[...] = 0
    count[...] = 0
    for k in range(4):
        a, b = diff[k], diff[(k + 1) % 4]
        o1, o2 = around[k], around[(k + 1) % 4]
        np.logical_and(vhere, vflat[lo + o1:hi + o1], out=ok)
        ok &= vflat[lo + o2:hi + o2]
        for c, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):  # n = a x b, component by component
            np.multiply(a[i], b[j], out=n[c])
            n[c] -= np.multiply(a[j], b[i], out=tmp)
        np.multiply(n[0], n[0], out=weight)
        weight += np.multiply(n[1], n[1], out=tmp)
        weight += np.multiply(n[2], n[2], out=tmp)
        np.sqrt(weight, out=weight)
        weight += _EPS
        np.divide(ok, weight, out=weight)  # 1/|n| where the triangle exists, else 0
        for c in range(3):
            total[c] += np.multiply(n[c], weight, out=tmp)
        count += ok
    tx, ty, tz = total
    norm = np.multiply(tx, tx, out=weight)
    norm += np.multiply(ty, ty, out=tmp)
    norm += np.multiply(tz, tz, out=tmp)
    np.sqrt(norm, out=norm)
    good = np.greater(norm, _EPS, out=ok)
    good &= count > 0
    facing = np.multiply(tx, here[0], out=tmp)  # n . p > 0: the normal faces away from the camera
    facing += np.multiply(ty, here[1], out=n[0])
    facing += np.multiply(tz, here[2], out=n[0])
    away = np.greater(facing, 0, out=n[1].view(bool)[:m])
    np.maximum(norm, _EPS, out=norm)
    scale = np.divide(1.0, norm, out=norm)
    np.negative(scale, out=scale, where=away)
    np.copyto(scale, np.nan, where=~good)
    for c in range(3):
        np.multiply(total[c], scale, out=result[c, lo:hi])


def _normals_torch(points, mask):
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(points).all(-1)
    if mask is not None:
        valid = valid & mask.to(torch.bool)
    p = torch.where(valid[..., None], points, torch.zeros_like(points))
    pad = F.pad(p.movedim(-1, -3), (1, 1, 1, 1)).movedim(-3, -1)        # [..., H+2, W+2, 3]
    vpad = F.pad(valid.to(p.dtype), (1, 1, 1, 1)) > 0
    centre = pad[..., 1:-1, 1:-1, :]
    nbr = [pad[..., :-2, 1:-1, :], pad[..., 1:-1, :-2, :], pad[..., 2:, 1:-1, :], pad[..., 1:-1, 2:, :]]
    nval = [vpad[..., :-2, 1:-1], vpad[..., 1:-1, :-2], vpad[..., 2:, 1:-1], vpad[..., 1:-1, 2:]]
    total = torch.zeros_like(centre)
    count = torch.zeros_like(valid, dtype=torch.int32)
    for k in range(4):
        ok = valid & nval[k] & nval[(k + 1) % 4]
        n = torch.linalg.cross(nbr[k] - centre, nbr[(k + 1) % 4] - centre, dim=-1)
        n = n / (torch.linalg.norm(n, dim=-1, keepdim=True) + _EPS)
        total = total + n * ok[..., None]
        count = count + ok.to(torch.int32)
    norm = torch.linalg.norm(total, dim=-1, keepdim=True)
    out = total / norm.clamp_min(_EPS)
    sign = torch.where((out * centre).sum(-1, keepdim=True) > 0, -1.0, 1.0).to(out.dtype)
    out = out * sign
    good = (count > 0) & (norm[..., 0] > _EPS)
    return torch.where(good[..., None], out, torch.full_like(out, float('nan')))


def normals_from_points(points, mask=None, out: np.ndarray | None = None):
    """Unit normals [..., H, W, 3] of a point map [..., H, W, 3] (numpy -> float32 numpy, torch -> torch with grad).

    Invalid pixels (masked out, non-finite, or without two valid neighbours forming a triangle) are NaN.
    `out`: a float32 H x W x 3 array to write a single numpy map's normals into (e.g. a message's bytes).
    """
    if _is_tensor(points):
        return _normals_torch(points, mask)
    if out is not None and (np.ndim(points) != 3 or np.shape(out) != np.shape(points) or out.dtype != np.float32):
        raise ValueError(f'out must be float32 {np.shape(points)} for one H x W x 3 map, got {out.dtype} {out.shape}')
    return _normals_numpy(points, mask, out)
