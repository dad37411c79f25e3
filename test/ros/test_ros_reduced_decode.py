"""Frames decoded at a reduced size (JPEG by DCT scaling, PNG and raw by INTER_AREA from the message bytes) match a
full-size decode + area resize, and their intrinsics follow the decoded pixels exactly."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage

from mgeo_ros.errors import BadInputError, ImageTooLargeError
from mgeo_ros.geometry import Intrinsics, project
from mgeo_ros.image_codec import (
    compressed_to_rgb8,
    compressed_to_rgb8_reduced,
    image_to_rgb8,
    image_to_rgb8_reduced,
    reduced_size,
    reduction_factor,
    rgb8_to_yuv422,
)
from mgeo_ros.ros import convert
from mgeo_ros.ros.serialized import parse_compressed_image, parse_image


def _scene(width: int, height: int) -> np.ndarray:
    """Smooth colour waves (no detail finer than the smallest reduction, so the decoders agree on it)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [128 + 100 * np.sin(x / 23 + y / 31), 128 + 100 * np.cos(x / 19 - y / 27), 128 + 90 * np.sin((x + y) / 29)]
    return np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)


def _area(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _jpeg(rgb: np.ndarray, quality: int = 95) -> CompressedImage:
    return convert.rgb8_to_compressed(rgb, fmt='jpeg', quality=quality)


@pytest.mark.parametrize(('frame', 'need', 'factor'), [
    ((1920, 1080), (518, 392), 2),   # the network input alone would allow 1/2 only (1080/4 = 270 < 392)
    ((1920, 1080), (960, 540), 2),   # output_scale 1/2
    ((1920, 1080), (961, 540), 1),   # one pixel more than half: no reduction
    ((3840, 2160), (518, 392), 4),
    ((4096, 3072), (504, 378), 8),
    ((640, 480), (518, 392), 1),
    ((637, 475), (160, 119), 4),     # rounded up like libjpeg: ceil(637/4) = 160, ceil(475/4) = 119
])
def test_the_largest_reduction_that_still_covers_the_largest_size_needed(frame, need, factor):
    assert reduction_factor(*frame, *need) == factor
    if factor > 1:
        w, h = reduced_size(*frame, factor)
        assert w >= need[0] and h >= need[1]
    if factor < 8:
        w, h = reduced_size(*frame, factor * 2)
        assert w < need[0] or h < need[1]


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_a_dct_scaled_jpeg_sits_on_the_pixel_grid_of_a_full_decode_and_area_resize(factor):
    rgb = _scene(640, 480)
    msg = _jpeg(rgb)
    reduced = compressed_to_rgb8_reduced(msg, factor)
    full = compressed_to_rgb8(msg)
    assert reduced.rgb.shape == (480 // factor, 640 // factor, 3) and reduced.frame_size == (640, 480)
    assert reduced.scale == (1 / factor, 1 / factor)
    ref = _area(full, (640 // factor, 480 // factor))
    # Measured shift (phase correlation, per channel) of the DCT-scaled decode against full decode + INTER_AREA:
    # |dx|, |dy| <= 0.04 px at 1/2, 1/4 and 1/8 on this 640x480 q95 frame (libjpeg 8/9, OpenCV 5.0). 0.1 px bounds
    # it with room for another libjpeg's rounding, and is 5x below the half-pixel error of a wrong pixel-centre rule.
    for c in range(3):
        (dx, dy), _ = cv2.phaseCorrelate(ref[..., c].astype(np.float64), reduced.rgb[..., c].astype(np.float64))
        assert abs(dx) < 0.1 and abs(dy) < 0.1, (c, dx, dy)
    # Same picture, not only the same grid: mean |difference| measured 0.42-0.46 grey levels (the two paths round
    # chroma and the DCT differently); 1.5 allows other libjpeg builds, a colour-order slip would be ~60.
    assert np.abs(reduced.rgb.astype(np.int16) - ref).mean() < 1.5


def test_a_jpeg_whose_size_is_not_a_multiple_of_the_factor_keeps_the_block_scale():
    rgb = _scene(637, 475)
    reduced = compressed_to_rgb8_reduced(_jpeg(rgb), 4)
    assert reduced.rgb.shape[:2] == (119, 160)  # libjpeg rounds the size up
    assert reduced.scale == (0.25, 0.25)  # ...while each 4x4 block is still one pixel
    intr = Intrinsics(500.0, 500.0, 318.0, 237.0, 637, 475).resized(160, 119, scale=reduced.scale)
    assert intr.cx == pytest.approx((318.0 + 0.5) / 4 - 0.5)


def test_intrinsics_of_a_reduced_decode_match_a_full_decode_and_resize():
    """A known 3-D point projects to the same place in the reduced frame through either path's intrinsics, and that
    place is where the point's pixel went: the reduced decode's bright dot is centred there."""
    width, height, factor = 1280, 720, 4
    intr = Intrinsics(900.0, 910.0, 641.3, 358.7, width, height)
    point = np.array([[0.31, -0.12, 2.0]])
    u, v = project(point, intr)[0]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dot = 255 * np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * 12.0 ** 2))  # a blob 12 px wide, centred on (u, v)
    rgb = np.repeat(dot[..., None], 3, axis=2).astype(np.uint8)
    msg = _jpeg(rgb, quality=98)
    reduced = compressed_to_rgb8_reduced(msg, factor)
    h, w = reduced.rgb.shape[:2]
    via_decode = intr.resized(w, h, scale=reduced.scale)
    via_resize = intr.resized(w, h)  # full-size decode + resize to (w, h)
    ur, vr = project(point, via_decode)[0]
    assert (ur, vr) == pytest.approx(tuple(project(point, via_resize)[0]), abs=1e-9)
    # the blob's centroid in the reduced frame: the reduced intrinsics put the point on it within 0.1 px (measured
    # 0.006 and 0.012; JPEG ringing at q98 moves a 3 px-wide blob's centroid by hundredths; the corner rule
    # cx·s would be 0.375 px off)
    g = reduced.rgb[..., 1].astype(np.float64)
    g = np.where(g > 20, g, 0)
    yy, xx = np.mgrid[0:h, 0:w]
    assert (g * xx).sum() / g.sum() == pytest.approx(ur, abs=0.1)
    assert (g * yy).sum() / g.sum() == pytest.approx(vr, abs=0.1)


def test_a_png_is_decoded_whole_then_shrunk_by_area():
    rgb = _scene(320, 240)
    msg = convert.rgb8_to_compressed(rgb, fmt='png')
    reduced = compressed_to_rgb8_reduced(msg, 2)
    np.testing.assert_array_equal(reduced.rgb, _area(rgb, (160, 120)))
    assert reduced.scale == (0.5, 0.5) and reduced.factor == 2


def test_factor_one_is_the_full_decode_and_other_factors_are_refused():
    rgb = _scene(64, 48)
    msg = _jpeg(rgb)
    np.testing.assert_array_equal(compressed_to_rgb8_reduced(msg, 1).rgb, compressed_to_rgb8(msg))
    with pytest.raises(BadInputError, match='one of 1, 2, 4, 8'):
        compressed_to_rgb8_reduced(msg, 3)


def test_oversized_frames_are_refused_before_decoding_at_any_factor():
    msg = _jpeg(_scene(64, 48))
    with pytest.raises(ImageTooLargeError):
        compressed_to_rgb8_reduced(msg, 2, max_pixels=1000)
    raw = parse_image(serialize_message(convert.numpy_to_image(_scene(64, 48), 'rgb8')))
    with pytest.raises(ImageTooLargeError):
        image_to_rgb8_reduced(raw, 2, max_pixels=1000)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'yuv422', 'yuv422_yuy2', 'mono16'])
