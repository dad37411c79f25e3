"""Scale anchors across processes with real rclpy: the node runs as a subprocess on the tiny ONNX model with
`scale_source: points,scan,depth`; this process publishes the camera and, as any sensor driver would, Image,
LaserScan and PointCloud2 anchors made to be twice the depth the model gives alone. The published depth follows
the anchors, /diagnostics names the source, and stale or unusable anchors fall back with the reason while frames
keep flowing."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from node_harness import NodeHarness, camera_intrinsics, serving, smooth_rgb, start_node

from mgeo_ros.geometry.rigid import RigidTransform, quaternion_from_rotation

pytestmark = pytest.mark.ros

W, H = 160, 120
NODE = 'mgeo_depth_node'
# The scan/cloud sensor ("lidar": x forward, y left, z up) at the camera's optical centre: optical = R @ lidar.
LIDAR_IN_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
EXTRINSICS = ' '.join(f'{v:.9f}' for v in (0.0, 0.0, 0.0, *quaternion_from_rotation(LIDAR_IN_OPTICAL)))
# Anchors are sampled from the published (bilinearly upsampled) depth and matched to the nearest network-grid pixel:
# on the tiny model's smooth depth the two differ by a few percent at most, which the robust fit averages out.
RATIO_TOL = 0.05


@pytest.fixture(scope='module')
def running(tiny_onnx, tmp_path_factory):
    ns = f'/sa{os.getpid()}'
    log = tmp_path_factory.mktemp('node_log') / 'node.log'
    proc = start_node(ns, {'model': str(tiny_onnx), 'diagnostics_period': 0.2, 'log_throttle': 0.0,
                           'flying_pixel_max_jump': 0.0, 'scale_source': 'points,scan,depth',
                           'scale_anchor_min_points': 20, 'scale_anchor_max_age': 0.05,
                           'scale_anchor_extrinsics': f'"{EXTRINSICS}"'}, log_path=log)
    harness = NodeHarness(ns, name='scale_anchors', outputs=('depth/image',))
    with serving(proc, harness, log) as (harness, _, log):
        anchors = AnchorPublishers(harness.node, ns)
        harness.wait_ready(proc, timeout=90)
        assert harness.wait_for(anchors.connected, 30), 'the node did not subscribe the anchor topics'
        yield harness, anchors, log


class AnchorPublishers:
    """Publishers of the three anchor topics in the node's namespace."""

    def __init__(self, node, ns: str) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, LaserScan, PointCloud2

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.depth = node.create_publisher(Image, f'{ns}/scale_anchor/depth', qos)
        self.scan = node.create_publisher(LaserScan, f'{ns}/scale_anchor/scan', qos)
        self.points = node.create_publisher(PointCloud2, f'{ns}/scale_anchor/points', qos)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.depth, self.scan, self.points))


def _header(key, frame_id: str):
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = key
    return header


def _depth_of(msgs) -> np.ndarray:
    from mgeo_ros.ros import convert

    return convert.image_to_numpy(msgs['depth/image']).astype(np.float64)


def _frame(harness, key, settle: float = 0.3) -> np.ndarray:
    """Publish the one test image at stamp `key` (anchors for it were published before) and return its depth."""
    import time

    time.sleep(settle)  # the anchor messages reach the node before the image they belong to
    harness.publish(smooth_rgb(W, H, 0), key, frame_id='cam_optical', intrinsics=camera_intrinsics(W, H))
    return _depth_of(harness.wait_outputs(key))


def _diagnostics_after(harness, frames: dict[str, int]) -> dict[str, str]:
    """The newest status once it counts at least `frames` frames per source."""
    def counted() -> bool:
        d = harness.latest_diagnostics()
        return all(int(d.get(f'scale_source.frames.{s}', -1)) >= n for s, n in frames.items())
    assert harness.wait_for(counted, 20), f'diagnostics never counted {frames}: {harness.latest_diagnostics()}'
    return harness.latest_diagnostics()


