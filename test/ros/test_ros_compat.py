"""rclpy feature detection (mgeo_ros/ros/compat.py): the path this rclpy takes, and the Humble fallback, both through
a real subscription and publisher."""
from __future__ import annotations

import os
import time
import types

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]


@pytest.fixture
def node():
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    n = rclpy.create_node(f'compat_{os.getpid()}', context=context)
    yield n
    n.destroy_node()
    rclpy.try_shutdown(context=context)


def _spin_until(node, predicate, timeout_s=10.0) -> bool:
    import rclpy

    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not predicate():
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)
    return predicate()


def _exchange(node, callback, topic):
    from std_msgs.msg import String

    from mgeo_ros.ros.compat import publisher_count

    sub = node.create_subscription(String, topic, callback, 10)
    pub = node.create_publisher(String, topic, 10)
    assert _spin_until(node, lambda: publisher_count(node, sub) > 0 and pub.get_subscription_count() > 0)
    pub.publish(String(data='a'))
    return sub, pub


def test_this_rclpy_passes_message_info_to_two_argument_callbacks(node):
    """Jazzy and Kilted (rclpy >= 4): the node's (msg, info) callbacks get sequence numbers and timestamps."""
    from mgeo_ros.ros import compat

    assert compat.MESSAGE_INFO_CALLBACKS
    got = []
    _exchange(node, compat.with_message_info(lambda msg, info: got.append((msg.data, info))), f'/cx{os.getpid()}a')
    assert _spin_until(node, lambda: got)
    data, info = got[0]
    assert data == 'a' and info['source_timestamp'] > 0 and 'publication_sequence_number' in info


def test_humble_fallback_calls_with_empty_info_through_a_real_subscription(node, monkeypatch):
    """Where rclpy cannot pass message info (Humble), the wrapped callback takes one argument, rclpy treats it as
    message-only, and the node's callback still runs (with an empty info)."""
    from mgeo_ros.ros import compat

    monkeypatch.setattr(compat, 'MESSAGE_INFO_CALLBACKS', False)
    got = []
    wrapped = compat.with_message_info(lambda msg, info: got.append((msg.data, info)))
    _exchange(node, wrapped, f'/cx{os.getpid()}b')
    assert _spin_until(node, lambda: got)
    assert got[0] == ('a', {})


def test_publisher_count_without_subscription_get_publisher_count(node):
    """Humble's Subscription has no get_publisher_count: the graph count of the topic stands in, and agrees."""
    from mgeo_ros.ros.compat import publisher_count

    sub, _ = _exchange(node, lambda msg: None, f'/cx{os.getpid()}c')
    humble_like = types.SimpleNamespace(topic_name=sub.topic_name)       # no get_publisher_count attribute
    assert publisher_count(node, humble_like) == publisher_count(node, sub) == 1
