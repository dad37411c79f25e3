"""Bench only: a frozen copy of the node's per-frame path as it was before issue 16 (commit 532c735), so that
`mgeo bench --node` can time today's path and the old one in the same run and check that their outputs agree.

Nothing else imports this module. The README holds this machine's before/after numbers; it stays until they are
also taken where robots run (Jetson, desktop GPU hosts), which need the same-run reference to mean anything.
It deliberately duplicates the old functions instead of importing them: the live modules are being optimized, and an
import would silently time the new code twice. Only the parts that never changed shape are imported (Intrinsics,
ScaleFilter, the ray/unprojection helpers, message types).

Covered: rgb8/bgr8 decode, preprocess (resize + normalize), postprocess (mask, focal/shift recovery by the old
vectorized LM, metric depth, normalized-bilinear upsampling, normals), scale stabilization, validity and max_depth,
and the depth / camera_info / mask / PointCloud2 messages, published on the node's own publishers.
"""
from __future__ import annotations

import array
import math
import time

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import pixel_rays, unproject
from mgeo_ros.geometry.uv import _uv_extent
from mgeo_ros.image_codec import HOST_BIG_ENDIAN
from mgeo_ros.ros.scale_filter import ScaleFilter
from mgeo_ros.runtime.preprocess import grid_tokens, network_size


# ---- decode (image_codec.image_to_rgb8, rgb8 / bgr8) ---------------------------------------------------------------
def decode(msg) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    arr = np.ndarray((h, w, 3), np.uint8, buffer=data, strides=(step, 3, 1))
    if msg.encoding == 'rgb8':
        return np.ascontiguousarray(arr)
    if msg.encoding == 'bgr8':
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    raise ValueError(f'the frozen baseline decodes rgb8 and bgr8 only, got {msg.encoding!r}')


# ---- preprocess (runtime.preprocess.Preprocessor) ------------------------------------------------------------------
class Preprocessor:
    def __init__(self, num_tokens: int, input_size: tuple[int, int] | None) -> None:
        self.num_tokens = num_tokens
        self.input_size = input_size
        self._resized = self._tensor = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        nw, nh = self.input_size or network_size(w, h, self.num_tokens)
        if self._tensor is None or self._tensor.shape[2:] != (nh, nw):
            self._resized = np.empty((nh, nw, 3), np.uint8)
            self._tensor = np.empty((1, 3, nh, nw), np.float32)
        if (nw, nh) == (w, h):
            resized = np.ascontiguousarray(rgb)
        else:
            interp = cv2.INTER_AREA if (nw < w / 2 or nh < h / 2) else cv2.INTER_LINEAR
            resized = cv2.resize(rgb, (nw, nh), dst=self._resized, interpolation=interp)
        np.multiply(resized.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=self._tensor[0], casting='unsafe')
        return self._tensor


# ---- focal / shift recovery (geometry.focal_shift, numpy path) -----------------------------------------------------
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum((np.arange(n_out) * n_in) // n_out, n_in - 1)


def _focal_and_jacobian(uv, xyz, shift, valid, focal):
    den = xyz[..., 2] + shift[:, None]
    den = np.where(valid, den, 1.0)
    p = xyz[..., :2] / den[..., None] * valid[..., None]
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


def _solve(uv, xyz, valid, focal):
    bsz = xyz.shape[0]
    shift = np.zeros(bsz)
    lam = np.full(bsz, 1e-3)
    active = np.ones(bsz, dtype=bool)
    r, jac, f = _focal_and_jacobian(uv, xyz, shift, valid, focal)
    cost = _sq(r)
    for _ in range(100):
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


def recover_focal_shift(points: np.ndarray, mask: np.ndarray, focal: float | None = None) -> tuple[float, float]:
    h, w = points.shape[:2]
    iy, ix = _nearest_index(h, 64), _nearest_index(w, 64)
    xyz = points[iy][:, ix][None]
    m = mask[iy][:, ix][None]
    sx, sy = _uv_extent(w, h, None)
    u = np.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w)
    v = np.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h)
    uv = np.stack(np.broadcast_arrays(u[ix][None, :], v[iy][:, None]), axis=-1).reshape(1, -1, 2)
    xyz = xyz.reshape(1, -1, 3).astype(np.float64)
    valid = m.reshape(1, -1) & np.isfinite(xyz).all(-1)
    xyz = np.where(valid[..., None], xyz, 0.0)
    fk = None if focal is None else np.asarray([focal], np.float64)
    f, s = _solve(uv, xyz, valid, fk)
    if valid.sum() < 2:
        f, s = np.ones(1), np.zeros(1)
    return (float(focal) if focal is not None else float(f[0])), float(s[0])