def _ratio(depth: np.ndarray, reference: np.ndarray) -> float:
    ok = np.isfinite(depth) & np.isfinite(reference) & (reference > 0)
    assert ok.sum() > 100, 'too few valid pixels to compare'
    return float(np.median(depth[ok] / reference[ok]))


def _sparse_depth_image(reference: np.ndarray, key, encoding: str = '32FC1'):
    from mgeo_ros.ros import convert

    sparse = np.full_like(reference, np.nan, dtype=np.float32)
    sparse[::6, ::6] = 2.0 * reference[::6, ::6]  # a few hundred LiDAR-like returns, twice the model's depth
    if encoding != '32FC1':
        return convert.numpy_to_image(np.zeros((H, W, 3), np.uint8), 'rgb8', _header(key, 'cam_optical'))
    return convert.numpy_to_image(sparse, '32FC1', _header(key, 'cam_optical'))


def _scan(reference: np.ndarray, key):
    """A horizontal LaserScan through the image's centre row, each beam at twice the model's depth there."""
    from sensor_msgs.msg import LaserScan

    intr = camera_intrinsics(W, H)
    row = int(round(intr.cy))
    cols = np.arange(4, W - 4, 1)
    z = 2.0 * reference[row, cols]
    theta = -np.arctan((cols - intr.cx) / intr.fx)  # lidar y (left) is optical -x
    order = np.argsort(theta)
    theta, r = theta[order], (z / np.cos(theta))[order]
    inc = float(np.min(np.diff(theta)))
    beams = np.arange(theta[0], theta[-1] + inc / 2, inc)
    ranges = np.interp(beams, theta, r).astype(np.float32)
    ranges[~np.isfinite(ranges)] = np.inf
    return LaserScan(header=_header(key, 'lidar'), angle_min=float(beams[0]), angle_max=float(beams[-1]),
                     angle_increment=inc, range_min=0.01, range_max=1000.0, ranges=ranges.tolist())


def _cloud(reference: np.ndarray, key):
    """An unorganized PointCloud2 in the lidar frame: twice the model's depth at a grid of pixels."""
    from sensor_msgs.msg import PointCloud2, PointField

    intr = camera_intrinsics(W, H)
    v, u = np.mgrid[4:H - 4:8, 4:W - 4:8]
    z = 2.0 * reference[v, u]
    ok = np.isfinite(z) & (z > 0)
    optical = np.stack([(u - intr.cx) / intr.fx * z, (v - intr.cy) / intr.fy * z, z], -1)[ok]
    lidar = optical @ LIDAR_IN_OPTICAL  # R^T applied to each row: optical -> lidar
    data = lidar.astype(np.float32)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate('xyz')]
    return PointCloud2(header=_header(key, 'lidar'), height=1, width=len(data), fields=fields, is_bigendian=False,
                       point_step=12, row_step=12 * len(data), data=data.tobytes(), is_dense=True)


