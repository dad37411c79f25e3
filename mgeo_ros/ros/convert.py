"""sensor_msgs <-> numpy without cv_bridge: Image, CompressedImage, CameraInfo, PointCloud2.

Reading honours `step` (row padding) and `is_bigendian` and returns zero-copy views of the message's data where the
layout allows it. Writing fills the message's own `array('B')` in one pass (rclpy's fast path; a list or bytes would
be checked element by element). Malformed messages raise `BadInputError` naming the offending field.
"""
from __future__ import annotations

import array
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.ros import cloud

# encoding -> (little-endian element dtype, channels). yuv422 variants are 2 bytes per pixel, kept raw as H x W x 2.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype('u1'), 3), 'bgr8': (np.dtype('u1'), 3),
    'rgba8': (np.dtype('u1'), 4), 'bgra8': (np.dtype('u1'), 4),
    'mono8': (np.dtype('u1'), 1), '8UC1': (np.dtype('u1'), 1),
    'mono16': (np.dtype('<u2'), 1), '16UC1': (np.dtype('<u2'), 1),
    '32FC1': (np.dtype('<f4'), 1),
    'yuv422': (np.dtype('u1'), 2), 'uyvy': (np.dtype('u1'), 2),
    'yuv422_yuy2': (np.dtype('u1'), 2), 'yuyv': (np.dtype('u1'), 2),
}
UYVY_ENCODINGS = ('yuv422', 'uyvy')
YUYV_ENCODINGS = ('yuv422_yuy2', 'yuyv')
_HOST_BIG_ENDIAN = sys.byteorder == 'big'


def _header(header: Header | None) -> Header:
    return Header() if header is None else header


def _to_byte_array(buf: np.ndarray) -> array.array:
    """One copy of a C-contiguous numpy buffer into the array('B') rclpy stores without per-element checks."""
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(buf)).cast('B'))
    return out


def _zeroed_byte_array(nbytes: int) -> array.array:
    return array.array('B', b'\0') * nbytes


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel takes in `encoding` (raises BadInputError for unknown encodings)."""
    if encoding not in ENCODINGS:
        raise BadInputError(f'encoding {encoding!r} is not supported; use one of {sorted(ENCODINGS)}')
    dtype, channels = ENCODINGS[encoding]
    return dtype.itemsize * channels


# ---- Image -> numpy -------------------------------------------------------------------------------------------------
def image_to_numpy(msg: Image) -> np.ndarray:
    """Image -> H x W (one channel) or H x W x C array in the encoding's own layout (BGR stays BGR).

    A zero-copy view over msg.data (strided when rows are padded), except for big-endian multi-byte data on a
    little-endian host, which is converted to native byte order. yuv422 variants come back raw as H x W x 2.
    """
    encoding = msg.encoding
    bpp = bytes_per_pixel(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0:
        raise BadInputError(f'height must be positive, got {height}')
    if width <= 0:
        raise BadInputError(f'width must be positive, got {width}')
    if step < width * bpp:
        raise BadInputError(f'step {step} < width {width} x {bpp} bytes per pixel ({encoding})')
    if encoding in UYVY_ENCODINGS + YUYV_ENCODINGS and width % 2:
        raise BadInputError(f'width must be even for {encoding}, got {width}')
    data = np.frombuffer(msg.data, np.uint8)
    need = step * (height - 1) + width * bpp
    if data.size < need:
        raise BadInputError(f'data has {data.size} bytes, needs {need} for {height} rows of step {step}')
    dtype, channels = ENCODINGS[encoding]
    big = bool(msg.is_bigendian)
    if dtype.itemsize > 1 and big:
        dtype = dtype.newbyteorder('>')
    arr = np.ndarray((height, width, channels), dtype, buffer=data,
                     strides=(step, channels * dtype.itemsize, dtype.itemsize))
    if dtype.itemsize > 1 and big != _HOST_BIG_ENDIAN:
        arr = arr.astype(dtype.newbyteorder('='))
    return arr[..., 0] if channels == 1 else arr


def _scale_to_uint8(gray: np.ndarray, top: float) -> np.ndarray:
    scaled = np.multiply(gray, np.float32(255.0 / top) if top > 0 else np.float32(0.0), dtype=np.float32)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _mono16_to_uint8(gray: np.ndarray) -> np.ndarray:
    """Camera intensities: scale by the container's bit depth (8/10/12/14/16 bits), stable from frame to frame."""
    peak = int(gray.max())
    bits = next(b for b in (8, 10, 12, 14, 16) if peak < (1 << b))
    return _scale_to_uint8(gray, float((1 << bits) - 1))


