"""sensor_msgs/Image and CompressedImage payloads -> numpy, for any message object with those fields.

One decoder for the node (rclpy messages, `mgeo_ros.ros.convert`) and for training/evaluation on bags (rosbags
messages, `mgeo_ros.train.data.bag`), so a model is trained on exactly the pixels the node will feed it. Pure
numpy/OpenCV: no rclpy, no torch. Malformed messages raise `BadInputError` naming the offending field.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from mgeo_ros.errors import BadInputError, ImageDecodeError, ImageTooLargeError
from mgeo_ros.image_header import read_header
from mgeo_ros.native_stderr import claim_stderr

# encoding -> (little-endian element dtype, channels). yuv422 variants are 2 bytes per pixel, kept raw as H x W x 2.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype('u1'), 3), 'bgr8': (np.dtype('u1'), 3), '8UC3': (np.dtype('u1'), 3),
    'rgba8': (np.dtype('u1'), 4), 'bgra8': (np.dtype('u1'), 4),
    'mono8': (np.dtype('u1'), 1), '8UC1': (np.dtype('u1'), 1),
    'mono16': (np.dtype('<u2'), 1), '16UC1': (np.dtype('<u2'), 1),
    '32FC1': (np.dtype('<f4'), 1),
    'yuv422': (np.dtype('u1'), 2), 'uyvy': (np.dtype('u1'), 2),
    'yuv422_yuy2': (np.dtype('u1'), 2), 'yuyv': (np.dtype('u1'), 2),
}
UYVY_ENCODINGS = ('yuv422', 'uyvy')
YUYV_ENCODINGS = ('yuv422_yuy2', 'yuyv')
HOST_BIG_ENDIAN = sys.byteorder == 'big'


class RawImage(Protocol):
    """The fields of sensor_msgs/Image this module reads (rclpy and rosbags messages both have them)."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: int
    data: Any


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel takes in `encoding` (raises BadInputError for unknown encodings)."""
    if encoding not in ENCODINGS:
        raise BadInputError(f'encoding {encoding!r} is not supported; use one of {sorted(ENCODINGS)}')
    dtype, channels = ENCODINGS[encoding]
    return dtype.itemsize * channels


def image_to_numpy(msg: RawImage) -> np.ndarray:
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
    if dtype.itemsize > 1 and big != HOST_BIG_ENDIAN:
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


# 8UC3 carries no colour order; OpenCV (and so most drivers that publish it) writes BGR.
_TO_RGB = {'bgr8': cv2.COLOR_BGR2RGB, '8UC3': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
           'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB}


def image_to_rgb8(msg: RawImage, max_pixels: int | None = None) -> np.ndarray:
    """Any supported Image -> C-contiguous RGB uint8 H x W x 3 (a view when the message already is unpadded rgb8).

    mono16 is scaled by its bit depth (8/10/12/14/16 bits, from the frame's peak); 16UC1 and 32FC1 (depth-like) are
    scaled so that 0 maps to 0 and the frame's largest finite value to 255; NaN/Inf become 0.
    max_pixels: refuse larger images (ImageTooLargeError) before converting them.
    """
    check_pixels(int(msg.width), int(msg.height), max_pixels)
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


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = 'image') -> None:
    """Raise ImageTooLargeError when width x height exceeds `max_pixels` (None or 0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(f'{what} is {width}x{height} = {width * height} pixels, over max_input_pixels '
                                 f'{max_pixels}; refused before decoding (resize at the camera, or raise '
                                 'max_input_pixels)')


def split_format(fmt: str) -> tuple[str, str]:
    """image_transport's CompressedImage.format 'rgb8; png compressed bgr8' -> ('rgb8', 'png compressed bgr8');
    an old-style format without ';' ('jpeg') -> ('', 'jpeg')."""
    if ';' not in fmt:
        return '', fmt.strip()
    original, compressed = fmt.split(';', 1)
    return original.strip(), compressed.strip()


# What libpng, libjpeg and OpenCV's codecs print on fd 2 about a damaged file (claimed while decoding). OpenCV's
# own lines look like `[ WARN:0@1.2] ...`.
_DECODER_LINE = re.compile(r'libpng (warning|error)|JPEG|jpeg|Huffman|marker 0x|imgcodecs|\[ ?(WARN|ERROR):')
# A ROS console line (rcutils' default format `[WARN] [stamp] [logger]: ...`) that another thread writes during the
# decode is passed on, never claimed, even when it mentions a JPEG (another camera's decoder warning, say).
_ROS_LOG_LINE = re.compile(r'\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[')


def _is_decoder_line(line: str) -> bool:
    return bool(_DECODER_LINE.search(line)) and not _ROS_LOG_LINE.match(line)


def imdecode_checked(data: np.ndarray, what: str, warn: Callable[[str], None] | None,
                     flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imdecode(flags) whose failures (None, OpenCV asserts, the codec's own stderr lines) become one
    ImageDecodeError; stderr lines of a decode that still produced an image go to `warn`."""
    with claim_stderr(_is_decoder_line) as said:
        try:
            out = cv2.imdecode(data, flags)
        except cv2.error as exc:
            out, said = None, said + [str(exc).strip().splitlines()[-1]]
    detail = '; '.join(dict.fromkeys(said))  # unique, in order
    if out is None or out.size == 0:
        raise ImageDecodeError(f'data ({data.size} bytes) does not decode as {what}' + (f': {detail}' if detail
                                                                                        else ''))
    if detail and warn is not None:
        warn(f'decoder warnings for a {what} frame (decoded anyway): {detail}')
    return out


_RGB_ORDER = ('rgb8', 'rgba8', 'rgb16', 'rgba16', 'bgr8', 'bgra8', 'bgr16', 'bgra16')


def _compressed_payload(msg: Any, max_pixels: int | None):
    """The checks every CompressedImage decode makes first: (bytes, header or None, what it is, original encoding,
    lowered compressed format)."""
    fmt = msg.format or ''
    original, compressed = split_format(fmt)
    lowered = compressed.lower()
    if (lowered and not any(k in lowered for k in ('jpeg', 'jpg', 'png'))) or 'compresseddepth' in fmt.lower():
        raise BadInputError(f'format {fmt!r} is not jpeg or png')
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise BadInputError('data is empty')
    header = read_header(data)
    what = header.kind if header is not None else (fmt or 'an image')
    if header is not None:
        check_pixels(header.width, header.height, max_pixels, f'the {header.kind} image')
        if header.problem:
            raise ImageDecodeError(f'data ({data.size} bytes) is a damaged {header.kind}: {header.problem}')
    return data, header, what, original, lowered


def _stored_bgr(original: str, lowered: str) -> bool:
    """Whether decoded colour bytes are in BGR order (compressed_image_transport's format rule)."""
    return 'bgr' in lowered or not original or original not in _RGB_ORDER


def compressed_to_rgb8(msg: Any, max_pixels: int | None = None, warn: Callable[[str], None] | None = None,
                       ) -> np.ndarray:
    """CompressedImage (jpeg or png) -> RGB uint8 H x W x 3, read the way compressed_image_transport's subscriber
    reads it.

    `format` is '<encoding>; <jpeg|png> compressed <stored order>': the decoded bytes are in BGR order when the
    stored order says 'bgr', otherwise in RGB order for a colour encoding ('rgb8; png compressed rgb8'); a format
    without ';' ('jpeg') is an ordinary file (BGR in OpenCV). 16-bit PNGs keep their 16 bits and are scaled like the
    raw encoding (mono16 by bit depth, 16UC1 by the frame's peak).
    max_pixels: refuse (ImageTooLargeError) from the PNG/JPEG header, before decoding. A damaged file raises
    ImageDecodeError with what the codec said; codec warnings on a frame that still decodes go to `warn`.
    """
    data, _header, what, original, lowered = _compressed_payload(msg, max_pixels)
    image = imdecode_checked(data, what, warn)
    if image.ndim == 2 or image.shape[2] == 1:
        gray = image.reshape(image.shape[:2])
        if gray.dtype == np.uint16:
            top = float(gray.max()) if original == '16UC1' else None
            return _gray3(_scale_to_uint8(gray, top) if top is not None else _mono16_to_uint8(gray))
        return _gray3(gray.astype(np.uint8, copy=False))
    if image.dtype == np.uint16:  # rgb16 / bgr16 PNG: keep the colours, 8 bits are all the model takes
        image = _mono16_to_uint8(image)
    four = image.shape[2] == 4
    if _stored_bgr(original, lowered):
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if four else cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB) if four else np.ascontiguousarray(image)


def depth_image_to_metres(msg: RawImage) -> np.ndarray:
    """A depth Image (REP 118: 32FC1 metres, 16UC1/mono16 millimetres) -> a new float32 H x W array in metres with
    NaN wherever the sensor had no return (NaN, inf, 0 or negative)."""
    encoding = msg.encoding
    if encoding not in ('16UC1', 'mono16', '32FC1'):
        raise BadInputError(f'depth Image.encoding {encoding!r}: expected 16UC1 (mm) or 32FC1 (m), as REP 118 says; '
                            'publish the depth in one of those')
    a = image_to_numpy(msg)
    d = a.astype(np.float32) if encoding == '32FC1' else np.multiply(a, np.float32(1e-3), dtype=np.float32)
    d[~(np.isfinite(d) & (d > 0))] = np.nan
    return d


# ---- decoding at a reduced size --------------------------------------------------------------------------------------
REDUCTIONS = (8, 4, 2)  # libjpeg's DCT scaling factors that OpenCV exposes (IMREAD_REDUCED_COLOR_2/4/8)
_JPEG_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass(frozen=True)
class ReducedFrame:
    """A frame decoded at 1/factor of its size. `scale` maps frame pixels to `rgb` pixels with the pixel-centre
    convention, x' = (x + 0.5)·sx − 0.5: hand it to `Intrinsics.resized(w, h, scale=scale)` so the intrinsics follow
    the decoded pixels exactly."""

    rgb: np.ndarray  # RGB uint8 h x w x 3
    frame_size: tuple[int, int]  # (W, H) as sent
    factor: int
    scale: tuple[float, float]


def compressed_size(msg: Any) -> tuple[int, int] | None:
    """(W, H) of a CompressedImage from its PNG/JPEG header, without decoding (None when the header does not
    say): what `reduction_factor` is asked with before the decode."""
    header = read_header(np.frombuffer(msg.data, np.uint8), check=False)
    return None if header is None else (int(header.width), int(header.height))


def reduced_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(W, H) of a frame decoded at 1/factor: rounded up, as libjpeg's DCT scaling sizes its output."""
    return -(-int(width) // factor), -(-int(height) // factor)


def reduction_factor(width: int, height: int, need_width: int, need_height: int) -> int:
    """The largest of 8, 4, 2 whose reduced frame is still at least need_width x need_height (the largest size the
    frame is used at: the network input, the outputs); 1 when even halving is too small."""
    for factor in REDUCTIONS:
        w, h = reduced_size(width, height, factor)
        if w >= need_width and h >= need_height:
            return factor
    return 1


def _check_factor(factor: int) -> int:
    if factor not in (1,) + REDUCTIONS:
        raise BadInputError(f'reduction factor must be one of 1, 2, 4, 8, got {factor!r}')
    return int(factor)


def _area_reduced(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by `factor` with INTER_AREA (every source pixel averaged once: the alias-free box filter)."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, reduced_size(w, h, factor), interpolation=cv2.INTER_AREA)


def _reduced(rgb: np.ndarray, size: tuple[int, int], factor: int, dct: bool = False) -> ReducedFrame:
    h, w = rgb.shape[:2]
    # DCT scaling maps each factor x factor block to one pixel (the last one partial when the size is not a
    # multiple); cv2.resize maps the whole frame onto the whole output.
    scale = (1.0 / factor, 1.0 / factor) if dct else (w / size[0], h / size[1])
    return ReducedFrame(rgb, size, factor, scale)


def compressed_to_rgb8_reduced(msg: Any, factor: int, max_pixels: int | None = None,
                               warn: Callable[[str], None] | None = None) -> ReducedFrame:
    """CompressedImage -> RGB uint8 at 1/factor of its size (`reduced_size`), read like `compressed_to_rgb8`.

    An 8-bit JPEG is decoded straight at the reduced size (libjpeg's DCT scaling: the full-size frame is never made);
    a PNG (or a JPEG of another depth) is decoded whole, then shrunk with INTER_AREA. factor 1: the full decode."""
    factor = _check_factor(factor)
    data, header, what, original, lowered = _compressed_payload(msg, max_pixels)
    if header is not None and header.kind == 'jpeg' and header.bit_depth == 8 and factor > 1:
        image = imdecode_checked(data, what, warn, _JPEG_REDUCED[factor])  # always 3 channels, decoder order
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if _stored_bgr(original, lowered) else image
        return _reduced(rgb, (header.width, header.height), factor, dct=True)
    full = compressed_to_rgb8(msg, max_pixels, warn)
    size = (full.shape[1], full.shape[0])
    return _reduced(full if factor == 1 else _area_reduced(full, factor), size, factor)


def image_to_rgb8_reduced(msg: RawImage, factor: int, max_pixels: int | None = None) -> ReducedFrame:
    """Image -> RGB uint8 at 1/factor of its size (`reduced_size`), shrunk with INTER_AREA straight from the message
    bytes (a strided view: no full-size copy); colour orders and yuv422 are converted after the shrink, where there
    are factor² fewer pixels. Depth-like encodings (mono16, 16UC1, 32FC1) are converted first (their scaling reads
    the whole frame), then shrunk. factor 1: `image_to_rgb8`."""
    factor = _check_factor(factor)
    size = (int(msg.width), int(msg.height))
    encoding = msg.encoding
    if factor == 1 or encoding not in ('rgb8',) + tuple(_TO_RGB) + UYVY_ENCODINGS + YUYV_ENCODINGS:
        rgb = image_to_rgb8(msg, max_pixels)
        return _reduced(rgb if factor == 1 else _area_reduced(rgb, factor), size, factor)
    check_pixels(size[0], size[1], max_pixels)
    arr = image_to_numpy(msg)
    if encoding in UYVY_ENCODINGS + YUYV_ENCODINGS:
        # chroma is shared by pixel pairs: convert whole rows (cheap, one pass), then shrink the RGB
        return _reduced(_area_reduced(yuv422_to_rgb8(arr, encoding), factor), size, factor)
    small = _area_reduced(arr, factor)
    if encoding == 'rgb8':
        return _reduced(small, size, factor)
    return _reduced(cv2.cvtColor(small, _TO_RGB[encoding]), size, factor)