def test_published_depth_follows_each_anchor_source_and_falls_back_with_the_reason(running):
    harness, anchors, log = running
    base = _frame(harness, (10, 0))  # nothing published yet: the model's own scale
    d = _diagnostics_after(harness, {'model': 1})
    assert d['scale_source'] == 'model'
    assert d['scale_source.depth.reason'] == 'no messages'
    assert np.isfinite(base).sum() > 100

    anchors.depth.publish(_sparse_depth_image(base, (11, 0)))
    got = _frame(harness, (11, 0))
    d = _diagnostics_after(harness, {'depth': 1})
    assert d['scale_source'] == 'depth'
    assert abs(_ratio(got, base) - 2.0) < 2.0 * RATIO_TOL, _ratio(got, base)
    assert abs(float(d['scale_anchor.ratio']) - 2.0) < 2.0 * RATIO_TOL
    assert int(d['scale_anchor.matched']) >= 20
    assert float(d['scale_anchor.residual']) < RATIO_TOL

    anchors.scan.publish(_scan(base, (12, 0)))
    got = _frame(harness, (12, 0))
    d = _diagnostics_after(harness, {'scan': 1})
    assert d['scale_source'] == 'scan', d
    assert abs(_ratio(got, base) - 2.0) < 2.0 * RATIO_TOL, _ratio(got, base)

    anchors.points.publish(_cloud(base, (13, 0)))
    got = _frame(harness, (13, 0))
    d = _diagnostics_after(harness, {'points': 1})
    assert d['scale_source'] == 'points', d
    assert abs(_ratio(got, base) - 2.0) < 2.0 * RATIO_TOL, _ratio(got, base)

    # every topic stops: the next frame is 1 s later, every anchor is stale -> the model's scale, with the reason
    got = _frame(harness, (14, 0))
    d = _diagnostics_after(harness, {'model': 2})
    assert d['scale_source'] == 'model'
    assert d['scale_source.scan.reason'].startswith('stale'), d
    assert d['scale_source.points.reason'].startswith('stale'), d
    assert abs(_ratio(got, base) - 1.0) < 1e-4  # the same image on the model's own scale (float32 round trips)
    text = log.read_text()
    assert 'scale source scan: not usable (stale' in text
    assert text.count('scale source scan: usable') == 1  # logged once per transition, not per frame


def test_invalid_anchors_fall_back_and_frames_keep_flowing(running):
    harness, anchors, log = running
    base = _frame(harness, (20, 0))
    nan_depth = _sparse_depth_image(base, (21, 0))
    from mgeo_ros.ros import convert

    nan_depth = convert.numpy_to_image(np.full((H, W), np.nan, np.float32), '32FC1', _header((21, 0), 'cam_optical'))
    anchors.depth.publish(nan_depth)
    got = _frame(harness, (21, 0))
    d = harness.latest_diagnostics()
    assert harness.wait_for(lambda: 'no valid depth' in harness.latest_diagnostics().get(
        'scale_source.depth.reason', ''), 10), harness.latest_diagnostics()
    assert np.isfinite(got).sum() > 100 and abs(_ratio(got, base) - 1.0) < 1e-4

    anchors.depth.publish(_sparse_depth_image(base, (22, 0), encoding='rgb8'))  # a wrong encoding
    got = _frame(harness, (22, 0))
    assert harness.wait_for(lambda: 'encoding' in harness.latest_diagnostics().get(
        'scale_source.depth.reason', ''), 10), harness.latest_diagnostics()
    assert abs(_ratio(got, base) - 1.0) < 1e-4

    empty = _scan(base, (23, 0))
    empty.ranges = [math.inf] * len(empty.ranges)  # no return at all
    anchors.scan.publish(empty)
    got = _frame(harness, (23, 0))
    assert harness.wait_for(lambda: 'empty scan' in harness.latest_diagnostics().get(
        'scale_source.scan.reason', ''), 10), harness.latest_diagnostics()
    d = harness.latest_diagnostics()
    assert d['scale_source'] == 'model'
    assert math.isfinite(float(d['metric_scale_raw'])) and float(d['metric_scale_raw']) > 0
    assert abs(_ratio(got, base) - 1.0) < 1e-4


def test_missing_tf_is_said_once_and_the_source_is_unusable(monkeypatch):
    """Without scale_anchor_extrinsics, a frame_id other than the image's needs TF: where tf2_ros does not import,
    the source is unusable with that reason, logged once."""
    from mgeo_ros.ros.scale_anchor_inputs import TfPoses

    monkeypatch.setitem(sys.modules, 'tf2_ros', None)  # import tf2_ros raises ImportError
    logged = []
    poses = TfPoses(None, lambda key, text: logged.append((key, text)))
    assert not poses.available
    for _ in range(3):
        pose, reason = poses.pose('cam_optical', 'lidar', None)
        assert pose is None and 'tf2_ros is not importable' in reason and 'scale_anchor_extrinsics' in reason
    assert {k for k, _ in logged} == {'tf'}