def _intrinsics_from_focal(focal: float, width: int, height: int) -> Intrinsics:
    a = width / height
    k = math.sqrt(1.0 + a ** 2)
    norm = np.array([[focal / 2.0 * k / a, 0.0, 0.5], [0.0, focal / 2.0 * k, 0.5], [0.0, 0.0, 1.0]])
    return Intrinsics.from_normalized(norm, width, height)


# ---- postprocess (runtime.postprocess) -----------------------------------------------------------------------------
def upsample_valid(values, valid, width, height):
    weight = valid.astype(np.float32)
    coverage = cv2.resize(weight, (width, height), interpolation=cv2.INTER_LINEAR)
    masked = np.where(valid[..., None] if values.ndim == 3 else valid, values, 0.0).astype(np.float32)
    summed = cv2.resize(masked, (width, height), interpolation=cv2.INTER_LINEAR)
    if summed.ndim == 2 and values.ndim == 3:
        summed = summed[..., None]
    mask_up = coverage >= 0.5
    with np.errstate(invalid='ignore', divide='ignore'):
        out = summed / (coverage[..., None] if summed.ndim == 3 else coverage)
    out[~mask_up] = np.nan
    return out, mask_up


def postprocess(raw, frame_size, intrinsics, mask_threshold):
    width, height = frame_size
    nh, nw = raw.mask.shape
    points = raw.points
    finite = np.isfinite(points[..., 0] + points[..., 1] + points[..., 2])
    mask_n = (raw.mask > mask_threshold) & finite
    if intrinsics is not None:
        if (intrinsics.width, intrinsics.height) != (width, height):
            intrinsics = intrinsics.resized(width, height)
        focal = intrinsics.resized(nw, nh).moge_focal()
        _, shift = recover_focal_shift(points, mask_n, focal=focal)
        intr_used = intrinsics
    else:
        focal, shift = recover_focal_shift(points, mask_n)
        if not (math.isfinite(focal) and focal > 0):
            focal = 1.0
        intr_used = _intrinsics_from_focal(focal, nw, nh).resized(width, height)
    shift = float(shift) if math.isfinite(float(shift)) else 0.0
    scale = float(raw.metric_scale)
    with np.errstate(over='ignore', invalid='ignore'):
        depth_n = (points[..., 2] + np.float32(shift)) * np.float32(scale)
    valid_n = mask_n & (depth_n > 0) & np.isfinite(depth_n)
    if (nw, nh) == (width, height):
        depth = np.where(valid_n, depth_n, np.float32(np.nan)).astype(np.float32)
        mask = valid_n
    else:
        depth, mask = upsample_valid(depth_n, valid_n, width, height)
    normals = None
    if raw.normal is not None:
        if (nw, nh) == (width, height):
            normals = raw.normal.astype(np.float32, copy=True)
        else:
            normals = cv2.resize(raw.normal, (width, height), interpolation=cv2.INTER_LINEAR)
        nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
        inv = nx * nx + ny * ny + nz * nz
        with np.errstate(invalid='ignore', divide='ignore'):
            np.sqrt(inv, out=inv)
            np.divide(1.0, inv, out=inv)
        inv[~mask] = np.nan
        normals *= inv[..., None]
    return depth, mask, intr_used, scale, shift


# ---- messages (ros.convert) ----------------------------------------------------------------------------------------
def _byte_array(buf: np.ndarray) -> array.array:
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(buf)).cast('B'))
    return out


def _image(arr: np.ndarray, encoding: str, bpp: int, header) -> Image:
    msg = Image()
    msg.header = header
    msg.height, msg.width = arr.shape[:2]
    msg.encoding, msg.step, msg.is_bigendian = encoding, arr.shape[1] * bpp, 0
    msg.data = _byte_array(arr)
    return msg


def _camera_info(intr: Intrinsics, header) -> CameraInfo:
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = intr.K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def _pack_rgb(rgb: np.ndarray, out: np.ndarray) -> None:
    out[...] = rgb[..., 0]
    out <<= 8
    out |= rgb[..., 1]
    out <<= 8
    out |= rgb[..., 2]