@pytest.mark.parametrize('pad', [0, 7])
def test_raw_frames_shrink_straight_from_the_serialized_bytes(encoding, pad):
    rgb = _scene(320, 240)
    if encoding == 'rgb8':
        arr = rgb
    elif encoding in ('bgr8', 'bgra8', 'rgba8'):
        code = {'bgr8': cv2.COLOR_RGB2BGR, 'bgra8': cv2.COLOR_RGB2BGRA, 'rgba8': cv2.COLOR_RGB2RGBA}[encoding]
        arr = cv2.cvtColor(rgb, code)
    elif encoding == 'mono8':
        arr = rgb[..., 1].copy()
    elif encoding == 'mono16':
        arr = rgb[..., 1].astype(np.uint16) * 16  # a 12-bit camera
    else:
        arr = rgb8_to_yuv422(rgb, encoding)
    msg = convert.numpy_to_image(arr, encoding)
    if pad:  # rows padded to a larger step
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
        msg.step += pad
    parsed = parse_image(serialize_message(msg))
    reduced = image_to_rgb8_reduced(parsed, 4)
    expected = _area(image_to_rgb8(parsed), (80, 60))
    assert reduced.rgb.shape == (60, 80, 3) and reduced.frame_size == (320, 240) and reduced.scale == (0.25, 0.25)
    # shrinking before the colour conversion is exact for channel shuffles and grey; yuv422 is converted first (its
    # chroma is per pixel pair); every path differs from convert-then-shrink by the rounding of one resize: <= 1 level
    assert np.abs(reduced.rgb.astype(np.int16) - expected).max() <= 1