def test_extrinsics_parameter_is_the_lidar_pose():
    """The test's own extrinsics string parses to the rotation it was made of (guards the fixture above)."""
    from mgeo_ros.node_params import anchor_extrinsics

    tf = anchor_extrinsics(EXTRINSICS)
    np.testing.assert_allclose(tf.rotation, LIDAR_IN_OPTICAL, atol=1e-8)  # 9-digit quaternion text
    assert isinstance(tf, RigidTransform)


def test_mgeo_replay_plays_the_anchor_topics_with_their_stamps(tmp_path):
    """`mgeo replay` (its own process) plays a bag's anchor topics; this process receives every depth and scan
    anchor with the stamp it was recorded with, as the node would."""
    import subprocess
    import threading
    import time

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, LaserScan

    from mgeo_ros.ros.spin_thread import SpinThread
    from mgeo_ros.train.data import render_sequence, write_bag
    from mgeo_ros.train.data.bag import stamp_ns
    from mgeo_ros.train.data.synth.anchors import ANCHOR_DEPTH_TOPIC, ANCHOR_SCAN_TOPIC, anchor_bag_topics

    frames = render_sequence(3, 4, size=(64, 48))
    topics, messages = anchor_bag_topics('camera_optical_frame', seed=3, count=100)
    bag = write_bag(frames, tmp_path / 'bag', storage='mcap', rate_hz=10.0, extra_topics=topics,
                    extra_messages=messages)
    prefix = f'/rpa{os.getpid()}'
    got: dict[str, list[int]] = {'depth': [], 'scan': []}
    lock = threading.Lock()
    spin = SpinThread(f'anchor_replay_{os.getpid()}')
    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)

    def keep(name):
        def store(msg):
            with lock:
                got[name].append(stamp_ns(msg))
        return store
    spin.node.create_subscription(Image, prefix + ANCHOR_DEPTH_TOPIC, keep('depth'), qos)
    spin.node.create_subscription(LaserScan, prefix + ANCHOR_SCAN_TOPIC, keep('scan'), qos)
    spin.start()
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'mgeo_ros.cli', 'replay', str(bag), '--rate', '0', '--no-progress',
             '--topics', ANCHOR_DEPTH_TOPIC, ANCHOR_SCAN_TOPIC,
             '--remap', f'{ANCHOR_DEPTH_TOPIC}:={prefix}{ANCHOR_DEPTH_TOPIC}',
             '--remap', f'{ANCHOR_SCAN_TOPIC}:={prefix}{ANCHOR_SCAN_TOPIC}', '--wait-subscribers', '1',
             '--wait-timeout', '30',
             # recording one of them keeps the player up for --linger after the last message, so that the reliable
             # messages still in flight are delivered before its publishers go
             '--record', str(tmp_path / 'recorded'), '--record-topics', prefix + ANCHOR_SCAN_TOPIC, '--linger', '1'],
            capture_output=True, text=True, timeout=90, env=dict(os.environ))
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(len(v) for v in got.values()) < len(frames):
            time.sleep(0.05)
    finally:
        spin.close()
    start = 1_700_000_000_000_000_000
    expected = [start + i * 100_000_000 for i in range(len(frames))]
    assert sorted(got['depth']) == expected and sorted(got['scan']) == expected, got


