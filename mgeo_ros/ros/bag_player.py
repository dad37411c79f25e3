"""Play a ROS 2 bag into the graph and record topics into a new bag, with rosbags and rclpy only (no rosbag2_py).

Messages travel as the raw CDR bytes stored in the bag (`publisher.publish(bytes)`): nothing is deserialized on the
way, so playback costs no per-field Python. Message classes come from the bag's type names through rosidl
(`sensor_msgs/msg/Image` -> `sensor_msgs.msg.Image`).
"""
from __future__ import annotations

import importlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mgeo_ros.bag_files import open_reader, read_messages
from mgeo_ros.errors import BadInputError
from mgeo_ros.ros.compat import publisher_count

QOS_KINDS = ('reliable', 'best_effort', 'sensor_data')


def qos_from_name(kind: str, depth: int = 10) -> QoSProfile:
    """'reliable' or 'best_effort'/'sensor_data' (same thing for a player), volatile, keep-last `depth`."""
    if kind not in QOS_KINDS:
        raise BadInputError(f'qos {kind!r} is not one of {QOS_KINDS}')
    reliability = ReliabilityPolicy.RELIABLE if kind == 'reliable' else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(reliability=reliability, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST, depth=int(depth))


def message_class(type_name: str) -> type:
    """'sensor_msgs/msg/Image' (or 'sensor_msgs/Image') -> the rosidl Python class sensor_msgs.msg.Image."""
    parts = type_name.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise BadInputError(f'message type {type_name!r} is not package/msg/Name')
    try:
        return getattr(importlib.import_module(f'{parts[0]}.{parts[1]}'), parts[2])
    except (ImportError, AttributeError) as error:
        raise BadInputError(f'message type {type_name!r} is not importable here: {error}') from error


def parse_remaps(remaps: Iterable[str]) -> dict[str, str]:
    """['/old:=/new', ...] -> {'/old': '/new'}."""
    table = {}
    for item in remaps:
        old, sep, new = item.partition(':=')
        if not sep or not old or not new:
            raise BadInputError(f'remap {item!r} is not /old:=/new')
        table[old] = new
    return table


@dataclass
class PlaybackStats:
    """What one playback did."""

    published: Counter = field(default_factory=Counter)  # per output topic
    bag_duration_s: float = 0.0
    wall_s: float = 0.0