def _cloud(depth, intr: Intrinsics, header, rgb, stride: int, organized: bool) -> PointCloud2:
    if stride > 1:
        depth, intr = depth[::stride, ::stride], intr.decimated(stride)
        rgb = rgb[::stride, ::stride] if rgb is not None else None
    step = 16 if rgb is not None else 12
    keep = None if organized else np.isfinite(depth)
    if keep is None or not keep.any():
        h, w = depth.shape
        data = array.array('B', b'\0') * (h * w * step)
        view = np.frombuffer(data, np.float32).reshape(h, w, step // 4)
        unproject(depth, intr, out=view[..., :3])
        if rgb is not None:
            _pack_rgb(rgb, view[..., 3].view(np.uint32))
        dense = False
    else:
        rows, cols = np.nonzero(keep)
        h, w = 1, rows.size
        data = array.array('B', b'\0') * (w * step)
        view = np.frombuffer(data, np.float32).reshape(1, w, step // 4)
        ray_x, ray_y = pixel_rays(intr)
        z = depth[rows, cols]
        np.multiply(z, ray_x[cols], out=view[0, :, 0])
        np.multiply(z, ray_y[rows], out=view[0, :, 1])
        view[0, :, 2] = z
        if rgb is not None:
            _pack_rgb(rgb[rows, cols], view[0, :, 3].view(np.uint32))
        dense = True
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = h, w
    names = ('x', 'y', 'z', 'rgb') if rgb is not None else ('x', 'y', 'z')
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = HOST_BIG_ENDIAN
    msg.point_step, msg.row_step = step, step * w
    msg.is_dense = dense
    msg.data = data
    return msg


# ---- the per-frame path (ros.pipeline.FramePipeline.process for a good frame) -------------------------------------
def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class BaselinePipeline:
    """The old `FramePipeline.process` for well-formed frames, publishing on the same publishers into `timings`."""

    def __init__(self, backend, num_tokens: int, outputs, timings, clock,
                 input_size: tuple[int, int] | None = None) -> None:
        self.backend = backend
        self.pre = Preprocessor(num_tokens, input_size)
        self.out = outputs
        self.timings = timings
        self.clock = clock
        self.scale = ScaleFilter(0.0, 1.5)

    def process(self, msg, received: float, info_intrinsics: Intrinsics | None, cfg: dict) -> None:
        t_start = time.perf_counter()
        timings = {'queue_wait': (time.monotonic() - received) * 1000.0}
        want = {k: getattr(self.out, k).get_subscription_count() > 0 for k in ('depth', 'info', 'points', 'mask')}
        t0 = time.perf_counter()
        rgb = decode(msg)
        timings['decode'] = _ms(t0)
        height, width = rgb.shape[:2]
        intr = None
        if cfg['use_camera_info'] and info_intrinsics is not None:
            intr = info_intrinsics
            if (intr.width, intr.height) != (width, height):
                intr = intr.resized(width, height)
        t0 = time.perf_counter()
        image = self.pre(rgb)
        nh, nw = image.shape[2:]
        t1 = time.perf_counter()
        raw = self.backend.forward(image, grid_tokens(nw, nh))
        t2 = time.perf_counter()
        depth, mask, intr_used, scale, _shift = postprocess(raw, (width, height), intr, cfg['mask_threshold'])
        t3 = time.perf_counter()
        timings.update(preprocess=(t1 - t0) * 1e3, forward=(t2 - t1) * 1e3, postprocess=(t3 - t2) * 1e3)

        t0 = time.perf_counter()
        header = msg.header
        if cfg['frame_id']:
            header.frame_id = cfg['frame_id']
        self.scale.configure(cfg['scale_smoothing'], cfg['scale_reset_ratio'])
        update = self.scale.update(scale)
        factor = update.smoothed / update.raw if math.isfinite(update.raw) and update.raw > 0 else 1.0
        depth = np.asarray(depth, dtype=np.float32)
        if factor != 1.0:
            depth = depth * np.float32(factor)
        valid = np.asarray(mask, dtype=bool) & np.isfinite(depth) & (depth > 0)
        beyond = None
        if cfg['max_depth'] > 0:
            beyond = valid & (depth > cfg['max_depth'])
            valid &= ~beyond
        depth_nan = np.where(valid, depth, np.float32(np.nan)) if want['depth'] or want['points'] else None
        if want['depth']:
            shown = depth_nan
            if cfg['inf_beyond_max_depth'] and beyond is not None and beyond.any():
                shown = depth_nan.copy()
                shown[beyond] = np.inf
            self.out.depth.publish(_image(shown.astype(np.float32, copy=False), '32FC1', 4, header))
        if want['info']:
            self.out.info.publish(_camera_info(intr_used, header))
        if want['mask']:
            self.out.mask.publish(_image(valid.astype(bool).view(np.uint8) * np.uint8(255), 'mono8', 1, header))
        if want['points']:
            self.out.points.publish(_cloud(depth_nan, intr_used, header, rgb if cfg['points_color'] else None,
                                           int(cfg['points_stride']), bool(cfg['points_organized'])))
        timings['publish'] = _ms(t0)
        timings['total'] = _ms(t_start) + timings['queue_wait']
        age = self.clock.now().nanoseconds - (header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)
        for stage, ms in timings.items():
            self.timings.add(stage, ms)
        self.timings.add('since_stamp', age / 1e6)