def test_a_compressed_frame_from_serialized_bytes_decodes_reduced():
    rgb = _scene(256, 192)
    parsed = parse_compressed_image(serialize_message(_jpeg(rgb)))
    reduced = compressed_to_rgb8_reduced(parsed, 2)
    assert reduced.rgb.shape == (96, 128, 3)
    assert np.abs(reduced.rgb.astype(np.int16) - _area(rgb, (128, 96))).mean() < 1.5  # as the grid test above




def _distorted_camera(width: int, height: int):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=width, height=height, distortion_model='plumb_bob', d=[-0.28, 0.09, 0.0005, -0.0004, 0.0])
    info.k = [0.8 * width, 0.0, width / 2 + 3.3, 0.0, 0.8 * width, height / 2 - 2.1, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [0.7 * width, 0.0, width / 2, 0.0, 0.0, 0.7 * width, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_a_camera_info_scaled_to_a_dct_decode_keeps_the_block_scale():
    """1283 x 721 at 1/2 decodes to 642 x 361 with pixels 2 source pixels wide (not 1283/642): the CameraInfo the
    rectifier uses follows the decoded pixels (`ReducedFrame.scale`), K as `Intrinsics.resized` with that scale."""
    info = _distorted_camera(1283, 721)
    scaled = convert.resize_camera_info(info, 642, 361, scale=(0.5, 0.5))
    k = Intrinsics.from_K(np.reshape(info.k, (3, 3)), 1283, 721).resized(642, 361, scale=(0.5, 0.5))
    np.testing.assert_allclose(np.reshape(scaled.k, (3, 3)), k.K, rtol=1e-12)
    p = np.reshape(scaled.p, (3, 4))
    assert p[0, 0] == pytest.approx(0.7 * 1283 * 0.5) and p[0, 2] == pytest.approx((1283 / 2 + 0.5) * 0.5 - 0.5)
    by_ratio = convert.resize_camera_info(info, 642, 361)
    assert np.reshape(by_ratio.k, (3, 3))[0, 0] != pytest.approx(k.fx, rel=1e-6)  # the ratio rule is another camera


def test_rectifying_a_reduced_decode_equals_rectifying_the_full_frame_then_shrinking():
    """The rectifier given the reduced frame and its scale undistorts it onto the same pixels as a full-size rectify
    shrunk by area: within 3 grey levels (bilinear remap of a shrunk image against the shrink of a remapped one, on
    smooth waves), away from the black border the remap leaves."""
    from mgeo_ros.ros.rectify import Rectifier

    width, height, factor = 1280, 720, 2
    rgb = _scene(width, height)
    info = _distorted_camera(width, height)
    reduced = compressed_to_rgb8_reduced(_jpeg(rgb, quality=98), factor)
    full = compressed_to_rgb8(_jpeg(rgb, quality=98))
    h, w = reduced.rgb.shape[:2]
    expected = _area(Rectifier()(full, info), (w, h)).astype(np.int16)
    got = Rectifier()(reduced.rgb, info, reduced.scale).astype(np.int16)
    inner = (slice(h // 8, -h // 8), slice(w // 8, -w // 8))
    diff = np.abs(got[inner] - expected[inner])
    assert np.median(diff) <= 1 and np.quantile(diff, 0.99) <= 3
