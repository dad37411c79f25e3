"""mgeo_depth_node on ONNX Runtime with compressed input, in a process where torch cannot be imported, and the node
surviving a corrupt model file. Real rclpy across processes."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from node_harness import NodeHarness, no_torch_env, start_node, stop_node

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]

W, H = 160, 120


def test_compressed_input_on_onnxruntime_without_torch(tiny_onnx, tmp_path):
    from mgeo_ros.geometry import Intrinsics, unproject
    from mgeo_ros.ros import convert

    ns = f'/ntc{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(tiny_onnx), 'backend': 'onnxruntime', 'image_transport': 'compressed',
                           'diagnostics_period': 0.3, 'points_color': True, 'scale_smoothing': 0.5},
                      env=no_torch_env(tmp_path), log_path=log)
    harness = NodeHarness(ns, 'compressed_harness')
    try:
        harness.wait_ready(proc, timeout=60, compressed=True)
        assert harness.latest_diagnostics()['backend'] == 'onnxruntime'
        y, x = np.mgrid[0:H, 0:W]
        rgb = np.stack([x * 255 // W, y * 255 // H, (x ^ y) & 255], -1).astype(np.uint8)
        intr = Intrinsics(fx=150.0, fy=150.0, cx=79.5, cy=59.5, width=W, height=H)
        for i in range(3):
            key = (4000, i)
            harness.publish(rgb, key, frame_id='cam_c', intrinsics=intr, compressed=True)
            out = harness.wait_outputs(key)
        assert all(m.header.frame_id == 'cam_c' for m in out.values())
        depth = convert.image_to_numpy(out['depth/image'])
        assert depth.shape == (H, W) and np.isfinite(depth).mean() > 0.5
        points, colour = convert.pointcloud2_to_numpy(out['points'])
        np.testing.assert_array_equal(colour, rgb)  # png: the decoded image is the published one, channels in order
        finite = np.isfinite(depth)
        np.testing.assert_allclose(points[finite], unproject(depth, intr)[finite], rtol=1e-4, atol=1e-4)
        # the status timer runs on its own: wait for one that has seen the frames above
        assert harness.wait_for(lambda: int(harness.latest_diagnostics().get('frames_published', 0)) >= 3, 5)
        diag = harness.latest_diagnostics()
        assert float(diag['metric_scale_smoothed']) > 0 and 'latency_ms.decode.median' in diag
        _check_scale_smoothing(harness, intr)
        assert proc.poll() is None
    finally:
        harness.close()
        code = stop_node(proc)
        text = log.read_text()
        print('\n' + text[-2000:])
    assert code == 0
    assert 'torch is blocked' not in text


def _frame_scales(harness, key, rgb, intr) -> tuple[np.ndarray, float, float]:
    """Publish one frame; its depth and the raw and smoothed metric scale the node reports for it."""
    from mgeo_ros.ros import convert

    harness.publish(rgb, key, frame_id='cam_c', intrinsics=intr, compressed=True)
    depth = convert.image_to_numpy(harness.wait_outputs(key)['depth/image'])
    arrived = harness.arrival['depth/image'][key]
    # a status sent after the depth arrived: the node sets the scales before it publishes
    assert harness.wait_for(lambda: harness.latest_diagnostics(after=arrived + 0.05), 5)
    diag = harness.latest_diagnostics()
    return depth, float(diag['metric_scale_raw']), float(diag['metric_scale_smoothed'])


def _check_scale_smoothing(harness, intr) -> None:
    """Live scale_smoothing: the published depth carries the log-space average of the raw scales."""
    dark = np.full((H, W, 3), 20, np.uint8)
    noise = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert harness.set_parameters('mgeo_depth_node', {'scale_smoothing': 0.0})[0].successful
    _, raw_a, smooth_a = _frame_scales(harness, (4100, 0), dark, intr)
    assert smooth_a == pytest.approx(raw_a, rel=1e-4)
    assert harness.set_parameters('mgeo_depth_node', {'scale_smoothing': 0.5})[0].successful
    depth_smoothed, raw_b, smooth_b = _frame_scales(harness, (4100, 1), noise, intr)
    assert abs(raw_b / raw_a - 1) > 1e-3, 'the two images should give different raw scales'
    assert smooth_b == pytest.approx(math.sqrt(raw_a * raw_b), rel=1e-3)  # EMA in log space, weight 0.5
    assert harness.set_parameters('mgeo_depth_node', {'scale_smoothing': 0.0})[0].successful
    depth_raw, raw_b2, _ = _frame_scales(harness, (4100, 2), noise, intr)
    assert raw_b2 == pytest.approx(raw_b, rel=1e-4)  # same frame, same prediction
    finite = np.isfinite(depth_raw) & np.isfinite(depth_smoothed)
    np.testing.assert_allclose(depth_smoothed[finite] / depth_raw[finite], smooth_b / raw_b, rtol=1e-3)


def test_corrupt_model_keeps_the_node_alive_and_says_why(tmp_path):
    from sensor_msgs.msg import Image

    bad = tmp_path / 'corrupt.onnx'
    bad.write_bytes(b'this is not an onnx file')
    ns = f'/ntb{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(bad), 'backend': 'onnxruntime', 'diagnostics_period': 0.3},
                      env=no_torch_env(tmp_path), log_path=log)
    harness = NodeHarness(ns, 'corrupt_harness')
    try:
        assert harness.wait_for(lambda: harness.latest_diagnostics().get('model_status') == 'error', 60), \
            log.read_text()
        diag = harness.latest_diagnostics()
        assert diag['_level'] == 2 and 'model not loaded' in diag['_message']
        assert harness.wait_for(lambda: harness.image_pub.get_subscription_count() > 0, 10)
        time.sleep(0.5)
        for i in range(3):
            msg = Image(height=H, width=W, encoding='rgb8', step=W * 3, data=bytes(H * W * 3))
            msg.header.stamp.sec, msg.header.stamp.nanosec = 5000, i
            harness.image_pub.publish(msg)
            time.sleep(0.3)
        assert harness.wait_for(lambda: int(harness.latest_diagnostics().get('bad_input.no_model', 0)) >= 1, 5)
        assert proc.poll() is None
    finally:
        harness.close()
        code = stop_node(proc)
    assert code == 0
    assert 'corrupt.onnx' in log.read_text()


def test_lifecycle_node_only_works_while_active(tiny_onnx, tmp_path):
    from lifecycle_msgs.msg import Transition

    from mgeo_ros.geometry import Intrinsics

    ns = f'/ntl{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(tiny_onnx), 'backend': 'onnxruntime', 'diagnostics_period': 0.3},
                      env=no_torch_env(tmp_path), log_path=log, extra_args=('--lifecycle',))
    harness = NodeHarness(ns, 'lifecycle_harness')
    intr = Intrinsics(fx=150.0, fy=150.0, cx=79.5, cy=59.5, width=W, height=H)
    rgb = np.full((H, W, 3), 90, np.uint8)
    try:
        assert harness.wait_for(lambda: harness.latest_diagnostics().get('model_status') == 'unconfigured', 30)
        assert harness.image_pub.get_subscription_count() == 0  # nothing subscribed before activation
        assert harness.change_state('mgeo_depth_node', Transition.TRANSITION_CONFIGURE)
        assert harness.latest_diagnostics().get('model_status') in ('unconfigured', 'ready')
        assert harness.change_state('mgeo_depth_node', Transition.TRANSITION_ACTIVATE)
        harness.wait_ready(proc, timeout=30)
        harness.publish(rgb, (6000, 0), intrinsics=intr)
        harness.wait_outputs((6000, 0))
        assert harness.change_state('mgeo_depth_node', Transition.TRANSITION_DEACTIVATE)
        assert harness.wait_for(lambda: harness.image_pub.get_subscription_count() == 0, 10)
        harness.publish(rgb, (6000, 1), intrinsics=intr)
        time.sleep(1.5)
        assert harness.outputs_for((6000, 1))['depth/image'] is None  # inactive: not subscribed, nothing computed
        assert harness.latest_diagnostics()['active'] == 'False'
        assert proc.poll() is None
    finally:
        harness.close()
        code = stop_node(proc)
        print('\n' + log.read_text()[-1500:])
    assert code == 0
