"""Bench child process: subscribes to the node's outputs from another process, so the node's publish path includes
the cross-process transport a real consumer causes. Subscriptions are raw (serialized bytes, not deserialized) to
take as little CPU from the measured process as a C++ consumer would. Prints `ready`, then on SIGTERM/SIGINT or
end of stdin one JSON line: messages and bytes received per topic.

  python -m mgeo_ros.bench.sink /ns/depth/image=sensor_msgs/msg/Image /ns/points=sensor_msgs/msg/PointCloud2
"""
from __future__ import annotations

import importlib
import json
import sys
import threading

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mgeo_ros.ros.spin_thread import spin_child


def message_type(name: str):
    """'sensor_msgs/msg/Image' -> the class."""
    package, _, cls = name.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), cls)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rclpy.init()
    node = rclpy.create_node('mgeo_bench_sink')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # matches reliable and best-effort publishers
    counts: dict[str, list[int]] = {}

    def counter(topic: str):
        def on_message(data: bytes) -> None:
            c = counts[topic]
            c[0] += 1
            c[1] += len(data)
        return on_message

    for spec in argv:
        topic, _, type_name = spec.partition('=')
        counts[topic] = [0, 0]
        node.create_subscription(message_type(type_name), topic, counter(topic), qos, raw=True)
    threading.Thread(target=lambda: (sys.stdin.read(), rclpy.try_shutdown()), daemon=True).start()
    try:
        spin_child(node)
    finally:
        print(json.dumps({t: {'messages': c[0], 'bytes': c[1]} for t, c in counts.items()}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
