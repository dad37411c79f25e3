"""sensor_msgs <-> numpy without cv_bridge: Image, CompressedImage, CameraInfo, PointCloud2.

Reading honours `step` (row padding) and `is_bigendian` and returns zero-copy views of the message's data where the
layout allows it. Writing fills the message's own `array('B')` in one pass (rclpy's fast path; a list or bytes would
be checked element by element). Malformed messages raise `BadInputError` naming the offending field.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics

# Image/CompressedImage -> numpy lives in image_codec (shared with bag reading); re-exported so the node's
# converters are in one place.
from mgeo_ros.image_codec import (  # noqa: F401
    ENCODINGS,
    HOST_BIG_ENDIAN,
    UYVY_ENCODINGS,
    YUYV_ENCODINGS,
    bytes_per_pixel,
    compressed_to_rgb8,
    image_to_numpy,
    image_to_rgb8,
    rgb8_to_yuv422,
    yuv422_to_rgb8,
)
from mgeo_ros.ros import cloud


def _header(header: Header | None) -> Header:
    return Header() if header is None else header


def _message(cls):
    """A new message of `cls` that keeps an `array('B')` assigned to its `data` as it is.

    Kilted's generated classes copy such an array (`array.array('B', value)`) unless the message checks its
    fields (constructor argument `check_fields`, default from ROS_PYTHON_CHECK_FIELDS), in which case they keep
    it, saving a copy of every frame-sized payload. Classes without that switch keep it anyway."""
    return cls(check_fields=True) if '_check_fields' in getattr(cls, '__slots__', ()) else cls()


def _to_byte_array(buf: np.ndarray) -> array.array:
    """One copy of a C-contiguous numpy buffer into the array('B') rclpy stores without per-element checks."""
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(buf)).cast('B'))
    return out


def _zeroed_byte_array(nbytes: int) -> array.array:
    return array.array('B', b'\0') * nbytes


# ---- numpy -> Image -------------------------------------------------------------------------------------------------
def numpy_to_image(arr: np.ndarray, encoding: str, header: Header | None = None, step: int | None = None,
                   is_bigendian: bool = False) -> Image:
    """H x W (x C) array in `encoding`'s layout -> Image. `step` > width x bytes per pixel pads rows (zeros);
    `is_bigendian` writes multi-byte elements big-endian. Defaults give the compact native message."""
    bpp = bytes_per_pixel(encoding)
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(arr)
    shape_ok = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr, shape_ok = arr[..., 0], True
    if not shape_ok:
        raise BadInputError(f'array of shape {arr.shape} does not fit encoding {encoding!r} ({channels} channel(s))')
    if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise BadInputError(f'array dtype {arr.dtype} does not fit encoding {encoding!r} ({dtype})')
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise BadInputError(f'array must not be empty, got shape {arr.shape}')
    row = width * bpp
    step = row if step is None else int(step)
    if step < row:
        raise BadInputError(f'step {step} < width {width} x {bpp} bytes per pixel ({encoding})')
    big = bool(is_bigendian) and dtype.itemsize > 1
    arr = arr.astype(dtype.newbyteorder('>' if big else '<'), copy=False)
    msg = _message(Image)
    msg.header = _header(header)
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = 1 if big else 0
    if step == row:
        msg.data = _to_byte_array(arr)
    else:
        padded = np.zeros((height, step), np.uint8)
        padded[:, :row] = np.ascontiguousarray(arr).view(np.uint8).reshape(height, row)
        msg.data = _to_byte_array(padded)
    return msg


def image_around(data: array.array, height: int, width: int, encoding: str, header: Header | None = None) -> Image:
    """An Image whose `data` is `data` itself (rclpy keeps an assigned array('B') as it is): for bytes the caller
    has already written in the host's byte order, `height` rows of `width` pixels of `encoding` (one of ENCODINGS'
    packed ones, or the normals' 32FC3), no padding."""
    item, channels = (4, 3) if encoding == '32FC3' else (ENCODINGS[encoding][0].itemsize, ENCODINGS[encoding][1])
    step = width * item * channels
    if len(data) != height * step:
        raise BadInputError(f'data has {len(data)} bytes, {height} x {width} {encoding} needs {height * step}')
    msg = _message(Image)
    msg.header = _header(header)
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = 1 if HOST_BIG_ENDIAN and item > 1 else 0
    msg.data = data
    return msg


