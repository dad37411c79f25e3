"""The first frame and its CameraInfo: an image and its info come on two subscriptions in no fixed order, so the
first frame waits (bounded) for the first info when a camera_info publisher is matched, and a camera that never
sends its info costs that wait once, not on every frame. Real rclpy, real ONNX Runtime; no torch needed."""
from __future__ import annotations

import os
import threading
import time

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
)

from mgeo_ros.ros import camera_channel

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]

W, H = runtime_models.TINY_SIZE


def _publish_and_collect(tiny_onnx, prefix: str, frames: int, info_after_image: bool, info_publisher: bool
                         ) -> tuple[list, list, object]:
    """Feed `frames` images (stamps (9100, k)) to the node in this process, each the moment the last one's output is
    out; with `info_after_image` the first frame's CameraInfo follows its image once the node is waiting for it (the
    order a loaded machine may deliver). The depth/camera_info messages published in order, each frame's wait bound
    and the intrinsics sent."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from mgeo_ros.ros import convert

    ns = f'/{prefix}{os.getpid()}'
    with node_in_process('-r', f'__ns:={ns}', '-p', f'model:={tiny_onnx}', '-p', 'backend:=onnxruntime') as node:
        assert settled_model_status(node, 60) == 'ready'
        channel = node.channels[0]
        waiting = []
        real_for_header = channel.infos.for_header

        def for_header(header, wait_s=0.0):
            waiting.append(wait_s)
            return real_for_header(header, wait_s)

        channel.infos.for_header = for_header
        with spun_with_helper(node, f'{prefix}_feeder') as helper:
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            image_pub = helper.create_publisher(Image, f'{ns}/image', reliable)
            info_pub = helper.create_publisher(CameraInfo, f'{ns}/camera_info', reliable) if info_publisher else None
            got: list = []
            helper.create_subscription(CameraInfo, f'{ns}/depth/camera_info', got.append, QoSProfile(depth=50))
            poll = NodeHarness.wait_for
            assert poll(None, lambda: image_pub.get_subscription_count() > 0
                        and (info_pub is None or info_pub.get_subscription_count() > 0)
                        and node.channels[0].publishers['info'].get_subscription_count() > 0, 20)
            rgb, intr = smooth_rgb(W, H), camera_intrinsics(W, H)
            for k in range(frames):
                header = Header(frame_id='cam_optical')
                header.stamp.sec, header.stamp.nanosec = 9100, k
                info = convert.intrinsics_to_camera_info(intr, header)
                if info_pub is not None and not (info_after_image and k == 0):
                    info_pub.publish(info)
                image_pub.publish(convert.numpy_to_image(rgb, 'rgb8', header))
                if info_pub is not None and info_after_image and k == 0:
                    # the node asks for the first frame's info before it is sent: it has to wait for it
                    assert poll(None, lambda: len(waiting) > 0, 20)
                    info_pub.publish(info)
                assert poll(None, lambda k=k: len(got) > k, 30), f'frame {k} not published'
        return got, waiting, intr


def test_the_first_frame_waits_for_its_camera_info_when_it_comes_after_the_image(tiny_onnx):
    got, waiting, intr = _publish_and_collect(tiny_onnx, 'infolate', 2, info_after_image=True, info_publisher=True)
    assert waiting[0] == camera_channel.FIRST_INFO_WAIT_S  # the first frame waited (a publisher is matched)
    assert all(w == 0 for w in waiting[1:]), waiting  # later frames never wait
    for msg in got:  # the camera's own intrinsics, not ones recovered from the model
        assert np.allclose([msg.k[0], msg.k[4], msg.k[2], msg.k[5]], [intr.fx, intr.fy, intr.cx, intr.cy]), msg.k


def test_without_a_camera_info_publisher_no_frame_waits(tiny_onnx):
    got, waiting, intr = _publish_and_collect(tiny_onnx, 'infonone', 2, info_after_image=False, info_publisher=False)
    assert waiting == [0.0, 0.0]
    assert len(got) == 2 and not np.isclose(got[0].k[0], intr.fx)  # recovered from the model


def test_a_camera_info_cache_wait_ends_when_the_info_arrives_the_bound_runs_out_or_it_is_woken():
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    cache = camera_channel.CameraInfoCache()
    header = Header()
    header.stamp.sec = 3
    assert cache.empty() and cache.for_header(header, 0.05) is None  # none came: the bound ends the wait
    info = CameraInfo(header=header)
    threading.Timer(0.05, cache.put, (info,)).start()
    assert cache.for_header(header, 30.0) is info  # woken by the info, long before the bound
    stopped = camera_channel.CameraInfoCache()
    threading.Timer(0.05, stopped.wake).start()
    start = time.monotonic()
    assert stopped.for_header(header, 60.0) is None  # the channel stops: the wait ends with nothing ...
    assert time.monotonic() - start < 30.0  # ... when woken, not at its bound
