"""The rclpy differences between the distros the node runs on (Humble 3.3, Jazzy 7.1, Kilted 9), decided by
feature detection at import rather than by distro name: one code path, with a fallback where an API is missing.
docs/deployment.md "ROS 2 distros" lists every rclpy API the node uses and the first distro that has it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.subscription import Subscription

# rclpy >= 4.0 (Iron; so Jazzy and Kilted) hands (msg, MessageInfo) to a subscription callback that takes two
# arguments; Humble's rclpy calls callback(msg) only.
MESSAGE_INFO_CALLBACKS: bool = hasattr(Subscription, 'CallbackType')


def with_message_info(callback: Callable[[Any, dict], None]) -> Callable[..., None]:
    """A (msg, info) callback as rclpy wants it: unchanged where rclpy passes message info; where it cannot
    (Humble), called with an empty info, so sequence-gap counting and transport latency are simply not measured."""
    if MESSAGE_INFO_CALLBACKS:
        return callback

    def message_only(msg: Any) -> None:
        callback(msg, {})

    return message_only


def publisher_count(node: Node, subscription: Subscription) -> int:
    """Publishers matched to `subscription`: Subscription.get_publisher_count (rclpy >= 4.0), else the graph count
    of its topic (Humble)."""
    count = getattr(subscription, 'get_publisher_count', None)
    return int(count()) if count is not None else node.count_publishers(subscription.topic_name)
