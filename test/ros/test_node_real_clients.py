"""What real cameras and image_transport publish, through the running node across processes.

The node runs as a subprocess (its console script) on a tiny ONNX model exported at 160 x 120 with compressed input;
this process publishes real CompressedImage / CameraInfo messages and reads the node's outputs, /diagnostics, its
parameter service and its log.
"""
from __future__ import annotations

import os
import re
import time

import cv2
import numpy as np
import pytest
from node_harness import NodeHarness, serving, smooth_rgb, start_node
from png_files import huge_png_header, png_bytes

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]

W, H = 160, 120
NODE = 'mgeo_depth_node'


@pytest.fixture(scope='module')
def node(tiny_onnx, tmp_path_factory):
    ns = f'/nrc{os.getpid()}'
    log = tmp_path_factory.mktemp('clients_log') / 'node.log'
    proc = start_node(ns, {'model': str(tiny_onnx), 'backend': 'onnxruntime', 'image_transport': 'compressed',
                           'diagnostics_period': 0.2, 'points_color': True}, log_path=log)
    with serving(proc, NodeHarness(ns, 'clients_harness'), log, tail=4000) as running:
        running[0].wait_ready(proc, timeout=90, compressed=True)
        yield running


_stamp = [100]


def _key() -> tuple[int, int]:
    _stamp[0] += 1
    return 7000, _stamp[0]


def _header(key):
    from std_msgs.msg import Header

    header = Header(frame_id='cam_optical')
    header.stamp.sec, header.stamp.nanosec = key
    return header


def _send(harness, data, fmt: str, key=None, info=None):
    from sensor_msgs.msg import CompressedImage

    key = key or _key()
    if info is not None:
        info.header = _header(key)
        harness.info_pub.publish(info)
        time.sleep(0.05)
    msg = CompressedImage(header=_header(key), format=fmt)
    msg.data = bytes(data)
    harness.compressed_pub.publish(msg)
    return key


