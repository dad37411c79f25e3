"""Scale anchors read offline from bags: each message type to anchors, the sensor's pose from /tf_static chains,
`--scale-anchor` specs, and the fit against a synthetic sequence's ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.eval.anchor_bag import parse_anchor_spec, read_anchor_topic, static_transform
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.runtime.anchor_messages import anchors_from_message, cloud_xyz
from mgeo_ros.runtime.scale_anchors import fit_anchors
from mgeo_ros.train.data import render_sequence, write_bag
from mgeo_ros.train.data.bag_writer import TF, TYPESTORE, image_msg, tf_static_msg
from mgeo_ros.train.data.sample import Sample
from mgeo_ros.train.data.synth.anchors import ANCHOR_DEPTH_TOPIC, ANCHOR_SCAN_TOPIC, anchor_bag_topics

T = TYPESTORE.types
START_NS = 1_700_000_000_000_000_000


def _header(stamp_ns: int = START_NS, frame: str = 'lidar'):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                                           nanosec=stamp_ns % 10**9), frame_id=frame)


def _cloud(points: np.ndarray, organized: tuple[int, int] | None = None, pad: int = 4, row_pad: int = 8,
           dtype=np.float32):
    """A PointCloud2 with x, y, z of `dtype`, `pad` bytes after each point and `row_pad` after each row."""
    n = len(points)
    h, w = organized or (1, n)
    size = np.dtype(dtype).itemsize
    step = 3 * size + pad
    row_step = w * step + row_pad
    buf = np.zeros(h * row_step, np.uint8)
    for i, p in enumerate(points):
        r, c = divmod(i, w)
        buf[r * row_step + c * step:r * row_step + c * step + 3 * size] = np.asarray(p, dtype).view(np.uint8)
    fields = [T['sensor_msgs/msg/PointField'](name=k, offset=i * size, datatype=7 if size == 4 else 8, count=1)
              for i, k in enumerate('xyz')]
    return T['sensor_msgs/msg/PointCloud2'](header=_header(), height=h, width=w, fields=fields, is_bigendian=False,
                                            point_step=step, row_step=row_step, data=buf, is_dense=False)


@pytest.mark.parametrize('dtype,organized', [(np.float32, None), (np.float64, (2, 3))])
def test_cloud_fields_with_padding(dtype, organized):
    pts = np.arange(18, dtype=np.float64).reshape(6, 3) / 4 + 1
    np.testing.assert_array_equal(cloud_xyz(_cloud(pts, organized, dtype=dtype)), pts.astype(np.float32))
    msg = _cloud(pts)
    msg.fields = msg.fields[:2]
    with pytest.raises(BadInputError, match=r"lack \['z'\]"):
        cloud_xyz(msg)


def test_message_types_to_anchors():
    ext = RigidTransform.from_xyz_quaternion([0, 0, 0, 0.5, -0.5, 0.5, 0.5])   # x forward -> optical z
    rng = T['sensor_msgs/msg/Range'](header=_header(START_NS + 5_000_000), radiation_type=1, field_of_view=0.05,
                                     min_range=0.1, max_range=4.0, range=2.5, variance=0.0)
    a = anchors_from_message('range', rng, ext)
    assert a.stamp == pytest.approx(START_NS / 1e9 + 0.005)
    np.testing.assert_allclose(a.extrinsics.apply(a.points), [[0.0, 0.0, 2.5]], atol=1e-12)
    mm = image_msg(np.full((6, 8), 1500, np.uint16), '16UC1', START_NS, 'camera_optical_frame')
    d = anchors_from_message('depth', mm)
    assert len(d) == 48 and np.allclose(d.depth, 1.5) and d.size == (8, 6)
    with pytest.raises(BadInputError, match='16UC1'):
        anchors_from_message('depth', image_msg(np.zeros((2, 2, 3), np.uint8), 'rgb8', START_NS, 'c'))
    with pytest.raises(BadInputError, match='anchor source'):
        anchors_from_message('sonar', rng)


def test_parse_anchor_spec():
    assert parse_anchor_spec('scan:/robot/scan').topic == '/robot/scan'
    g = parse_anchor_spec('ground:0.35,15')
    assert (g.source, g.camera_height, g.camera_pitch, g.camera_roll) == ('ground', 0.35, 15.0, 0.0)
    for bad in ('lidar:/x', 'scan', 'ground:0', 'ground:a,b', 'ground:1,2,3,4'):
        with pytest.raises(BadInputError, match='--scale-anchor'):
            parse_anchor_spec(bad)


def test_tf_static_chain(tmp_path):
    # camera_optical_frame <- camera_link <- base_link -> laser: the laser's pose in the optical frame
    tfs = [('camera_link', 'camera_optical_frame', [0, 0, 0, -0.5, 0.5, -0.5, 0.5]),
           ('base_link', 'camera_link', [0.2, 0.0, 0.5, 0, 0, 0, 1]),
           ('base_link', 'laser', [0.3, 0.0, 0.2, 0, 0, 0, 1])]

    def messages(i, sample, stamp):
        return [('/tf_static', tf_static_msg(p, c, q, stamp)) for p, c, q in tfs] if i == -1 else []

    dummy = Sample(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.float32), Intrinsics.from_fov(1.0, 4, 4),
                   np.ones((4, 4), bool), True, 'x')
    bag = write_bag([dummy], tmp_path / 'tf', extra_topics=[('/tf_static', TF)], extra_messages=messages)
    laser = static_transform(bag, 'camera_optical_frame', 'laser')
    # a laser point 1 m ahead: in base_link (1.3, 0, 0.2); the camera is at (0.2, 0, 0.5) looking along x, so it is
    # 1.1 m forward (optical z), 0.3 m below (optical y down) and centred (optical x)
    np.testing.assert_allclose(laser.apply([[1.0, 0.0, 0.0]]), [[0.0, 0.3, 1.1]], atol=1e-12)
    assert static_transform(bag, 'camera_optical_frame', 'nowhere') is None
    assert np.allclose(static_transform(bag, 'laser', 'laser').apply([[1, 2, 3]]), [[1, 2, 3]])


@pytest.fixture(scope='module')
def anchored_bag(tmp_path_factory):
    samples = render_sequence(5, 3, (64, 48), kinds=('indoor',))
    topics, messages = anchor_bag_topics('camera_optical_frame', seed=5, count=200)
    bag = write_bag(samples, tmp_path_factory.mktemp('anchors') / 'bag', storage='mcap', rate_hz=10.0,
                    extra_topics=topics, extra_messages=messages)
    return bag, samples


@pytest.mark.parametrize('source,topic', [('depth', ANCHOR_DEPTH_TOPIC), ('scan', ANCHOR_SCAN_TOPIC)])
def test_bag_anchors_give_each_frame_its_scale(anchored_bag, source, topic):
    bag, samples = anchored_bag
    buffer = read_anchor_topic(bag, source, topic, 'camera_optical_frame', max_age=0.05)
    assert len(buffer) == len(samples)
    for i, s in enumerate(samples):
        stamp = START_NS / 1e9 + i * 0.1
        anchors, reason = buffer.nearest(stamp + 0.01)
        assert reason == '' and anchors.stamp == pytest.approx(stamp)
        fit = fit_anchors(anchors, s.intrinsics, s.depth / 1.3, s.mask, 20)
        # sparse depth: 200 GT pixels with 2 % noise -> the mean of the log ratio within 0.5 %; scan: exact GT
        assert fit.scale == pytest.approx(1.3, rel=0.005 if source == 'depth' else 1e-5), (source, i, fit)
    assert buffer.nearest(START_NS / 1e9 + 5.0)[1].startswith('stale')


def test_bag_anchor_errors(anchored_bag, tmp_path):
    bag, _ = anchored_bag
    with pytest.raises(BadInputError, match='no such topic'):
        read_anchor_topic(bag, 'scan', '/nope', 'camera_optical_frame')
    with pytest.raises(BadInputError, match='expected sensor_msgs/msg/LaserScan'):
        read_anchor_topic(bag, 'scan', ANCHOR_DEPTH_TOPIC, 'camera_optical_frame')
    with pytest.raises(BadInputError, match='does not connect'):
        read_anchor_topic(bag, 'scan', ANCHOR_SCAN_TOPIC, 'other_camera_frame')
    given = read_anchor_topic(bag, 'scan', ANCHOR_SCAN_TOPIC, 'x', extrinsics=RigidTransform.identity())
    assert len(given) == 3
