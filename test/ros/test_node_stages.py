"""The node's two stages per camera: the model runs frame n+1 while frame n's outputs are made and published, and
frame n+2 is decoded meanwhile.

Ordering, no duplicates, newest-frame-wins and per-frame headers and intrinsics are checked by stamps, never by
clocks. Real rclpy, real ONNX Runtime; no torch needed (also run by the Jazzy job)."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import runtime_models
from node_harness import (
    NodeHarness,
    camera_intrinsics,
    node_in_process,
    settled_model_status,
    smooth_rgb,
    spun_with_helper,
    start_node,
    stop_node,
)

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]

W, H = runtime_models.TINY_SIZE


def _feed_one_at_a_time(node, ns: str, sec: int, frames: int, cond: threading.Condition, reached, what: str
                        ) -> list[tuple[int, int]]:
    """Publish `frames` frames stamped (sec, k) to the node in this process, frame k+1 only once `reached(k)` holds
    under `cond` (so no frame is replaced in the slot); the stamps of the depth images received, in order."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from mgeo_ros.ros import convert

    with spun_with_helper(node, f'feeder_{sec}') as helper:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = helper.create_publisher(Image, f'{ns}/image', reliable)
        info_pub = helper.create_publisher(CameraInfo, f'{ns}/camera_info', reliable)
        got: list[tuple[int, int]] = []
        helper.create_subscription(Image, f'{ns}/depth/image',
                                   lambda m: got.append((m.header.stamp.sec, m.header.stamp.nanosec)),
                                   QoSProfile(depth=50))
        poll = NodeHarness.wait_for
        assert poll(None, lambda: image_pub.get_subscription_count() > 0
                    and node.channels[0].publishers['depth'].get_subscription_count() > 0, 20)
        rgb = smooth_rgb(W, H)
        intr = camera_intrinsics(W, H)
        for k in range(frames):
            header = Header(frame_id='cam_optical')
            header.stamp.sec, header.stamp.nanosec = sec, k
            info_pub.publish(convert.intrinsics_to_camera_info(intr, header))
            image_pub.publish(convert.numpy_to_image(rgb, 'rgb8', header))
            with cond:
                assert cond.wait_for(lambda k=k: reached(k), 30), f'frame {k} never {what}'
        assert poll(None, lambda: len(got) == frames, 30), got
    return got


@contextmanager
def _tiny_node(tiny_onnx, prefix: str) -> Iterator[tuple]:
    """The node in this process on the tiny ONNX model (ONNX Runtime), its model ready: (node, namespace, the first
    camera's pipeline, its backend)."""
    ns = f'/{prefix}{os.getpid()}'
    with node_in_process('-r', f'__ns:={ns}', '-p', f'model:={tiny_onnx}', '-p', 'backend:=onnxruntime') as node:
        assert settled_model_status(node, 60) == 'ready'
        pipeline = node.channels[0].pipeline
        yield node, ns, pipeline, pipeline.session.predictor.backend


def test_the_model_runs_the_next_frame_while_the_last_one_is_published(tiny_onnx):
    """Stage 2 of frame k is held until the forward of frame k+1 has begun: a serial node would never get there
    (each wait would run into its bound and say False); two overlapped stages do, every time."""
    frames = 4
    with _tiny_node(tiny_onnx, 'stages') as (node, ns, pipeline, backend):
        cond = threading.Condition()
        state = {'forwards': 0, 'in_stage2': 0}
        overlapped: list[bool] = []
        real_forward, real_messages = backend.forward, pipeline.messages

        def forward(image, tokens):
            with cond:
                state['forwards'] += 1
                cond.notify_all()
            return real_forward(image, tokens)

        def messages(frame):
            with cond:
                index = state['in_stage2']
                state['in_stage2'] += 1
                cond.notify_all()
                if index < frames - 1:  # the last frame has no next one to overlap with
                    overlapped.append(cond.wait_for(lambda: state['forwards'] >= index + 2, timeout=30))
            return real_messages(frame)

        backend.forward, pipeline.messages = forward, messages
        # the next frame goes out once this one is in stage 2
        got = _feed_one_at_a_time(node, ns, 7000, frames, cond, lambda k: state['in_stage2'] > k,
                                  'reached stage 2')
    assert overlapped == [True] * (frames - 1), overlapped
    assert got == [(7000, k) for k in range(frames)]


