"""mgeo_depth_node across processes with real rclpy: the node runs as a subprocess (its console script) on a tiny
randomly initialised checkpoint; this process publishes camera frames and checks every output."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from node_harness import NodeHarness, camera_intrinsics, serving, smooth_rgb, start_node

pytestmark = pytest.mark.ros

W, H = 160, 120
INTR = None  # set in the fixture (needs mgeo_ros)
NODE = 'mgeo_depth_node'


def _intrinsics():
    return camera_intrinsics(W, H)


def _rgb(seed: int = 0) -> np.ndarray:
    return smooth_rgb(W, H, seed)


@pytest.fixture(scope='module')
def running(tiny_checkpoint, tmp_path_factory):
    """One node (torch backend, raw input) for the whole module, and the harness that talks to it."""
    ns = f'/nt{os.getpid()}'
    log = tmp_path_factory.mktemp('node_log') / 'node.log'
    proc = start_node(ns, {'model': str(tiny_checkpoint), 'num_tokens': 300, 'diagnostics_period': 0.3,
                           'points_color': True, 'log_throttle': 0.0}, log_path=log)
    with serving(proc, NodeHarness(ns), log) as running:
        running[0].wait_ready(proc, timeout=90)
        yield running


def _depth(msg) -> np.ndarray:
    from mgeo_ros.ros import convert

    assert msg.encoding == '32FC1'
    return convert.image_to_numpy(msg)


def test_outputs_carry_the_input_header_and_agree_with_each_other(running):
    from mgeo_ros.geometry import unproject
    from mgeo_ros.ros import convert

    harness, proc, _ = running
    key = (1000, 1)
    harness.publish(_rgb(), key, frame_id='cam_optical', intrinsics=_intrinsics())
    out = harness.wait_outputs(key)
    for topic, msg in out.items():
        assert msg.header.frame_id == 'cam_optical', topic
    depth = _depth(out['depth/image'])
    assert depth.shape == (H, W) and depth.dtype == np.float32
    info = out['depth/camera_info']
    assert (info.width, info.height) == (W, H)
    k = np.asarray(info.k).reshape(3, 3)
    np.testing.assert_allclose(k, _intrinsics().K, atol=1e-9)  # the given camera is used, not a recovered one
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], k)
    intr = convert.camera_info_to_intrinsics(info)
    cloud = out['points']
    assert (cloud.height, cloud.width, cloud.is_dense) == (H, W, False)
    assert len(cloud.data) == H * W * cloud.point_step and {f.name for f in cloud.fields} == {'x', 'y', 'z', 'rgb'}
    points, colour = convert.pointcloud2_to_numpy(cloud)
    finite = np.isfinite(depth)
    assert finite.sum() > 0.5 * H * W, 'a random tiny model should still give mostly valid depth'
    np.testing.assert_array_equal(np.isfinite(points[..., 2]), finite)
    np.testing.assert_allclose(points[finite], unproject(depth, intr)[finite], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(colour, _rgb())
    mask = convert.image_to_numpy(out['depth/mask'])
    assert out['depth/mask'].encoding == 'mono8'
    np.testing.assert_array_equal(mask == 255, finite)  # NaN exactly where the mask is false
    assert set(np.unique(mask)) <= {0, 255}
    assert harness.wait_for(lambda: int(harness.latest_diagnostics().get('frames_published', 0)) >= 1, 5)
    diag = harness.latest_diagnostics()
    assert diag['intrinsics_source'] == 'camera_info (P)'
    assert math.isfinite(float(diag['metric_scale_raw'])) and float(diag['metric_scale_raw']) > 0
    assert abs(float(diag['fov_x_deg']) - math.degrees(_intrinsics().fov_x)) < 0.01
    assert float(diag['latency_ms.forward.median']) > 0 and float(diag['latency_ms.total.p95']) > 0
    assert int(diag['latency_ms.total.count']) >= 1


def test_camera_info_of_another_resolution_is_rescaled(running):
    from mgeo_ros.geometry import Intrinsics

    harness, _, _ = running
    big = Intrinsics(fx=280.0, fy=276.0, cx=162.5, cy=117.5, width=2 * W, height=2 * H)  # same camera, 2x
    key = (1001, 7)
    harness.publish(_rgb(1), key, intrinsics=big)
    info = harness.wait_outputs(key)['depth/camera_info']
    assert (info.width, info.height) == (W, H)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), _intrinsics().K, atol=1e-9)


def test_parameters_change_live_or_are_refused_with_a_reason(running):
    from mgeo_ros.ros import convert

    harness, _, _ = running
    key = (1002, 0)
    harness.publish(_rgb(2), key, intrinsics=_intrinsics())
    depth = _depth(harness.wait_outputs(key)['depth/image'])
    cut = float(np.nanmedian(depth))

    results = harness.set_parameters(NODE, {'max_depth': cut, 'points_stride': 4, 'frame_id': 'override_frame',
                                            'inf_beyond_max_depth': True})
    assert all(r.successful for r in results), [r.reason for r in results]
    refused = harness.set_parameters(NODE, {'backend': 'onnxruntime'})
    assert not refused[0].successful and 'restart' in refused[0].reason
    invalid = harness.set_parameters(NODE, {'scale_smoothing': 1.0})
    assert not invalid[0].successful and 'scale_smoothing' in invalid[0].reason

    key = (1002, 1)
    harness.publish(_rgb(2), key, intrinsics=_intrinsics())
    out = harness.wait_outputs(key)
    assert all(m.header.frame_id == 'override_frame' for m in out.values())
    cut_depth = _depth(out['depth/image'])
    mask = convert.image_to_numpy(out['depth/mask']) == 255
    finite = np.isfinite(cut_depth)
    assert cut_depth[finite].max() <= cut
    assert 0 < mask.sum() < mask.size  # the cut removed some pixels, not all
    np.testing.assert_array_equal(finite, mask)
    assert np.isposinf(cut_depth).sum() > 0  # REP 117 "too far", not NaN
    cloud = out['points']
    assert (cloud.height, cloud.width) == (H // 4, W // 4)
    points, _ = convert.pointcloud2_to_numpy(cloud)
    assert np.nanmax(points[..., 2]) <= cut and not np.isinf(points).any()
    np.testing.assert_array_equal(np.isfinite(points[..., 2]), mask[::4, ::4])

    assert harness.set_parameters(NODE, {'points_stride': 1, 'points_organized': False})[0].successful
    key = (1002, 2)
    harness.publish(_rgb(2), key, intrinsics=_intrinsics())
    out = harness.wait_outputs(key)
    cloud = out['points']
    valid = convert.image_to_numpy(out['depth/mask']) == 255
    assert (cloud.height, cloud.width, cloud.is_dense) == (1, int(valid.sum()), True)
    assert np.isfinite(convert.pointcloud2_to_numpy(cloud)[0]).all()

    results = harness.set_parameters(NODE, {'max_depth': 0.0, 'points_organized': True, 'frame_id': '',
                                            'inf_beyond_max_depth': False})
    assert all(r.successful for r in results)


def test_recovered_intrinsics_when_camera_info_is_off(running):
    from mgeo_ros.geometry import unproject
    from mgeo_ros.ros import convert

    harness, _, _ = running
    assert harness.set_parameters(NODE, {'use_camera_info': False})[0].successful
    try:
        key = (1003, 0)
        harness.publish(_rgb(3), key, intrinsics=_intrinsics())
        out = harness.wait_outputs(key)
        info = out['depth/camera_info']
        intr = convert.camera_info_to_intrinsics(info)
        assert (intr.width, intr.height) == (W, H)
        assert not np.allclose(np.asarray(info.k).reshape(3, 3), _intrinsics().K)  # recovered, not the given one
        depth = _depth(out['depth/image'])
        points, _ = convert.pointcloud2_to_numpy(out['points'])
        finite = np.isfinite(depth)
        np.testing.assert_allclose(points[finite], unproject(depth, intr)[finite], rtol=1e-4, atol=1e-4)
        assert harness.wait_for(lambda: harness.latest_diagnostics().get('intrinsics_source') == 'recovered', 5)
    finally:
        assert harness.set_parameters(NODE, {'use_camera_info': True})[0].successful


def test_bad_messages_are_counted_and_the_node_keeps_running(running):
    from sensor_msgs.msg import CameraInfo, Image

    harness, proc, log = running
    bogus = Image(height=H, width=W, encoding='bogus', step=W * 3, data=bytes(H * W * 3))
    short_step = Image(height=H, width=W, encoding='rgb8', step=W, data=bytes(H * W))
    truncated = Image(height=H, width=W, encoding='rgb8', step=W * 3, data=bytes(100))
    empty = Image(height=0, width=0, encoding='rgb8', step=0)
    for i, msg in enumerate((bogus, short_step, truncated, empty)):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1004, i
        harness.image_pub.publish(msg)
        time.sleep(0.6)  # one at a time, so the newest-frame slot does not replace them
    zero_focal = CameraInfo(width=W, height=H, k=[0.0, 0, 80, 0, 0.0, 60, 0, 0, 1])
    harness.info_pub.publish(zero_focal)
    time.sleep(0.3)
    key = (1004, 99)
    harness.publish(_rgb(4), key)  # no fresh camera_info: the zero-focal one is the latest
    out = harness.wait_outputs(key)
    assert proc.poll() is None
    assert out['depth/camera_info'].k[0] > 0  # fell back to recovered intrinsics

    def counted() -> bool:
        diag = harness.latest_diagnostics()
        return int(diag.get('bad_input.image', 0)) >= 4 and int(diag.get('bad_input.camera_info', 0)) >= 1
    assert harness.wait_for(counted, 5), harness.latest_diagnostics()
    text = log.read_text()
    assert 'bogus' in text and 'camera_info' in text  # the log says why
    small = _rgb(4)[::2, ::2].copy()  # the stream changes size mid-way: followed, counted, said
    harness.publish(small, (1004, 101), intrinsics=_intrinsics())
    out = harness.wait_outputs((1004, 101))
    assert _depth(out['depth/image']).shape == (H // 2, W // 2)
    info = out['depth/camera_info']
    assert (info.width, info.height) == (W // 2, H // 2) and abs(info.k[0] - _intrinsics().fx / 2) < 1e-9
    assert harness.wait_for(lambda: int(harness.latest_diagnostics()['image_size_changes']) >= 1, 5)
    assert 'size changed' in log.read_text()
    harness.publish(_rgb(4), (1004, 102), intrinsics=_intrinsics())  # back to the usual camera for later tests
    harness.wait_outputs((1004, 102))


def _settled(diag: dict) -> bool:
    """Every frame the node received has been published, dropped or rejected (nothing in flight)."""
    rejected = ('image', 'inference', 'no_model', 'internal_error')  # camera_info problems do not reject the frame
    bad = sum(int(diag.get(f'bad_input.{reason}', 0)) for reason in rejected)
    done = int(diag['frames_published']) + int(diag['frames_dropped']) + int(diag['frames_skipped_no_subscribers'])
    return int(diag['frames_received']) == done + bad


def test_burst_drops_frames_but_latency_stays_bounded(running):
    """120 frames sent four per forward pass of this node on this machine (its own measured forward time sets the
    pace, so a fast GPU is overrun as surely as a loaded CPU): the newest-frame slot must drop some; nothing queues,
    so the latency stays bounded by the node's own stage times."""
    harness, proc, _ = running
    rgb = _rgb(5)
    published_before = int(harness.latest_diagnostics()['frames_published'])
    harness.publish(rgb, (1999, 0), intrinsics=_intrinsics())  # the node learns this publisher's sequence numbers
    harness.wait_outputs((1999, 0))
    assert harness.wait_for(lambda: _settled(harness.latest_diagnostics()) and  # a status from after the warm-up
                            int(harness.latest_diagnostics()['frames_published']) > published_before, 5), \
        (published_before, harness.latest_diagnostics())
    time.sleep(0.5)
    before = harness.latest_diagnostics()
    interval = max(0.002, float(before['latency_ms.forward.median']) / 1000 / 4)
    frames, published = 120, {}
    t_next = time.monotonic()
    for i in range(frames):
        key = (2000, i)
        published[key] = time.monotonic()
        harness.publish(rgb, key, intrinsics=_intrinsics() if i % 10 == 0 else None)
        t_next += interval
        time.sleep(max(0.0, t_next - time.monotonic()))
    last = (2000, frames - 1)
    harness.wait_outputs(last, timeout=30, topics=('depth/image',))  # the newest frame is never dropped
    with harness.lock:
        arrivals = {k: t for k, t in harness.arrival['depth/image'].items() if k in published}
    latencies = np.array([arrivals[k] - published[k] for k in arrivals])
    assert len(arrivals) < frames, 'four frames per forward pass must overrun the newest-frame slot'
    # bounded: nothing queues. A frame waits at most for the one in flight, then for its own processing.
    assert harness.wait_for(lambda: harness.latest_diagnostics(after=max(arrivals.values()) + 0.05), 5)
    diag = harness.latest_diagnostics()  # sent after the last depth: includes its timings

    def stage_max(stage: str) -> float:  # seconds; the slowest of the last 100 frames
        return float(diag[f'latency_ms.{stage}.max']) / 1000

    processing = sum(stage_max(s) for s in ('decode', 'preprocess', 'forward', 'postprocess', 'publish'))
    assert stage_max('queue_wait') <= processing + 0.5, diag
    assert latencies.max() < 2 * processing + 1.0, (latencies, diag)

    def delta(diag, key) -> int:
        return int(diag[key]) - int(before[key])

    def all_accounted() -> bool:  # every frame sent was published, dropped by the slot, or lost before the node
        diag = harness.latest_diagnostics()
        return (delta(diag, 'frames_published') + delta(diag, 'frames_dropped')
                + delta(diag, 'frames_lost_before_node') == frames)
    assert harness.wait_for(all_accounted, 5), (harness.latest_diagnostics(), before, len(arrivals))
    assert delta(harness.latest_diagnostics(), 'frames_dropped') > 0
    print(f'\nburst of {frames} frames at {W}x{H}: {len(arrivals)} published, '
          f'latency median {np.median(latencies) * 1e3:.0f} ms, max {latencies.max() * 1e3:.0f} ms')


def test_outputs_nobody_subscribes_to_are_not_computed(running):
    harness, _, _ = running
    for sub in harness.subs:
        harness.node.destroy_subscription(sub)
    harness.subs = []
    before = int(harness.latest_diagnostics()['frames_skipped_no_subscribers'])
    published_before = int(harness.latest_diagnostics()['frames_published'])

    def skipped() -> int:
        return int(harness.latest_diagnostics()['frames_skipped_no_subscribers']) - before
    deadline = time.monotonic() + 15  # the node learns of the removal through discovery: keep feeding it until then
    i = 0
    while skipped() < 3 and time.monotonic() < deadline:
        harness.publish(_rgb(6), (3000, i), intrinsics=_intrinsics())
        i += 1
        time.sleep(0.4)
    assert skipped() >= 3, harness.latest_diagnostics()
    published = int(harness.latest_diagnostics()['frames_published'])
    time.sleep(1.0)
    assert int(harness.latest_diagnostics()['frames_published']) == published  # nothing computed any more
    assert published - published_before < i  # some frames were skipped, not run through the model
