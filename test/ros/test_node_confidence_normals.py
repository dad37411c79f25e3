"""depth/confidence, depth/normals, the cloud's normal fields, min_confidence and the flying-pixel filter, across
processes with real rclpy: the node runs as a subprocess on a tiny random checkpoint (it has a normal head); this
process subscribes like any client would.

sensor_msgs_py has no wheel here (shared notes, toolchain §1.3): the cloud is read with a structured numpy dtype
built only from the message's own PointFields (what sensor_msgs_py.point_cloud2.read_points does), and with the
real read_points where sensor_msgs_py is installed (a ROS 2 install: the test runs there, skips here).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from node_harness import NodeHarness, camera_intrinsics, serving, smooth_rgb, start_node

pytestmark = pytest.mark.ros

W, H = 160, 120
OUTPUTS = ('depth/image', 'depth/camera_info', 'points', 'depth/mask', 'depth/confidence', 'depth/normals')
NODE = 'mgeo_depth_node'


def _intrinsics():
    return camera_intrinsics(W, H)


def _rgb(seed: int = 0) -> np.ndarray:
    return smooth_rgb(W, H, seed, box=(slice(40, 80), slice(60, 100)))  # an object: something to put an edge around


@pytest.fixture(scope='module')
def running(tiny_checkpoint, tmp_path_factory):
    model = tiny_checkpoint
    ns = f'/nc{os.getpid()}'
    log = tmp_path_factory.mktemp('node_log') / 'node.log'
    proc = start_node(ns, {'model': str(model), 'num_tokens': 300, 'diagnostics_period': 0.3, 'points_color': True,
                           'points_normals': True, 'log_throttle': 0.0}, log_path=log)
    with serving(proc, NodeHarness(ns, name='conf_normals', outputs=OUTPUTS), log) as (harness, _, _):
        harness.wait_ready(proc, timeout=90)
        yield harness, proc


def _read_cloud_fields(msg) -> dict[str, np.ndarray]:
    """Every field of a PointCloud2 as an H x W array, through a structured dtype made from msg.fields alone."""
    codes = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}
    order = '>' if msg.is_bigendian else '<'
    dtype = np.dtype({'names': [f.name for f in msg.fields],
                      'formats': [order + codes[f.datatype] for f in msg.fields],
                      'offsets': [f.offset for f in msg.fields], 'itemsize': msg.point_step})
    assert msg.row_step == msg.width * msg.point_step
    rows = np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)
    return {name: rows[name] for name in dtype.names}


def _publish(harness, seed: int, key) -> dict:
    harness.publish(_rgb(seed), key, frame_id='cam_optical', intrinsics=_intrinsics())
    return harness.wait_outputs(key)


def test_confidence_and_normals_carry_the_input_header_and_agree_with_depth(running):
    from mgeo_ros.ros import convert

    harness, _ = running
    key = (2000, 7)
    out = _publish(harness, 0, key)
    for topic in OUTPUTS:
        assert (out[topic].header.stamp.sec, out[topic].header.stamp.nanosec) == key, topic
        assert out[topic].header.frame_id == 'cam_optical', topic
    depth = convert.image_to_numpy(out['depth/image'])
    valid = np.isfinite(depth)
    assert valid.mean() > 0.3

    conf_msg = out['depth/confidence']
    assert (conf_msg.encoding, conf_msg.height, conf_msg.width) == ('32FC1', H, W)
    conf = convert.image_to_numpy(conf_msg)
    assert np.isfinite(conf).all() and conf.min() >= 0.0 and conf.max() <= 1.0
    assert (conf[valid] > 0.5 - 1e-6).all()  # mask_threshold 0.5: valid depth only where the model is > 0.5 sure

    nmsg = out['depth/normals']
    assert (nmsg.encoding, nmsg.height, nmsg.width, nmsg.step) == ('32FC3', H, W, W * 12)
    normals = np.frombuffer(bytes(nmsg.data), '>f4' if nmsg.is_bigendian else '<f4').reshape(H, W, 3)
    finite = np.isfinite(normals).all(-1)
    assert not finite[~valid].any()  # NaN wherever depth is invalid
    assert finite[valid].mean() > 0.95
    np.testing.assert_allclose(np.linalg.norm(normals[finite], axis=-1), 1.0, atol=1e-4)

    fields = _read_cloud_fields(out['points'])
    assert [f.name for f in out['points'].fields] == ['x', 'y', 'z', 'rgb', 'normal_x', 'normal_y', 'normal_z']
    assert all(f.datatype == 7 and f.count == 1 for f in out['points'].fields)
    np.testing.assert_array_equal(np.isfinite(fields['z']), valid)
    np.testing.assert_allclose(fields['z'][valid], depth[valid], rtol=1e-6)
    cloud_normals = np.stack([fields['normal_x'], fields['normal_y'], fields['normal_z']], -1)
    np.testing.assert_array_equal(cloud_normals, normals)  # the same normals as depth/normals, NaN included
    np.testing.assert_array_equal(convert.pointcloud2_normals(out['points']), normals)


def test_sensor_msgs_py_read_points_parses_the_cloud(running):
    point_cloud2 = pytest.importorskip('sensor_msgs_py.point_cloud2',
                                       reason='sensor_msgs_py is not installable as a wheel (toolchain notes §1.3)')
    harness, _ = running
    key = (2000, 8)
    out = _publish(harness, 0, key)
    names = ('x', 'y', 'z', 'normal_x', 'normal_y', 'normal_z')
    pts = point_cloud2.read_points(out['points'], field_names=names, skip_nans=True)
    fields = _read_cloud_fields(out['points'])
    keep = np.isfinite(fields['x']) & np.isfinite(fields['y']) & np.isfinite(fields['z'])
    assert len(pts) == keep.sum() > 0
    for name in names:
        np.testing.assert_array_equal(np.asarray(pts[name]), fields[name][keep])


def test_min_confidence_and_the_flying_pixel_filter_apply_live(running):
    from mgeo_ros.ros import convert
    from mgeo_ros.runtime.flying_pixels import DepthJumpTest

    harness, _ = running
    results = harness.set_parameters(NODE, {'flying_pixel_max_jump': 0.0})
    assert all(r.successful for r in results)
    raw = _publish(harness, 3, (2001, 1))  # same frame three times: the model is deterministic
    depth0 = convert.image_to_numpy(raw['depth/image']).copy()
    conf = convert.image_to_numpy(raw['depth/confidence']).copy()

    # a tolerance that removes about a tenth of this (smooth, random-weights) depth: the 90th percentile of the
    # depth range over each pixel's 3x3 window relative to its depth, computed here with plain numpy
    pad = np.pad(depth0, 1, mode='edge')
    windows = np.stack([pad[dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)])
    jump = float(np.nanpercentile((np.nanmax(windows, 0) - np.nanmin(windows, 0)) / depth0, 90))
    assert all(r.successful for r in harness.set_parameters(NODE, {'flying_pixel_max_jump': jump}))
    filtered = _publish(harness, 3, (2001, 2))
    depth1 = convert.image_to_numpy(filtered['depth/image'])
    expect = np.isfinite(depth0) & ~DepthJumpTest()(depth0, jump)
    assert (np.isfinite(depth0) & ~expect).sum() > 0, 'nothing to remove: the test would not test the filter'
    np.testing.assert_array_equal(np.isfinite(depth1), expect)
    np.testing.assert_array_equal(convert.image_to_numpy(filtered['depth/mask']) == 255, expect)
    points, _ = convert.pointcloud2_to_numpy(filtered['points'])
    np.testing.assert_array_equal(np.isfinite(points[..., 2]), expect)

    level = float(np.median(conf[np.isfinite(depth0)]))
    results = harness.set_parameters(NODE, {'flying_pixel_max_jump': 0.0, 'min_confidence': level})
    assert all(r.successful for r in results)
    gated = _publish(harness, 3, (2001, 3))
    depth2 = convert.image_to_numpy(gated['depth/image'])
    expect = np.isfinite(depth0) & (conf >= np.float32(level))
    assert 0 < expect.sum() < np.isfinite(depth0).sum()
    np.testing.assert_array_equal(np.isfinite(depth2), expect)
    np.testing.assert_array_equal(convert.image_to_numpy(gated['depth/mask']) == 255, expect)
    np.testing.assert_array_equal(convert.image_to_numpy(gated['depth/confidence']), conf)  # the model's, ungated

    refused = harness.set_parameters(NODE, {'min_confidence': 1.5})
    assert not refused[0].successful and 'min_confidence' in refused[0].reason
    assert all(r.successful for r in harness.set_parameters(NODE, {'min_confidence': 0.0,
                                                                     'flying_pixel_max_jump': 0.08}))


@pytest.mark.parametrize('on_graph', [False, True])
def test_stage_two_builds_every_output_from_the_frame_stage(on_graph):
    """The node's stage 2 (FramePipeline.messages) on the numpy path and on the post graph (ONNX Runtime, CPU):
    every wanted output, one header, the same depth in the image, the cloud and behind the mask."""
    import time as _time

    from stage_frames import raw_frame
    from std_msgs.msg import Header

    from mgeo_ros.node_params import defaults
    from mgeo_ros.ros import convert
    from mgeo_ros.ros.diagnostics import NodeStats
    from mgeo_ros.ros.pipeline import FramePipeline, InferredFrame
    from mgeo_ros.runtime.post_graph import PostGraph

    cfg = {**defaults(), 'max_depth': 3.0, 'inf_beyond_max_depth': True, 'flying_pixel_max_jump': 0.05,
           'points_normals': True}
    pipeline = FramePipeline(cfg, logging.getLogger('test'), NodeStats(), lambda reason, text: None)
    if on_graph:
        pipeline.session.stage.post = PostGraph()
    wanted = frozenset({'depth', 'info', 'points', 'mask', 'confidence', 'normals'})
    rgb = np.zeros((36, 48, 3), np.uint8)
    header = Header(frame_id='cam')
    frame = InferredFrame(raw_frame(1, False), None, rgb, header, wanted, cfg, _time.perf_counter(),
                          _time.monotonic())
    msgs = dict(pipeline.messages(frame))
    assert set(msgs) == wanted and all(m.header is header for m in msgs.values())
    depth = convert.image_to_numpy(msgs['depth'])
    valid = convert.image_to_numpy(msgs['mask']) == 255
    np.testing.assert_array_equal(np.isfinite(depth), valid)
    assert np.isposinf(depth).any() and valid.any()
    points, _ = convert.pointcloud2_to_numpy(msgs['points'])
    np.testing.assert_array_equal(points[..., 2][valid], depth[valid])
    assert np.isnan(points[~valid]).all()
    normals = np.frombuffer(msgs["normals"].data, np.float32).reshape(36, 48, 3)
    cloud_normals = convert.pointcloud2_normals(msgs["points"])
    np.testing.assert_array_equal(np.isnan(normals[..., 0]), np.isnan(cloud_normals[..., 0]))
    assert (msgs['info'].width, msgs['info'].height) == (48, 36)
    assert 'postprocess' in frame.timings