def _gray3(gray8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray8, cv2.COLOR_GRAY2RGB)


_YUV_TO_RGB = {'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'uyvy': cv2.COLOR_YUV2RGB_UYVY,
               'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2, 'yuyv': cv2.COLOR_YUV2RGB_YUY2}


def yuv422_to_rgb8(raw: np.ndarray, encoding: str = 'yuv422') -> np.ndarray:
    """Raw H x W x 2 yuv422 (UYVY for 'yuv422', YUYV for 'yuv422_yuy2') -> RGB uint8, BT.601 video range."""
    if encoding not in _YUV_TO_RGB:
        raise BadInputError(f'encoding {encoding!r} is not a yuv422 variant')
    return cv2.cvtColor(raw, _YUV_TO_RGB[encoding])


def rgb8_to_yuv422(rgb: np.ndarray, encoding: str = 'yuv422') -> np.ndarray:
    """RGB uint8 H x W x 3 (W even) -> raw H x W x 2 yuv422 bytes (BT.601 video range; chroma averaged per pair)."""
    if rgb.shape[1] % 2:
        raise BadInputError(f'width must be even for {encoding}, got {rgb.shape[1]}')
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    chroma = np.empty(rgb.shape[:2], np.float32)
    chroma[:, 0::2] = 0.5 * (u[:, 0::2] + u[:, 1::2])
    chroma[:, 1::2] = 0.5 * (v[:, 0::2] + v[:, 1::2])
    planes = (chroma, y) if encoding in UYVY_ENCODINGS else (y, chroma) if encoding in YUYV_ENCODINGS else None
    if planes is None:
        raise BadInputError(f'encoding {encoding!r} is not a yuv422 variant')
    return np.clip(np.stack(planes, axis=2) + 0.5, 0, 255).astype(np.uint8)


_TO_RGB = {'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
           'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB}


def image_to_rgb8(msg: Image) -> np.ndarray:
    """Any supported Image -> C-contiguous RGB uint8 H x W x 3 (a view when the message already is unpadded rgb8).

    mono16 is scaled by its bit depth (8/10/12/14/16 bits, from the frame's peak); 16UC1 and 32FC1 (depth-like) are
    scaled so that 0 maps to 0 and the frame's largest finite value to 255; NaN/Inf become 0.
    """
    arr = image_to_numpy(msg)
    encoding = msg.encoding
    if encoding == 'rgb8':
        return np.ascontiguousarray(arr)
    if encoding in _TO_RGB:  # OpenCV's SIMD channel shuffles read the (possibly padded) view directly
        return cv2.cvtColor(arr, _TO_RGB[encoding])
    if encoding == 'mono16':
        return _gray3(_mono16_to_uint8(arr))
    if encoding == '16UC1':
        return _gray3(_scale_to_uint8(arr, float(arr.max())))
    if encoding == '32FC1':
        finite = np.where(np.isfinite(arr), arr, np.float32(0.0))
        return _gray3(_scale_to_uint8(np.maximum(finite, 0), float(finite.max())))
    return yuv422_to_rgb8(arr, encoding)


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
    msg = Image()
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


def depth_to_image(depth: np.ndarray, header: Header | None = None) -> Image:
    """Depth H x W in metres (NaN invalid, +Inf allowed) -> 32FC1 Image."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise BadInputError(f'depth must be H x W, got shape {depth.shape}')
    return numpy_to_image(depth.astype(np.float32, copy=False), '32FC1', header)


def mask_to_image(mask: np.ndarray, header: Header | None = None) -> Image:
    """Validity mask H x W (bool or 0/1) -> mono8 Image, 255 valid, 0 invalid."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BadInputError(f'mask must be H x W, got shape {mask.shape}')
    return numpy_to_image(mask.astype(bool).view(np.uint8) * np.uint8(255), 'mono8', header)


# ---- CompressedImage ------------------------------------------------------------------------------------------------
def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """CompressedImage (jpeg or png; `format` as image_transport writes it, e.g. 'rgb8; jpeg compressed bgr8')
    -> RGB uint8 H x W x 3."""
    fmt = (msg.format or '').lower()
    if (fmt and not any(k in fmt for k in ('jpeg', 'jpg', 'png'))) or 'compresseddepth' in fmt:
        raise BadInputError(f'format {msg.format!r} is not jpeg or png')
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise BadInputError('data is empty')
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise BadInputError(f'data ({data.size} bytes) does not decode as {msg.format or "an image"}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """CameraInfo -> Intrinsics of the image it describes (K; region of interest and binning applied)."""
    width, height = int(msg.width), int(msg.height)
    if width <= 0:
        raise BadInputError(f'camera_info.width must be positive, got {width}')
    if height <= 0:
        raise BadInputError(f'camera_info.height must be positive, got {height}')
    k = np.asarray(msg.k, np.float64).reshape(-1)
    if k.size != 9:
        raise BadInputError(f'camera_info.k must have 9 elements, got {k.size}')
    for index, name in ((0, 'fx'), (4, 'fy')):
        if not (np.isfinite(k[index]) and k[index] > 0):
            raise BadInputError(f'camera_info.k[{index}] ({name}) must be a positive finite focal, got {k[index]}')
    for index, name in ((2, 'cx'), (5, 'cy')):
        if not np.isfinite(k[index]):
            raise BadInputError(f'camera_info.k[{index}] ({name}) must be finite, got {k[index]}')
    intr = Intrinsics.from_K(k, width, height)
    x0, y0, window_w, window_h = _sensor_window(msg)
    if (window_w, window_h) != (width, height):
        intr = intr.cropped(x0, y0, window_w, window_h)
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    if bx > 1 or by > 1:
        intr = intr.resized(intr.width // bx, intr.height // by)
    return intr


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


def resize_camera_info(msg: CameraInfo, width: int, height: int) -> CameraInfo:
    """The CameraInfo of the same camera after resizing its image to width x height (pixel-centre exact).

    K and P (with Tx/Ty) map through the same pixel transform; D, R and the distortion model carry over; an ROI and
    binning in `msg` are folded in (the result has none)."""
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise BadInputError(f'resize target width x height must be positive, got {width} x {height}')
    target = camera_info_to_intrinsics(msg).resized(width, height)
    x0, y0, window_w, window_h = _sensor_window(msg)
    ax, ay = width / window_w, height / window_h  # calibrated-sensor pixels -> target pixels
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
def _point_fields(with_rgb: bool) -> list[PointField]:
    return [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in cloud.cloud_fields(with_rgb)]


def points_to_pointcloud2(points: np.ndarray, header: Header | None = None, rgb: np.ndarray | None = None,
                          stride: int = 1, mask: np.ndarray | None = None) -> PointCloud2:
    """Points H x W x 3 (metres, NaN invalid) [+ RGB uint8] -> organized PointCloud2, xyz or xyzrgb float32.

    `stride` keeps every stride-th row and column (still organized); `mask` False writes NaN. The points are packed
    straight into the message's data array (no intermediate copy)."""
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3:
        raise BadInputError(f'points must be H x W x 3 (1 x N x 3 unorganized, N may be 0), got shape {points.shape}')
    stride = int(stride)
    if stride < 1:
        raise BadInputError(f'stride must be >= 1, got {stride}')
    with_rgb = rgb is not None
    h, w = cloud.decimated_shape(points.shape[0], points.shape[1], stride)
    step = cloud.point_step(with_rgb)
    data = _zeroed_byte_array(h * w * step)
    view = np.frombuffer(data, np.float32).reshape(h, w, step // 4)
    cloud.pack_points(points, rgb, stride, mask, out=view)
    msg = PointCloud2()
    msg.header = _header(header)
    msg.height, msg.width = h, w
    msg.fields = _point_fields(with_rgb)
    msg.is_bigendian = _HOST_BIG_ENDIAN
    msg.point_step, msg.row_step = step, step * w
    msg.is_dense = False
    msg.data = data
    return msg


def pointcloud2_to_numpy(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (points float32 H x W x 3, rgb uint8 H x W x 3 or None); any layout with float x, y, z."""
    return cloud.unpack_points(msg.data, msg.height, msg.width, msg.point_step, msg.row_step, msg.fields,
                               msg.is_bigendian)