class BagPlayer:
    """Publishes a bag's messages (all topics or `topics`) at `rate` x real time (0 = as fast as possible).

    Publishers are created on construction, so subscribers can match while `wait_for_subscribers` runs.
    """

    def __init__(self, node: Node, bag_path: str | Path, rate: float = 1.0, remap: dict[str, str] | None = None,
                 topics: Iterable[str] | None = None, qos: QoSProfile | None = None) -> None:
        if rate < 0:
            raise BadInputError(f'rate must be >= 0 (0 = as fast as possible), got {rate}')
        self.node, self.rate, self.bag_path = node, float(rate), Path(bag_path)
        if not self.bag_path.exists():
            raise BadInputError(f'bag {str(self.bag_path)!r} does not exist (expected a rosbag2 folder or its '
                                '.mcap / .db3 file); check the path')
        if self.bag_path.is_file() and (self.bag_path.parent / 'metadata.yaml').is_file():
            self.bag_path = self.bag_path.parent  # a .db3/.mcap file inside a bag directory
        self.remap = dict(remap or {})
        self.reader = open_reader(self.bag_path)
        wanted = set(topics) if topics else None
        self.connections = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if wanted and wanted - {c.topic for c in self.connections}:
            raise BadInputError(f'topics {sorted(wanted - {c.topic for c in self.connections})} are not in bag '
                                f'{self.bag_path} (it has '
                                f'{sorted({c.topic for c in self.reader.connections})})')
        qos = qos or qos_from_name('reliable', 10)
        self.publishers = {}
        self.skipped: dict[str, str] = {}  # bag topic -> why it is not played (type not installed here)
        playable = []
        for connection in self.connections:
            topic = self.output_topic(connection.topic)
            try:
                cls = message_class(connection.msgtype)
            except BadInputError as error:
                if wanted:  # asked for by name: not playing it is an error
                    raise
                self.skipped[connection.topic] = str(error)
                continue
            playable.append(connection)
            if topic not in self.publishers:
                self.publishers[topic] = node.create_publisher(cls, topic, qos)
        self.connections = playable
        if not self.connections:
            raise BadInputError(f'bag {str(self.bag_path)!r} has no playable topics (skipped: {self.skipped})')
        self.message_count = sum(c.msgcount for c in self.connections)

    def output_topic(self, topic: str) -> str:
        return self.remap.get(topic, topic)

    def wait_for_subscribers(self, count: int, timeout_s: float, at_least: Mapping[str, int] | None = None) -> bool:
        """True once every played topic has at least `count` subscribers (`at_least[topic]` where given: e.g. 2
        when a local recorder also listens, so that it alone does not count as the consumer); False at the timeout.
        Best-effort samples published before a subscriber matches are lost, hence the wait."""
        at_least = dict(at_least or {})
        unknown = set(at_least) - set(self.publishers)
        if unknown:       # a typo would silently drop the stricter wait and the first frames with it
            raise ValueError(f'wait_for_subscribers: {sorted(unknown)} not played (played: {sorted(self.publishers)})')
        need = {topic: max(count, at_least.get(topic, count)) for topic in self.publishers}
        deadline = time.monotonic() + timeout_s
        while True:
            if all(p.get_subscription_count() >= need[t] for t, p in self.publishers.items()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def play(self, progress: Callable[[int], None] | None = None, stop: threading.Event | None = None,
             ) -> PlaybackStats:
        """Publish every message at its bag time scaled by 1/rate; `progress(n)` after each, `stop` aborts."""
        stats = PlaybackStats()
        first_stamp = None
        start = time.monotonic()
        for connection, stamp, raw in read_messages(self.bag_path, self.reader, self.connections):
            if stop is not None and stop.is_set():
                break
            if first_stamp is None:
                first_stamp = stamp
            if self.rate > 0:
                due = start + (stamp - first_stamp) * 1e-9 / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            topic = self.output_topic(connection.topic)
            self.publishers[topic].publish(bytes(raw))
            stats.published[topic] += 1
            stats.bag_duration_s = (stamp - first_stamp) * 1e-9
            if progress is not None:
                progress(1)
        stats.wall_s = time.monotonic() - start
        return stats

    def close(self) -> None:
        for publisher in self.publishers.values():
            self.node.destroy_publisher(publisher)
        self.publishers.clear()
        self.reader.close()


class BagRecorder:
    """Subscribes (raw CDR) to `topics` and writes each message with its receive time into a new bag.

    Topics whose type is not given as 'topic:pkg/msg/Type' are typed from the graph once a publisher appears (polled),
    so outputs of a node that starts later are caught. The subscription is reliable when every publisher offers it,
    best effort otherwise (a reliable subscription would not match a best-effort publisher).
    """

    def __init__(self, node: Node, out_path: str | Path, topics: Iterable[str], storage: str = 'mcap',
                 depth: int = 100, known_types: dict[str, str] | None = None) -> None:
        out_path = Path(out_path)
        if out_path.exists():
            raise BadInputError(f'record path {str(out_path)!r} exists already')
        if storage not in ('mcap', 'sqlite3'):
            raise BadInputError(f'storage {storage!r} is not mcap or sqlite3')
        self.node, self.depth = node, depth
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        plugin, version = (StoragePlugin.MCAP, 9) if storage == 'mcap' else (StoragePlugin.SQLITE3, 8)
        self.writer = Writer(out_path, version=version, storage_plugin=plugin)
        self.writer.open()
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.types: dict[str, str] = {}
        self.pending: list[str] = []
        self.topics: list[str] = []  # every topic recorded (the names, without ':TYPE')
        for item in topics:
            topic, _, type_name = item.partition(':')
            type_name = type_name or (known_types or {}).get(topic, '')
            self.topics.append(topic)
            self.pending.append(topic)
            if type_name:
                self.types[topic] = type_name
        self.subscriptions = {}
        self.connections = {}
        self.closed = False
        self._subscribe_ready()
        self.timer = node.create_timer(0.2, self._subscribe_ready) if self.pending else None

    def _graph_type(self, topic: str) -> str | None:
        for name, types in self.node.get_topic_names_and_types():
            if name == topic and types:
                return types[0]
        return None

    def _qos_for(self, topic: str) -> QoSProfile | None:
        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        return qos_from_name('reliable' if reliable else 'best_effort', self.depth)

    def _subscribe_ready(self) -> None:
        if self.closed:
            return
        for topic in list(self.pending):
            type_name = self.types.get(topic) or self._graph_type(topic)
            qos = self._qos_for(topic)
            if type_name is None or qos is None:
                continue  # no publisher yet: try again on the next tick
            with self.lock:
                self.connections[topic] = self.writer.add_connection(topic, type_name, typestore=self.typestore)
            self.subscriptions[topic] = self.node.create_subscription(
                message_class(type_name), topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True)
            self.pending.remove(topic)
        if not self.pending and getattr(self, 'timer', None) is not None:
            self.timer.cancel()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once every recorded topic is subscribed and matched to a publisher; False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.pending and all(publisher_count(self.node, s) > 0
                                         for s in self.subscriptions.values()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _on_message(self, topic: str, raw: bytes) -> None:
        stamp = self.node.get_clock().now().nanoseconds
        with self.lock:
            if not self.closed:
                self.writer.write(self.connections[topic], stamp, raw)
                self.counts[topic] += 1

    def close(self) -> None:
        """Stop recording and finish the bag (metadata.yaml is written here)."""
        if self.timer is not None:
            self.timer.cancel()
            self.node.destroy_timer(self.timer)
        for subscription in self.subscriptions.values():
            self.node.destroy_subscription(subscription)
        with self.lock:
            self.closed = True
            self.writer.close()