def test_each_camera_has_its_own_anchors_in_its_namespace(tiny_onnx, tmp_path):
    """Two cameras, `scale_source: depth`: anchors on <ns>/front/scale_anchor/depth set front's scale only; rear,
    with no anchor messages, keeps the model's scale and says why."""
    import time

    from node_harness import MultiCameraHarness, start_multi_node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    ns = f'/sam{os.getpid()}'
    log = tmp_path / 'node.log'
    cams = ['front', 'rear']
    proc = start_multi_node(ns, cams, {'model': str(tiny_onnx), 'diagnostics_period': 0.2,
                                       'flying_pixel_max_jump': 0.0, 'scale_source': 'depth'}, log_path=log)
    with serving(proc, MultiCameraHarness(ns, cams, name='anchor_cams', outputs=('depth/image',)), log) as (h, _, _):
        pub = h.node.create_publisher(Image, f'{ns}/front/scale_anchor/depth',
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        h.wait_ready(proc)
        assert h.wait_for(lambda: pub.get_subscription_count() > 0, 30)
        rgb, intr = smooth_rgb(W, H, 0), camera_intrinsics(W, H)
        base = {}
        for cam in cams:
            h.publish(cam, rgb, (30, 0), 'cam_optical', intr)
            base[cam] = _depth_of(h.wait_outputs(cam, (30, 0)))
        pub.publish(_sparse_depth_image(base['front'], (31, 0)))
        time.sleep(0.3)
        got = {}
        for cam in cams:
            h.publish(cam, rgb, (31, 0), 'cam_optical', intr)
            got[cam] = _depth_of(h.wait_outputs(cam, (31, 0)))
        assert abs(_ratio(got['front'], base['front']) - 2.0) < 2.0 * RATIO_TOL
        assert abs(_ratio(got['rear'], base['rear']) - 1.0) < 1e-4  # the model's own scale (float32 round trips)
        assert h.wait_for(lambda: h.status('front depth').get('scale_source.frames.depth') == '1', 10), \
            h.status('front depth')
        rear = h.status('rear depth')
        assert rear['scale_source'] == 'model' and rear['scale_source.depth.reason'] == 'no messages', rear


@pytest.mark.parametrize('fmt', ['png', 'rvl'])
def test_compressed_depth_anchors_and_broken_messages_become_anchors_or_reasons(fmt):
    """The anchor callbacks on real rclpy messages: a compressedDepth image decodes to its anchors; a cut one, a
    wrong encoding and a cloud without z become an empty set with the reason (the frame falls back; nothing raises
    into the executor)."""
    import logging
    from types import SimpleNamespace

    from sensor_msgs.msg import CompressedImage, PointCloud2

    from mgeo_ros import node_params as P
    from mgeo_ros.depth_codec import encode_depth
    from mgeo_ros.ros.scale_anchor_inputs import ScaleAnchorInputs

    cfg = {**P.defaults(), 'scale_source': 'depth,points', 'scale_anchor_transport': 'compressedDepth'}
    channel = SimpleNamespace(node=None, log=logging.getLogger('anchor_inputs'), camera_frame=lambda: 'cam_optical')
    inputs = ScaleAnchorInputs(channel, cfg)
    depth = np.full((H, W), np.nan, np.float32)
    depth[::10, ::10] = 2.5
    form, data = encode_depth(depth, '32FC1', fmt)
    msg = CompressedImage(header=_header((40, 0), 'cam_optical'), format=form, data=data)
    inputs._on_compressed_depth(msg)
    anchors, reason = inputs.anchoring.buffers['depth'].nearest(40.0)
    assert reason == '' and len(anchors) == 12 * 16
    np.testing.assert_allclose(anchors.depth, 2.5, rtol=1e-3)  # the inverse-depth code's step at 2.5 m

    msg.data = data[:20]
    msg.header.stamp.sec = 41
    inputs._on_compressed_depth(msg)
    anchors, _ = inputs.anchoring.buffers['depth'].nearest(41.0)
    assert len(anchors) == 0 and anchors.invalid_reason.startswith('compressedDepth anchor not decoded')

    inputs.add('depth', _sparse_depth_image(depth, (42, 0), encoding='rgb8'))
    anchors, _ = inputs.anchoring.buffers['depth'].nearest(42.0)
    assert 'encoding' in anchors.invalid_reason

    cloud = PointCloud2(header=_header((43, 0), 'cam_optical'), height=1, width=0, point_step=12)
    inputs.add('points', cloud)
    anchors, _ = inputs.anchoring.buffers['points'].nearest(43.0)
    assert "lack ['x', 'y', 'z']" in anchors.invalid_reason
