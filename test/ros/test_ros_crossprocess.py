"""A real publish/subscribe round trip across processes: this process publishes a 640x480 Image, a CameraInfo and an
xyzrgb PointCloud2; a child process (test/ros_echo_child.py) decodes them with mgeo_ros.ros.convert, re-encodes and
publishes them back; the content is compared here."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from node_harness import stop_node

pytestmark = pytest.mark.ros

CHILD = Path(__file__).resolve().parents[1] / 'ros_echo_child.py'


@pytest.fixture
def ros_node():
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f'mgeo_crossprocess_test_{os.getpid()}')
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


def _start_child(ros_env, prefix, *extra):
    return subprocess.Popen([sys.executable, str(CHILD), '--prefix', prefix, '--timeout', '60', *extra], env=ros_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_child(proc):
    stop_node(proc)


@pytest.fixture
def echo_child(ros_env):
    prefix = f'/xp{os.getpid()}'
    proc = _start_child(ros_env, prefix)
    yield prefix, proc
    _stop_child(proc)


def _wait(node, predicate, timeout_s):
    import rclpy

    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


@pytest.mark.ros_runtime
def test_image_camera_info_and_cloud_round_trip_through_another_process(ros_node, echo_child):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from mgeo_ros.geometry import Intrinsics, unproject
    from mgeo_ros.ros import convert

    prefix, child = echo_child
    rng = np.random.default_rng(3)
    width, height = 640, 480
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    intr = Intrinsics(fx=525.0, fy=523.5, cx=319.5, cy=239.5, width=width, height=height)
    depth = rng.uniform(0.5, 8.0, (height, width)).astype(np.float32)
    depth[100:120, 200:260] = np.nan
    points = unproject(depth, intr)
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789

    received = {}
    out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for name, cls in (('image', Image), ('camera_info', CameraInfo), ('points', PointCloud2)):
        ros_node.create_subscription(cls, f'{prefix}/out/{name}', lambda m, n=name: received.setdefault(n, m), out_qos)
    in_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {name: ros_node.create_publisher(cls, f'{prefix}/in/{name}', in_qos)
                  for name, cls in (('image', Image), ('camera_info', CameraInfo), ('points', PointCloud2))}
    assert child.stdout.readline().strip() == 'ready', child.stderr.read()
    assert _wait(ros_node, lambda: all(p.get_subscription_count() > 0 for p in publishers.values()), 20), \
        'the child never subscribed'

    publishers['image'].publish(convert.numpy_to_image(rgb, 'rgb8', header))
    publishers['camera_info'].publish(convert.intrinsics_to_camera_info(intr, header))
    publishers['points'].publish(convert.points_to_pointcloud2(points[::2, ::2], header, rgb=rgb[::2, ::2]))
    assert _wait(ros_node, lambda: len(received) == 3, 30), f'only {sorted(received)} came back; child: {child.poll()}'

    for msg in received.values():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 123456789)
        assert msg.header.frame_id == 'camera_optical'
    image = received['image']
    assert (image.width, image.height, image.encoding) == (640, 480, 'rgb8')
    np.testing.assert_array_equal(convert.image_to_rgb8(image), rgb)
    assert convert.camera_info_to_intrinsics(received['camera_info']) == intr
    cloud = received['points']
    assert (cloud.height, cloud.width, cloud.is_dense) == (240, 320, False)
    back, back_rgb = convert.pointcloud2_to_numpy(cloud)
    np.testing.assert_array_equal(back, points[::2, ::2])
    np.testing.assert_array_equal(back_rgb, rgb[::2, ::2])


@pytest.mark.ros_runtime
def test_best_effort_640x480_stream_crosses_processes(ros_node, ros_env):
    """A camera-like best-effort stream of 640x480 rgb8 frames (at most 30 Hz) into another process: with the Fast
    DDS large-frames profile (set by conftest under the name this Fast DDS reads, inherited by the child) nearly
    every frame arrives; Fast DDS's default shared-memory segment drops most of them. The stream waits for each
    echo (up to 1 s) before the next frame, so a loaded machine slows the stream down instead of dropping frames
    in the echo child: what is counted is the transport, not this machine's speed (the rate is `mgeo bench`'s)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mgeo_ros.ros import convert

    prefix = f'/be{os.getpid()}'
    child = _start_child(ros_env, prefix, '--best-effort-in')
    try:
        stamps = set()
        out_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        ros_node.create_subscription(Image, f'{prefix}/out/image', lambda m: stamps.add(m.header.stamp.nanosec),
                                     out_qos)
        publisher = ros_node.create_publisher(Image, f'{prefix}/in/image',
                                              QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert child.stdout.readline().strip() == 'ready', child.stderr.read()
        assert _wait(ros_node, lambda: publisher.get_subscription_count() > 0, 20)
        frames = 45
        rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for i in range(frames):
            header = Header(frame_id='cam')
            header.stamp.nanosec = i + 1
            publisher.publish(convert.numpy_to_image(rgb, 'rgb8', header))
            _wait(ros_node, lambda: False, 1 / 30)
            _wait(ros_node, lambda i=i: i + 1 in stamps, 1.0)
        _wait(ros_node, lambda: len(stamps) >= frames, 2)
        print(f'\nbest-effort 640x480 (<= 30 Hz): {len(stamps)} of {frames} frames crossed and came back')
        assert len(stamps) >= 0.9 * frames
    finally:
        _stop_child(child)