def mask_to_image(valid: np.ndarray, header: Header | None = None, data: array.array | None = None) -> Image:
    """Validity H x W (bool) -> mono8 Image, 255 valid, 0 invalid, written into `data` when it has the size (bytes
    kept between frames, see `FrameBuffers`)."""
    valid = np.asarray(valid)
    if valid.ndim != 2 or valid.dtype != bool:
        raise BadInputError(f'mask must be bool H x W, got {valid.dtype} {valid.shape}')
    height, width = valid.shape
    if data is None or len(data) != height * width:
        data = _zeroed_byte_array(height * width)
    np.multiply(np.ascontiguousarray(valid).view(np.uint8), np.uint8(255),
                out=np.frombuffer(data, np.uint8).reshape(height, width))
    return image_around(data, height, width, 'mono8', header)


# ---- CompressedImage ------------------------------------------------------------------------------------------------
def rgb8_to_compressed(rgb: np.ndarray, header: Header | None = None, fmt: str = 'jpeg', quality: int = 90,
                       ) -> CompressedImage:
    """RGB uint8 H x W x 3 -> CompressedImage ('jpeg' or 'png'), `format` in image_transport's convention."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise BadInputError(f'rgb must be non-empty uint8 H x W x 3, got {rgb.dtype} {rgb.shape}')
    if fmt not in ('jpeg', 'png'):
        raise BadInputError(f'format {fmt!r} is not jpeg or png')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise BadInputError(f'rgb could not be encoded as {fmt}')
    msg = CompressedImage()
    msg.header = _header(header)
    msg.format = f'rgb8; {fmt} compressed bgr8'
    msg.data = _to_byte_array(encoded)
    return msg


# ---- CameraInfo -----------------------------------------------------------------------------------------------------
def _finite_camera(m: np.ndarray, field: str) -> None:
    """fx, fy positive and finite, cx, cy finite in a 3 x 3 (K) or 3 x 4 (P) matrix, else BadInputError."""
    cols = m.shape[1]
    for (r, c), name in (((0, 0), 'fx'), ((1, 1), 'fy')):
        if not (np.isfinite(m[r, c]) and m[r, c] > 0):
            raise BadInputError(f'camera_info.{field}[{r * cols + c}] ({name}) must be a positive finite focal, '
                                f'got {m[r, c]}')
    for (r, c), name in (((0, 2), 'cx'), ((1, 2), 'cy')):
        if not np.isfinite(m[r, c]):
            raise BadInputError(f'camera_info.{field}[{r * cols + c}] ({name}) must be finite, got {m[r, c]}')


def projection_is_valid(msg: CameraInfo) -> bool:
    """Whether P is filled in (a calibrated camera): 12 finite values with positive focals. Drivers without a
    calibration leave it zero."""
    p = np.asarray(msg.p, np.float64).reshape(-1)
    return p.size == 12 and bool(np.isfinite(p).all()) and p[0] > 0 and p[5] > 0


def _image_intrinsics(msg: CameraInfo, matrix: np.ndarray) -> Intrinsics:
    """Intrinsics of the image `msg` describes from a full-sensor camera matrix (region of interest and binning)."""
    intr = Intrinsics.from_K(matrix[:, :3].reshape(-1), int(msg.width), int(msg.height))
    x0, y0, window_w, window_h = _sensor_window(msg)
    if (window_w, window_h) != (intr.width, intr.height):
        intr = intr.cropped(x0, y0, window_w, window_h)
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if bx > 1 or by > 1:
        intr = intr.resized(intr.width // bx, intr.height // by)
    return intr


def camera_info_intrinsics(msg: CameraInfo, source: str = 'auto') -> tuple[Intrinsics, str]:
    """(Intrinsics of the image the CameraInfo describes, 'P' or 'K': the matrix they came from).

    image_pipeline's rule: a rectified image (image_rect, what the node should be fed) is described by the
    projection P; K (with D) describes the raw image. source 'auto' takes P when it is valid, else K; 'K' or 'P'
    force one. Region of interest and binning are applied either way."""
    width, height = int(msg.width), int(msg.height)
    if width <= 0:
        raise BadInputError(f'camera_info.width must be positive, got {width}')
    if height <= 0:
        raise BadInputError(f'camera_info.height must be positive, got {height}')
    if source not in ('auto', 'K', 'P'):
        raise BadInputError(f"source must be 'auto', 'K' or 'P', got {source!r}")
    if source == 'P' or (source == 'auto' and projection_is_valid(msg)):
        p = np.asarray(msg.p, np.float64).reshape(-1)
        if p.size != 12:
            raise BadInputError(f'camera_info.p must have 12 elements, got {p.size}')
        matrix = p.reshape(3, 4)
        _finite_camera(matrix, 'p')
        return _image_intrinsics(msg, matrix), 'P'
    k = np.asarray(msg.k, np.float64).reshape(-1)
    if k.size != 9:
        raise BadInputError(f'camera_info.k must have 9 elements, got {k.size}')
    _finite_camera(k.reshape(3, 3), 'k')
    return _image_intrinsics(msg, k.reshape(3, 3)), 'K'


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """CameraInfo -> Intrinsics of the image it describes: P when valid (a rectified image), else K; region of
    interest and binning applied. See `camera_info_intrinsics`."""
    return camera_info_intrinsics(msg)[0]


def _projection(intr: Intrinsics, tx: float = 0.0, ty: float = 0.0) -> list[float]:
    return [intr.fx, 0.0, intr.cx, tx, 0.0, intr.fy, intr.cy, ty, 0.0, 0.0, 1.0, 0.0]


def intrinsics_to_camera_info(intr: Intrinsics, header: Header | None = None) -> CameraInfo:
    """Intrinsics -> CameraInfo of an undistorted, unrectified camera: K, P = [K|0], R = I, plumb_bob zeros."""
    msg = CameraInfo()
    msg.header = _header(header)
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = intr.K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = _projection(intr)
    return msg


def _sensor_window(msg: CameraInfo) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the part of the calibrated sensor the image shows, before binning (the ROI)."""
    roi = msg.roi
    if roi.width > 0 and roi.height > 0 and (roi.width, roi.height) != (msg.width, msg.height):
        return int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    return 0, 0, int(msg.width), int(msg.height)