def test_the_next_frame_is_decoded_while_the_model_runs(tiny_onnx):
    """The forward of frame k is held until frame k+1 has been prepared (decoded, its intrinsics found): a node
    that decodes on the model's thread would never get there; one whose decode overlaps the forward does, every
    time, and still publishes every frame once, in order."""
    frames = 4
    with _tiny_node(tiny_onnx, 'prefetch') as (node, ns, pipeline, backend):
        cond = threading.Condition()
        state = {'prepared': 0, 'forwards': 0}
        overlapped: list[bool] = []
        real_forward, real_prepare = backend.forward, pipeline.prepare

        def prepare(frame, cfg, wanted):
            ready = real_prepare(frame, cfg, wanted)
            with cond:
                state['prepared'] += 1
                cond.notify_all()
            return ready

        def forward(image, tokens):
            with cond:
                index = state['forwards']
                state['forwards'] += 1
                cond.notify_all()
                if index < frames - 1:  # the last frame has no next one to overlap with
                    overlapped.append(cond.wait_for(lambda: state['prepared'] >= index + 2, timeout=30))
            return real_forward(image, tokens)

        backend.forward, pipeline.prepare = forward, prepare
        # the next frame goes out once this one is in the model
        got = _feed_one_at_a_time(node, ns, 7100, frames, cond, lambda k: state['forwards'] > k, 'ran')
    assert overlapped == [True] * (frames - 1), overlapped
    assert got == [(7100, k) for k in range(frames)]


def test_a_burst_is_published_in_order_once_each_with_its_own_header_and_intrinsics(tiny_onnx, tmp_path):
    """Fed at 100 Hz (faster than the model runs here: frames are dropped, newest wins): what is published comes in
    stamp order, each stamp once, the newest frame always, each with its frame_id and the camera_info of its own
    stamp."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image

    from mgeo_ros.geometry import Intrinsics

    ns = f'/stburst{os.getpid()}'
    proc = start_node(ns, {'model': str(tiny_onnx), 'backend': 'onnxruntime', 'diagnostics_period': 0.3},
                      log_path=tmp_path / 'node.log')
    harness = NodeHarness(ns, 'burst_harness')
    order: dict[str, list] = {'depth/image': [], 'depth/camera_info': []}
    lock = threading.Lock()

    def collect(topic):
        def on(msg):
            with lock:
                order[topic].append((msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id,
                                     tuple(msg.k) if isinstance(msg, CameraInfo) else None))
        return on

    for topic, kind in (('depth/image', Image), ('depth/camera_info', CameraInfo)):
        harness.node.create_subscription(kind, f'{ns}/{topic}', collect(topic), QoSProfile(depth=200))
    try:
        harness.wait_ready(proc, timeout=60)
        rgb = smooth_rgb(W, H)
        frames = 60
        for i in range(frames):  # at 100 Hz: faster than the model runs here
            intr = Intrinsics(fx=100.0 + i, fy=100.0 + i, cx=79.5, cy=59.5, width=W, height=H)
            harness.publish(rgb, (8000, i), frame_id=f'cam_{i}', intrinsics=intr)
            time.sleep(0.01)
        harness.wait_outputs((8000, frames - 1), timeout=60, topics=('depth/image', 'depth/camera_info'))
    finally:
        harness.close()
        code = stop_node(proc)
    assert code == 0, (tmp_path / 'node.log').read_text()[-3000:]
    with lock:
        depth, infos = list(order['depth/image']), list(order['depth/camera_info'])
    stamps = [(s, n) for s, n, _, _ in depth]
    assert stamps == sorted(set(stamps)), stamps  # in order, none twice
    assert stamps[-1] == (8000, frames - 1)  # the newest frame is never dropped
    assert all(frame_id == f'cam_{n}' for _, n, frame_id, _ in depth)
    assert [(s, n) for s, n, _, _ in infos] == stamps
    for _, n, frame_id, k in infos:  # K of the frame's own camera_info, not a neighbour's
        assert frame_id == f'cam_{n}' and np.allclose([k[0], k[4]], [100.0 + n, 100.0 + n]), (n, k)
