"""Bench child process: the camera and the consumer of a node under test, in a process of its own, so that the node's
process does only the node's work. It subscribes to the given output topics serialized (raw: no deserialization, as
little CPU as a C++ consumer takes) and, with --camera, publishes rgb8 Image + CameraInfo frames to the node (with
--compressed jpeg: JPEG CompressedImage frames on <ns>/image/compressed, encoded once at --quality).

Prints `ready`, then answers one JSON line per command read from stdin:
  `stream RATE SECONDS`: publish frames at RATE Hz for SECONDS (each stamped with the wall clock when sent), wait for
      the outputs in flight, and report frames sent and, per depth image of those frames, the stamp -> arrival time;
  `counts`: messages and bytes received so far per topic.
End of stdin ends it.

  python -m mgeo_ros.bench.sink [--camera NS WIDTH HEIGHT [--compressed jpeg --quality Q]] TOPIC=TYPE ...
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mgeo_ros.ros.spin_thread import SpinThread

SETTLE_S = 1.5  # after the last frame sent: the frame in the model, the one waiting, their publishing


def message_type(name: str):
    """'sensor_msgs/msg/Image' -> the class."""
    package, _, cls = name.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), cls)


def _stamp_ns(data: bytes) -> int:
    """The header stamp of a serialized message (its first two CDR fields), in ns."""
    order = 'little' if data[1] == 1 else 'big'
    sec = int.from_bytes(data[4:8], order, signed=True)
    return sec * 1_000_000_000 + int.from_bytes(data[8:12], order)


class Sink:
    """Output subscriptions (counts, depth arrivals by stamp) and, optionally, the camera's publishers."""

    def __init__(self, node, topics: list[str], camera: tuple[str, int, int] | None, compressed: str | None = None,
                 quality: int = 80) -> None:
        self.node = node
        self.lock = threading.Lock()
        self.counts: dict[str, list[int]] = {}
        self.arrivals: dict[int, int] = {}  # depth stamp (ns) -> arrival (ns, wall clock)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # matches reliable and best effort
        for spec in topics:
            topic, _, type_name = spec.partition('=')
            self.counts[topic] = [0, 0]
            node.create_subscription(message_type(type_name), topic, self._counter(topic), qos, raw=True)
        self.frames = self.info = None
        if camera is not None:
            from mgeo_ros.bench.node import bench_intrinsics, camera_image
            from mgeo_ros.ros import convert

            ns, width, height = camera
            header = Header(frame_id='bench_optical')
            images = [camera_image(width, height, s) for s in range(4)]
            self.info = convert.intrinsics_to_camera_info(bench_intrinsics(width, height), header)
            if compressed:
                self.frames = [convert.rgb8_to_compressed(rgb, header, compressed, quality) for rgb in images]
                self.image_pub = node.create_publisher(CompressedImage, f'{ns}/image/compressed', qos)
            else:
                self.frames = [convert.numpy_to_image(rgb, 'rgb8', header) for rgb in images]
                self.image_pub = node.create_publisher(Image, f'{ns}/image', qos)
            self.info_pub = node.create_publisher(CameraInfo, f'{ns}/camera_info', qos)

    def _counter(self, topic: str):
        depth = topic.endswith('/depth/image')

        def on_message(data: bytes) -> None:
            now = time.time_ns()
            with self.lock:
                c = self.counts[topic]
                c[0] += 1
                c[1] += len(data)
                if depth:
                    self.arrivals[_stamp_ns(data)] = now
        return on_message

    def stream(self, rate: float, seconds: float) -> dict:
        sent = []
        next_at = time.monotonic()
        for i in range(int(round(rate * seconds))):
            now = time.time_ns()
            image = self.frames[i % len(self.frames)]
            for msg in (self.info, image):
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            self.info_pub.publish(self.info)
            self.image_pub.publish(image)
            sent.append(now)
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(SETTLE_S)
        with self.lock:
            got = sorted((self.arrivals[s], s) for s in sent if s in self.arrivals)
        return {'sent': len(sent), 'published': len(got), 'latency_ms': [(a - s) / 1e6 for a, s in got],
                'arrival_s': [(a - got[0][0]) / 1e9 for a, _ in got] if got else []}

    def totals(self) -> dict:
        with self.lock:
            return {t: {'messages': c[0], 'bytes': c[1]} for t, c in self.counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--camera', nargs=3, metavar=('NS', 'WIDTH', 'HEIGHT'))
    parser.add_argument('--compressed', choices=('jpeg',), default=None)
    parser.add_argument('--quality', type=int, default=80)
    parser.add_argument('topics', nargs='*', metavar='TOPIC=TYPE')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    ros = SpinThread('mgeo_bench_sink')
    camera = (args.camera[0], int(args.camera[1]), int(args.camera[2])) if args.camera else None
    sink = Sink(ros.node, args.topics, camera, args.compressed, args.quality)
    ros.start()
    print('ready', flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ['stream']:
                print(json.dumps(sink.stream(float(words[1]), float(words[2]))), flush=True)
            elif words[:1] == ['counts']:
                print(json.dumps(sink.totals()), flush=True)
    finally:
        ros.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