def resize_camera_info(msg: CameraInfo, width: int, height: int,
                       scale: tuple[float, float] | None = None) -> CameraInfo:
    """The CameraInfo of the same camera after resizing its image to width x height (pixel-centre exact).

    K and P (with Tx/Ty) map through the same pixel transform; D, R and the distortion model carry over; an ROI and
    binning in `msg` are folded in (the result has none). `scale`: (sx, sy) from the image's pixels to the target's
    when it is not width/W, height/H (a JPEG decoded at a reduced size: `image_codec.ReducedFrame.scale`)."""
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise BadInputError(f'resize target width x height must be positive, got {width} x {height}')
    x0, y0, window_w, window_h = _sensor_window(msg)
    if scale is None:
        ax, ay = width / window_w, height / window_h  # calibrated-sensor pixels -> target pixels
    else:
        ax = float(scale[0]) * int(msg.width) / window_w
        ay = float(scale[1]) * int(msg.height) / window_h
    target = camera_info_intrinsics(msg, 'K')[0].resized(width, height, None if scale is None else (ax, ay))
    out = CameraInfo()
    out.header = msg.header
    out.width, out.height = width, height
    out.distortion_model = msg.distortion_model
    out.d = list(msg.d)
    out.k = target.K.reshape(-1).tolist()
    out.r = np.asarray(msg.r, np.float64).reshape(-1).tolist()
    p = np.asarray(msg.p, np.float64).reshape(3, 4)
    if not (p[0, 0] > 0 and p[1, 1] > 0):  # uncalibrated P: derive it from K
        out.p = _projection(target)
        return out
    # u' = a (u - x0 + 1/2) - 1/2 applied to u = (fx X + cx Z + Tx) / Z
    fitted = np.array(p)
    fitted[0, [0, 3]] *= ax
    fitted[0, 2] = ax * (p[0, 2] - x0 + 0.5) - 0.5
    fitted[1, [1, 3]] *= ay
    fitted[1, 2] = ay * (p[1, 2] - y0 + 0.5) - 0.5
    out.p = fitted.reshape(-1).tolist()
    return out


# ---- PointCloud2 ----------------------------------------------------------------------------------------------------
def _point_fields(with_rgb: bool, with_normals: bool = False) -> list[PointField]:
    return [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in cloud.cloud_fields(with_rgb, with_normals)]


