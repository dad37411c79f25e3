"""One mgeo_depth_node serving four cameras through one model, across processes with real rclpy: the node runs as a
subprocess (ONNX Runtime, a tiny model exported with a batch of 2, so a round over four cameras is two forwards);
this process is the four cameras and every consumer."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from node_harness import MultiCameraHarness, serving, smooth_rgb, start_multi_node

pytestmark = pytest.mark.ros

W, H = 96, 72
CAMERAS = ['front', 'left', 'right', 'rear']
NODE = 'mgeo_depth_node'


def _intrinsics(i: int):
    from mgeo_ros.geometry import Intrinsics

    return Intrinsics(fx=80.0 + 10 * i, fy=79.0 + 10 * i, cx=47.0 + i, cy=35.5 - i, width=W, height=H)


def _rgb(seed: int) -> np.ndarray:
    return smooth_rgb(W, H, seed)


@pytest.fixture(scope='module')
def batch2_onnx(tmp_path_factory):
    import torch

    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.model import build_model, preset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp('multicam_model') / 'tiny_b2.onnx'
    export_onnx(build_model(preset('tiny')).eval(), str(path), (W, H), num_tokens=40, batch=2)
    return path


@pytest.fixture(scope='module')
def running(batch2_onnx, tmp_path_factory):
    ns = f'/mc{os.getpid()}'
    log = tmp_path_factory.mktemp('multicam_log') / 'node.log'
    proc = start_multi_node(ns, CAMERAS, {'model': str(batch2_onnx), 'backend': 'onnxruntime',
                                          'diagnostics_period': 0.3, 'log_throttle': 0.0}, log_path=log)
    with serving(proc, MultiCameraHarness(ns, CAMERAS), log) as running:
        running[0].wait_ready(proc)
        yield running


def test_every_camera_gets_every_output_with_its_header_and_intrinsics(running):
    from mgeo_ros.ros import convert

    harness, _, _ = running
    keys = {cam: (100 + i, 1000 * i) for i, cam in enumerate(CAMERAS)}
    for i, cam in enumerate(CAMERAS):
        harness.publish(cam, _rgb(i), keys[cam], f'{cam}_optical', intrinsics=_intrinsics(i))
    for i, cam in enumerate(CAMERAS):
        out = harness.wait_outputs(cam, keys[cam])
        for topic, msg in out.items():
            assert msg.header.frame_id == f'{cam}_optical', (cam, topic)
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == keys[cam], (cam, topic)
        info = out['depth/camera_info']
        assert (info.width, info.height) == (W, H)
        want = _intrinsics(i)
        assert info.k[0] == pytest.approx(want.fx) and info.k[2] == pytest.approx(want.cx), cam  # its own camera
        assert info.k[4] == pytest.approx(want.fy) and info.k[5] == pytest.approx(want.cy), cam
        depth = convert.image_to_numpy(out['depth/image'])
        assert depth.shape == (H, W) and np.isfinite(depth).any()
        assert (out['points'].height, out['points'].width) == (H, W)
        assert out['depth/mask'].encoding == 'mono8'
        confidence = convert.image_to_numpy(out['depth/confidence'])
        assert out['depth/confidence'].encoding == '32FC1' and confidence.shape == (H, W)
        assert out['depth/normals'].encoding == '32FC3' and (out['depth/normals'].height, out['depth/normals'].width) \
            == (H, W)
    names = harness.status_names()
    assert harness.wait_for(lambda: all(harness.status(f'{c} depth').get('frames_published', '0') != '0'
                                        for c in CAMERAS), 10)
    assert {f'{harness.ns}/{NODE}: {c} depth' for c in CAMERAS} | {f'{harness.ns}/{NODE}: model'} <= \
        harness.status_names() | names
    model = harness.status('model')
    assert model['backend'] == 'onnxruntime' and model['max_batch'] == '2'
    assert all(int(model.get(f'frames_served.{c}', 0)) >= 1 for c in CAMERAS), model


def test_garbage_on_one_camera_never_affects_the_others(running):
    from std_msgs.msg import Header

    from mgeo_ros.geometry import Intrinsics
    from mgeo_ros.ros import convert

    harness, proc, _ = running
    bad_cam, good = 'left', [c for c in CAMERAS if c != 'left']
    before = {c: harness.status(f'{c} depth') for c in CAMERAS}
    for n in range(6):
        header = Header(frame_id='left_optical')
        header.stamp.sec, header.stamp.nanosec = 300 + n, 0
        broken = convert.numpy_to_image(_rgb(n), 'rgb8', header)
        if n % 2:
            broken.encoding = 'no_such_encoding'
        else:
            broken.data = bytes(broken.data)[:100]  # truncated
        zero_focal = convert.intrinsics_to_camera_info(Intrinsics(fx=80, fy=80, cx=48, cy=36, width=W, height=H),
                                                       header)
        zero_focal.k = [0.0] * 9
        harness.info_pubs[bad_cam].publish(zero_focal)
        harness.image_pubs[bad_cam].publish(broken)
        for i, cam in enumerate(good):
            harness.publish(cam, _rgb(10 + n), (300 + n, 1 + i), f'{cam}_optical', intrinsics=_intrinsics(i))
        time.sleep(0.15)
    for i, cam in enumerate(good):  # the last frame of every other camera comes out, with its own intrinsics
        out = harness.wait_outputs(cam, (305, 1 + i))
        assert out['depth/camera_info'].k[0] == pytest.approx(_intrinsics(i).fx)
    assert proc.poll() is None

    def counted() -> bool:
        bad = harness.status(f'{bad_cam} depth')
        return int(bad.get('bad_input.image', 0)) >= int(before[bad_cam].get('bad_input.image', 0)) + 3
    assert harness.wait_for(counted, 10), harness.status(f'{bad_cam} depth')
    for cam in good:
        assert harness.status(f'{cam} depth').get('bad_input_total') == before[cam].get('bad_input_total', '0'), cam
    # the bad camera's bad CameraInfo was ignored for its own frame only: a good frame with good info works again
    harness.publish(bad_cam, _rgb(99), (320, 0), 'left_optical', intrinsics=_intrinsics(1))
    out = harness.wait_outputs(bad_cam, (320, 0))
    assert out['depth/camera_info'].k[0] == pytest.approx(_intrinsics(1).fx)


def test_no_camera_starves_under_overload(running):
    harness, proc, _ = running
    frames = [_rgb(50 + i) for i in range(len(CAMERAS))]
    rate_hz, seconds = 40.0, 8.0  # 4 x 40 Hz: far more than the node's throughput here
    served_before = dict(harness.status('model'))
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        for i, cam in enumerate(CAMERAS):
            harness.publish(cam, frames[i], (500 + n // 1000, 1000 * (n % 1000) + i), f'{cam}_optical',
                            intrinsics=_intrinsics(i))
        n += 1
        time.sleep(max(0.0, start + n / rate_hz - time.monotonic()))
    time.sleep(1.0)
    counts = {cam: harness.count(cam, after=start) for cam in CAMERAS}
    print(f'\n{n} frames sent per camera in {seconds:.0f} s; published per camera: {counts}')
    assert proc.poll() is None
    assert min(counts.values()) >= 5, counts
    assert max(counts.values()) <= 1.2 * min(counts.values()), counts  # rates within 20 % of each other
    assert min(counts.values()) < n, 'not overloaded: the test would not show starvation'
    model = harness.status('model')
    batched = int(model.get('batches_of.2', 0)) - int(served_before.get('batches_of.2', 0))
    assert batched > 0, model  # waiting frames of two cameras ran as one forward
    for cam in CAMERAS:
        wait = harness.status(f'{cam} depth').get('latency_ms.batch_wait.median', '')
        assert wait, f'{cam}: no batch_wait timing in diagnostics'


def test_lifecycle_node_with_cameras_loads_one_shared_model_per_configure(batch2_onnx):
    import rclpy

    from mgeo_ros.ros.node import MgeoDepthLifecycleNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = MgeoDepthLifecycleNode(context=context, cli_args=[
        '--ros-args', '-r', f'__ns:=/lc{os.getpid()}', '-p', 'cameras:=[a,b]', '-p', f'model:={batch2_onnx}',
        '-p', 'backend:=onnxruntime'])
    try:
        assert [c.name for c in node.channels] == ['a', 'b'] and node.shared is None
        assert all(c.stats.model_status == 'unconfigured' for c in node.channels)
        node.trigger_configure()
        assert node.shared is not None and node.shared.max_batch == 2
        predictors = [c.pipeline.session.predictor for c in node.channels]
        assert all(c.stats.model_status == 'ready' for c in node.channels)
        assert all(p.backend is node.model.predictor.backend for p in predictors)  # one backend, loaded once
        assert predictors[0].preprocessor is not predictors[1].preprocessor  # each camera its own buffers
        node.trigger_activate()
        assert all(c.image_sub is not None and c.image_sub.topic_name.endswith(f'/{c.name}/image')
                   for c in node.channels)
        node.trigger_deactivate()
        assert all(c.image_sub is None for c in node.channels)
        node.trigger_cleanup()
        assert node.shared is None and all(c.stats.model_status == 'unconfigured' for c in node.channels)
    finally:
        node.shutdown()
        node.destroy_node()
        context.try_shutdown()


def test_every_camera_gets_the_same_per_pixel_placement(batch2_onnx, monkeypatch):
    """With `cameras` set, each camera's frame stage runs its per-pixel work where the placement puts it: the
    placement here (forced, as a GPU backend would get it) is the post graph on ONNX Runtime's CPU provider. Cleanup
    lets go of the backend and the graphs."""
    import gc
    import weakref

    import rclpy

    from mgeo_ros.ros.node import MgeoDepthLifecycleNode
    from mgeo_ros.runtime import post_graph

    monkeypatch.setattr(post_graph, 'post_graph_for', lambda backend, cache_dir: post_graph.PostGraph('cpu'))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = MgeoDepthLifecycleNode(context=context, cli_args=[
        '--ros-args', '-r', f'__ns:=/pp{os.getpid()}', '-p', 'cameras:=[a,b,c]', '-p', f'model:={batch2_onnx}',
        '-p', 'backend:=onnxruntime'])
    try:
        node.trigger_configure()
        posts = [c.pipeline.session.stage.post for c in node.channels]
        assert all(isinstance(p, post_graph.PostGraph) for p in posts), posts
        assert len({id(p) for p in posts}) == 3  # one per camera: each keeps its own graph and buffers
        held = [weakref.ref(p) for p in posts] + [weakref.ref(node.model.predictor.backend)]
        del posts
        node.trigger_cleanup()  # frees what configure made: the backend's session and every camera's post graph
        gc.collect()
        assert [r() for r in held] == [None] * len(held)
    finally:
        node.shutdown()
        node.destroy_node()
        context.try_shutdown()


def test_output_scale_is_per_camera(running):
    """`<camera>.output_scale` sets one camera's output size (and its camera_info, scaled as image_proc's resize
    does); the other cameras keep the node-wide value; a value outside (0, 1] is refused naming it."""
    harness, _, _ = running
    cam, other = CAMERAS[0], CAMERAS[1]
    refused = harness.set_parameters(NODE, {f'{cam}.output_scale': 0.0})[0]
    assert not refused.successful and 'output_scale' in refused.reason
    try:
        assert harness.set_parameters(NODE, {f'{cam}.output_scale': 0.5})[0].successful
        keys = {cam: (900, 1), other: (900, 2)}  # stamps no other test of the module sends
        for i, name in enumerate((cam, other)):
            harness.publish(name, _rgb(i), keys[name], f'{name}_optical', intrinsics=_intrinsics(i))
        small, full = harness.wait_outputs(cam, keys[cam]), harness.wait_outputs(other, keys[other])
        assert (small['depth/image'].width, small['depth/image'].height) == (W // 2, H // 2)
        info = small['depth/camera_info']
        assert (info.width, info.height) == (W // 2, H // 2)
        assert info.k[0] == pytest.approx(_intrinsics(0).fx / 2) and info.k[2] == pytest.approx(_intrinsics(0).cx / 2)
        assert (small['points'].width, small['points'].height) == (W // 2, H // 2)
        assert (full['depth/image'].width, full['depth/image'].height) == (W, H)
    finally:
        harness.set_parameters(NODE, {f'{cam}.output_scale': 1.0})