def _picture() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([255 - x * 255 // W, y * 255 // H, x * 255 // W], -1).astype(np.uint8)


def _cloud_rgb(harness, key) -> np.ndarray:
    from mgeo_ros.ros import convert

    points, rgb = convert.pointcloud2_to_numpy(harness.wait_outputs(key, topics=('points',))['points'])
    assert rgb is not None and rgb.shape == (H, W, 3)
    return rgb


def _bad(harness, reason: str, after: float) -> int:
    assert harness.wait_for(lambda: harness.latest_diagnostics(after), 5)
    return int(harness.latest_diagnostics(after).get(f'bad_input.{reason}', 0))


def test_png_stored_as_rgb_is_read_as_rgb(node):
    harness, _, _ = node
    rgb = _picture()
    key = _send(harness, cv2.imencode('.png', rgb)[1], 'rgb8; png compressed rgb8')  # bytes in RGB order
    np.testing.assert_array_equal(_cloud_rgb(harness, key), rgb)
    key = _send(harness, cv2.imencode('.png', rgb[..., ::-1].copy())[1], 'rgb8; png compressed bgr8')
    np.testing.assert_array_equal(_cloud_rgb(harness, key), rgb)


def test_mono16_png_keeps_its_16_bits(node):
    from mgeo_ros.ros import convert

    harness, _, _ = node
    gray = (np.random.default_rng(5).integers(0, 4096, (H, W))).astype(np.uint16)
    key = _send(harness, cv2.imencode('.png', gray)[1], 'mono16; png compressed ')
    expected = convert.image_to_rgb8(convert.numpy_to_image(gray, 'mono16'))  # raw mono16, same camera
    np.testing.assert_array_equal(_cloud_rgb(harness, key), expected)


def test_camera_info_p_describes_the_rectified_image(node):
    from sensor_msgs.msg import CameraInfo

    harness, _, _ = node
    info = CameraInfo(width=W, height=H, distortion_model='plumb_bob', d=[-0.25, 0.08, 0.0, 0.0, 0.0])
    info.k = [210.0, 0.0, 81.0, 0.0, 209.0, 60.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [180.0, 0.0, 79.0, 0.0, 0.0, 178.0, 61.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    key = _send(harness, cv2.imencode('.png', _picture())[1], 'rgb8; png compressed rgb8', info=info)
    published = harness.wait_outputs(key, topics=('depth/camera_info',))['depth/camera_info']
    k = np.reshape(published.k, (3, 3))
    np.testing.assert_allclose([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], [180.0, 178.0, 79.0, 61.0])
    np.testing.assert_allclose(np.reshape(published.p, (3, 4))[:, :3], k)  # publishes what it used
    assert harness.wait_for(lambda: harness.latest_diagnostics().get('intrinsics_source') == 'camera_info (P)', 5)


def test_unrectified_camera_is_warned_once_and_rectify_applies_live(node):
    from sensor_msgs.msg import CameraInfo

    harness, _, log = node
    info = CameraInfo(width=W, height=H, distortion_model='plumb_bob', d=[-0.3, 0.1, 0.0, 0.0, 0.0])
    info.k = [200.0, 0.0, 80.0, 0.0, 200.0, 60.0, 0.0, 0.0, 1.0]
    info.p = [200.0, 0.0, 80.0, 0.0, 0.0, 200.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # P = K with D != 0
    png = cv2.imencode('.png', _picture())[1]
    for _ in range(2):
        harness.wait_outputs(_send(harness, png, 'rgb8; png compressed rgb8', info=info), topics=('depth/image',))
    warned = [line for line in log.read_text().splitlines() if 'looks like an unrectified' in line]
    assert len(warned) == 1 and '[WARN]' in warned[0], warned
    results = harness.set_parameters(NODE, {'rectify': True})
    assert results[0].successful, results[0].reason
    after = time.monotonic()
    harness.wait_outputs(_send(harness, png, 'rgb8; png compressed rgb8', info=info), topics=('depth/image',))
    assert harness.wait_for(lambda: 'latency_ms.rectify.median' in harness.latest_diagnostics(after), 5)
    assert harness.set_parameters(NODE, {'rectify': False})[0].successful


def _peak_rss_mib(pid: int) -> float:
    text = open(f'/proc/{pid}/status').read()
    return int(re.search(r'VmHWM:\s+(\d+) kB', text).group(1)) / 1024


def test_oversized_frames_are_refused_before_decoding_by_their_own_reason(node):
    harness, proc, _ = node
    before = _peak_rss_mib(proc.pid)
    start = time.monotonic()
    _send(harness, huge_png_header(), 'rgb8; png compressed bgr8')  # 40000 x 40000: over OpenCV's own limit
    time.sleep(0.3)
    _send(harness, png_bytes(8000, 8000), 'mono8; png compressed ')  # 61 KiB that decode to 8000 x 8000
    assert harness.wait_for(lambda: _bad(harness, 'image_too_large', start) == 2, 10), harness.latest_diagnostics()
    assert _bad(harness, 'internal_error', start) == 0
    grown = _peak_rss_mib(proc.pid) - before
    assert grown < 48, f'the node\'s peak memory grew by {grown:.0f} MiB'
    key = _send(harness, cv2.imencode('.png', _picture())[1], 'rgb8; png compressed rgb8')
    harness.wait_outputs(key, topics=('depth/image',))  # and it keeps working


def test_damaged_pngs_are_one_throttled_reason_and_libpng_stays_quiet(node):
    harness, _, log = node
    start = time.monotonic()
    lines_before = len(log.read_text().splitlines())
    png = bytearray(cv2.imencode('.png', _picture())[1].tobytes())
    png[len(png) // 2] ^= 0xFF
    for _ in range(12):
        _send(harness, png, 'rgb8; png compressed bgr8')
        time.sleep(0.05)
    assert harness.wait_for(lambda: _bad(harness, 'image_decode', start) >= 6, 10), harness.latest_diagnostics()
    new = log.read_text().splitlines()[lines_before:]
    assert not [line for line in new if line.startswith('libpng')], new
    said = [line for line in new if 'does not decode' in line]
    assert 1 <= len(said) <= 2 and '[WARN]' in said[0] and 'libpng' in said[0], said  # throttled, with libpng's words


def test_frame_sizes_that_stretch_the_model_are_warned_through_the_ros_log_once_each(node):
    harness, _, log = node
    for w, h in ((160, 90), (90, 160), (160, 90)):
        rgb = np.ascontiguousarray(cv2.resize(_picture(), (w, h)))
        key = _send(harness, cv2.imencode('.png', rgb)[1], 'rgb8; png compressed rgb8')
        harness.wait_outputs(key, topics=('depth/image',))
    text = log.read_text().splitlines()
    for size in ('160x90', '90x160'):
        said = [line for line in text if f'frame {size} has another aspect ratio' in line]
        assert len(said) == 1 and said[0].startswith('[WARN]') and NODE in said[0], said


def test_a_parameter_of_the_wrong_type_is_refused_naming_it_and_the_type(node):
    harness, _, _ = node
    result = harness.set_parameters(NODE, {'points_stride': 2.5})[0]
    assert not result.successful
    assert 'points_stride' in result.reason and 'integer' in result.reason, result.reason
    result = harness.set_parameters(NODE, {'max_depth': 'far'})[0]
    assert not result.successful and 'max_depth' in result.reason and 'number' in result.reason, result.reason
    assert harness.set_parameters(NODE, {'max_depth': 5})[0].successful  # an integer for a float is fine
    assert harness.set_parameters(NODE, {'max_depth': 0.0})[0].successful


def _depth_image_proc_cloud(depth: np.ndarray, info, stride: int) -> np.ndarray:
    """depth_image_proc's point_cloud_xyz on a 32FC1 depth with its camera_info (image_geometry's cx(), fx()...:
    P's entries), at every stride-th pixel: x = (u - cx) z / fx, y = (v - cy) z / fy, z."""
    p = np.reshape(info.p, (3, 4))
    fx, fy, cx, cy = p[0, 0], p[1, 1], p[0, 2], p[1, 2]
    z = depth[::stride, ::stride].astype(np.float64)
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride].astype(np.float64)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], -1)


def test_output_scale_half_on_a_720p_jpeg_decodes_reduced_and_real_clients_agree(node):
    """A 1280 x 720 JPEG with output_scale 0.5: decoded at 640 x 360 (libjpeg DCT scaling; the tiny model's input is
    280 x 210), every output 640 x 360, camera_info K and P scaled by 0.5 as image_proc's resize scales them with the
    input's header, the cloud depth_image_proc's unprojection of the published depth with the published camera_info,
    and the depth consistent with a full decode at output_scale 1 shrunk by area."""
    from sensor_msgs.msg import CameraInfo

    from mgeo_ros.ros import convert

    harness, _, _ = node
    rgb = smooth_rgb(1280, 720, seed=3, box=(slice(200, 500), slice(400, 800)))
    jpeg = cv2.imencode('.jpg', rgb[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    info = CameraInfo(width=1280, height=720, distortion_model='plumb_bob', d=[0.0] * 5)
    info.k = [1000.0, 0.0, 641.5, 0.0, 998.0, 358.5, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [1000.0, 0.0, 641.5, 0.0, 0.0, 998.0, 358.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    topics = ('depth/image', 'depth/camera_info', 'points', 'depth/mask')
    try:
        assert all(r.successful for r in harness.set_parameters(NODE, {'output_scale': 0.5, 'points_stride': 4}))
        after = time.monotonic()
        key = _send(harness, jpeg, 'jpeg', info=info)
        got = harness.wait_outputs(key, topics=topics)
        depth = convert.image_to_numpy(got['depth/image'])
        assert depth.shape == (360, 640)
        assert (got['depth/mask'].width, got['depth/mask'].height) == (640, 360)
        published = got['depth/camera_info']
        assert (published.width, published.height) == (640, 360)
        assert (published.header.stamp.sec, published.header.stamp.nanosec) == key
        assert published.header.frame_id == 'cam_optical'
        k = np.reshape(published.k, (3, 3))
        np.testing.assert_allclose([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], [500.0, 499.0, 320.75, 179.25])
        np.testing.assert_allclose(np.reshape(published.p, (3, 4))[:, :3], k)
        points, _ = convert.pointcloud2_to_numpy(got['points'])
        assert points.shape == (90, 160, 3)
        # float32 cloud against the float64 formula on the same float32 depth: a few float32 ulps
        np.testing.assert_allclose(points, _depth_image_proc_cloud(depth, published, 4), rtol=1e-5, atol=1e-6)
        assert harness.wait_for(lambda: harness.latest_diagnostics(after).get('decoded') == '640x360', 5), \
            harness.latest_diagnostics()
        assert harness.latest_diagnostics(after)['output_size'] == '640x360'

        assert all(r.successful for r in harness.set_parameters(NODE, {'output_scale': 1.0}))
        after = time.monotonic()
        full = convert.image_to_numpy(harness.wait_outputs(_send(harness, jpeg, 'jpeg', info=info),
                                                           topics=('depth/image',))['depth/image'])
        assert full.shape == (720, 1280)
        assert harness.wait_for(lambda: harness.latest_diagnostics(after).get('decoded') == '1280x720', 5)
    finally:
        harness.set_parameters(NODE, {'output_scale': 1.0, 'points_stride': 1})
    valid = np.isfinite(full)
    area = cv2.resize(np.where(valid, full, 0).astype(np.float32), (640, 360), interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(valid.astype(np.float32), (640, 360), interpolation=cv2.INTER_AREA)
    both = (coverage == 1.0) & np.isfinite(depth)
    assert both.mean() > 0.5
    rel = np.abs(depth[both] - area[both]) / area[both]
    # the network sees the frame through two resamplings (DCT-scaled decode + area, or full decode + area) that differ
    # by about a grey level, and the two depths by the kinks of the bilinear upsampling inside a 2 x 2 block: about
    # 2e-4 here; the bounds leave 10x for other CPUs' kernels
    assert np.median(rel) < 2e-3 and np.quantile(rel, 0.99) < 1e-2