def _cloud_buffer(h: int, w: int, with_rgb: bool, with_normals: bool = False,
                  data: array.array | None = None) -> tuple[array.array, np.ndarray]:
    """Bytes of h x w float32 points and a writable (h, w, 3|4 [+3]) float32 view of them: `data` when it has the
    right size (a buffer reused between frames; every byte is written again), else new zeroed bytes. The message
    keeps the array itself (no copy at `msg.data = data`)."""
    step = cloud.point_step(with_rgb, with_normals)
    if data is None or len(data) != h * w * step:
        data = _zeroed_byte_array(h * w * step)
    return data, np.frombuffer(data, np.float32).reshape(h, w, step // 4)


def _cloud_message(data: array.array, header: Header | None, h: int, w: int, with_rgb: bool,
                   dense: bool = False, with_normals: bool = False) -> PointCloud2:
    step = cloud.point_step(with_rgb, with_normals)
    msg = _message(PointCloud2)
    msg.header = _header(header)
    msg.height, msg.width = h, w
    msg.fields = _point_fields(with_rgb, with_normals)
    msg.is_bigendian = HOST_BIG_ENDIAN
    msg.point_step, msg.row_step = step, step * w
    msg.is_dense = dense
    msg.data = data
    return msg


def points_to_pointcloud2(points, header: Header | None = None, rgb: np.ndarray | None = None,
                          normals: np.ndarray | None = None, organized: bool = True,
                          data: array.array | None = None) -> PointCloud2:
    """An organized point map H x W x 3 (metres, optical frame, NaN invalid), or its x, y, z as a tuple of H x W
    planes, -> PointCloud2, packed straight into the message's bytes.

    organized: H x W points, NaN where invalid, `is_dense` false. Otherwise only the finite points, 1 x N with
    `is_dense` true; a frame without any stays organized and all NaN (a cloud of width 0 is not valid).
    rgb (uint8 H x W x 3) adds the packed `rgb` field; normals (H x W x 3 unit vectors) add normal_x/y/z.
    `data`: an organized cloud is written into these bytes when they have its size (see `FrameBuffers`)."""
    if isinstance(points, tuple):
        if len(points) != 3 or len({np.shape(p) for p in points}) != 1 or np.ndim(points[0]) != 2:
            raise BadInputError(f'point planes must be three H x W arrays, got {[np.shape(p) for p in points]}')
        points = tuple(np.asarray(p) for p in points)
        shape, z = points[0].shape, points[2]
    else:
        points = np.asarray(points)
        if points.ndim != 3 or points.shape[2] != 3:
            raise BadInputError(f'points must be H x W x 3, got shape {points.shape}')
        shape, z = points.shape[:2], points[..., 2]
    if rgb is not None and np.shape(rgb) != (*shape, 3):
        raise BadInputError(f'rgb must be {shape[0]} x {shape[1]} x 3 like the points, got {np.shape(rgb)}')
    if normals is not None and np.shape(normals) != (*shape, 3):
        raise BadInputError(f'normals must be {shape[0]} x {shape[1]} x 3 like the points, got {np.shape(normals)}')
    with_n = normals is not None
    keep = None if organized else np.isfinite(z)
    if keep is None or not keep.any():
        h, w = shape
        data, view = _cloud_buffer(h, w, rgb is not None, with_n, data)
        cloud.fill_organized(view, points, rgb, normals)
        return _cloud_message(data, header, h, w, rgb is not None, with_normals=with_n)
    n = int(keep.sum())
    data, view = _cloud_buffer(1, n, rgb is not None, with_n)
    kept = tuple(p[keep][None] for p in points) if isinstance(points, tuple) else points[keep][None]
    cloud.fill_organized(view, kept, None if rgb is None else rgb[keep][None],
                         None if normals is None else normals[keep][None])
    return _cloud_message(data, header, 1, n, rgb is not None, dense=True, with_normals=with_n)


def pointcloud2_to_numpy(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (points float32 H x W x 3, rgb uint8 H x W x 3 or None); any layout with float x, y, z."""
    return cloud.unpack_points(msg.data, msg.height, msg.width, msg.point_step, msg.row_step, msg.fields,
                               msg.is_bigendian)


def pointcloud2_normals(msg: PointCloud2) -> np.ndarray | None:
    """The normal_x/y/z fields of a PointCloud2 as float32 H x W x 3, or None when it has none."""
    return cloud.unpack_normals(msg.data, msg.height, msg.width, msg.point_step, msg.row_step, msg.fields,
                                msg.is_bigendian)
