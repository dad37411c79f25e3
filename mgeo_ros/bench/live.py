"""`mgeo bench --node --live SECONDS`: the real node under a live stream, per `intra_op_threads` value.

The node runs as its own process (`python -m mgeo_ros.ros.node`, the real model and backend, the node's defaults
plus the given parameters); this process plays the camera (rgb8 Image + CameraInfo at `rate` Hz, stamped when
sent) and subscribes to every output the node publishes. Reported per threads value: the published rate and the
latency image sent -> depth received (median, p95, max), against the forward-bound maximum rate 1000 / (median
forward ms) taken from the node's own /diagnostics.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from mgeo_ros.bench.node import bench_intrinsics, camera_image, ros_env
from mgeo_ros.bench.sink import message_type
from mgeo_ros.errors import MgeoError
from mgeo_ros.ros import convert
from mgeo_ros.ros.node import NODE_NAME
from mgeo_ros.ros.outputs import BY_NAME, COMPRESSED
from mgeo_ros.ros.spin_thread import SpinThread, interrupt

COMPRESSED_TOPICS = tuple('/' + BY_NAME[name].topic for name in sorted(COMPRESSED))


class Camera:
    """This process's side: camera publishers, output subscriptions (depth arrivals by stamp), the node's status."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._ros = SpinThread(f'mgeo_live_bench_{os.getpid()}')
        self.node = self._ros.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f'{ns}/cam/image_raw', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, f'{ns}/cam/camera_info', reliable)
        self.lock = threading.Lock()
        self.arrivals: dict[tuple[int, int], float] = {}
        self.status: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, QoSProfile(depth=20))
        self.subs = []
        self._ros.start()

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.ns + '/'):
                with self.lock:
                    self.status = {kv.key: kv.value for kv in status.values}

    def _on_depth(self, msg) -> None:
        now = time.monotonic()
        with self.lock:
            self.arrivals[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = now

    def subscribe_outputs(self, timeout: float) -> list[str]:
        """Subscribe to every topic the node publishes under its namespace, once it has them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = self.node.get_publisher_names_and_types_by_node(NODE_NAME, self.ns)
            except Exception:  # rclpy raises NodeNameNonExistentError until discovery has seen the node
                found = []
            # every output but the compressed forms (a client takes those instead of the raw ones)
            topics = sorted((t, ty[0]) for t, ty in found if t.startswith(self.ns + '/') and '/cam/' not in t
                            and not t.endswith(COMPRESSED_TOPICS))
            if any(t.endswith('/depth/image') for t, _ in topics) and self.status.get('model_status') == 'ready':
                break
            if self.status.get('model_status') == 'error':
                raise MgeoError(f'the node could not load its model: {self.status}')
            time.sleep(0.2)
        else:
            raise MgeoError(f'the node was not ready after {timeout:.0f} s (status {self.status})')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic, type_name in topics:
            if topic.endswith('/depth/image'):
                self.subs.append(self.node.create_subscription(Image, topic, self._on_depth, qos))
            else:  # the bytes are enough: a subscriber, not a deserialization benchmark
                self.subs.append(self.node.create_subscription(message_type(type_name), topic, lambda _m: None, qos,
                                                               raw=True))
        return [t for t, _ in topics]

    def publish(self, image: Image, info: CameraInfo) -> tuple[int, int]:
        stamp = self.node.get_clock().now().to_msg()
        image.header.stamp = info.header.stamp = stamp
        self.info_pub.publish(info)
        self.image_pub.publish(image)
        return stamp.sec, stamp.nanosec

    def close(self) -> None:
        self._ros.close()


def _stream(camera: Camera, frames, info, rate: float, seconds: float) -> dict:
    sent: dict[tuple[int, int], float] = {}
    next_at = time.monotonic()
    for i in range(int(rate * seconds)):
        key = camera.publish(frames[i % len(frames)], info)
        sent[key] = time.monotonic()
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def _float(status: dict, key: str) -> float:
    try:
        return float(status[key])
    except (KeyError, ValueError):
        return float('nan')


def start_node(ns: str, params: dict, lifecycle: bool = False):
    """`python -m mgeo_ros.ros.node` in namespace `ns` (camera topics `ns`/cam/...) with `params` (`lifecycle`: the
    managed node, unconfigured); (process, log file)."""
    cmd = [sys.executable, '-m', 'mgeo_ros.ros.node', *(['--lifecycle'] if lifecycle else []), '--ros-args',
           '-r', f'__ns:={ns}',
           '-r', f'image:={ns}/cam/image_raw', '-r', f'camera_info:={ns}/cam/camera_info']
    for k, v in {'diagnostics_period': 0.5, **params}.items():
        cmd += ['-p', f'{k}:={str(v).lower() if isinstance(v, bool) else v}']
    log = tempfile.NamedTemporaryFile('w', prefix='mgeo_live_node_', suffix='.log', delete=False)  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)), log


def stop_node(proc, log) -> None:
    """Ctrl-C, as a terminal would (killed after 15 s), then close its log."""
    interrupt(proc, 15)
    log.close()


def camera_frames(width: int, height: int) -> tuple[list, object]:
    """Four rgb8 Images of the bench's camera and its CameraInfo."""
    header = Header(frame_id='camera_optical')
    frames = [convert.numpy_to_image(camera_image(width, height, s), 'rgb8', header) for s in range(4)]
    return frames, convert.intrinsics_to_camera_info(bench_intrinsics(width, height), header)


def measure(model: str, size: tuple[int, int], rate: float, seconds: float, threads: int, backend: str,
            params: dict) -> dict:
    """One node process at one threads value."""
    width, height = size
    ns = f'/mgeo_live_{os.getpid()}_{threads}'
    proc, log = start_node(ns, {'model': model, 'backend': backend, 'intra_op_threads': threads, **params})
    camera = Camera(ns)
    try:
        topics = camera.subscribe_outputs(timeout=300)
        frames, info = camera_frames(width, height)
        time.sleep(1.0)
        _stream(camera, frames, info, rate, min(3.0, seconds))  # warm-up: first-frame allocations, discovery
        time.sleep(1.0)
        before = dict(camera.status)
        sent = _stream(camera, frames, info, rate, seconds)
        time.sleep(2.0)  # the frame in flight, the waiting one, and a status after them
        after = dict(camera.status)
        with camera.lock:
            got = {k: camera.arrivals[k] - t for k, t in sent.items() if k in camera.arrivals}
    finally:
        camera.close()
        stop_node(proc, log)
    lat = np.array(sorted(got.values())) * 1e3
    forward = _float(after, 'latency_ms.forward.median')

    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))
    return {'intra_op_threads': threads, 'backend': after.get('backend', backend), 'input_hz': rate,
            'seconds': seconds, 'sent': len(sent), 'published': len(got), 'published_hz': len(got) / seconds,
            'dropped_newest_wins': delta('frames_dropped'), 'lost_before_node': delta('frames_lost_before_node'),
            'latency_ms': {'median': float(np.median(lat)), 'p95': float(np.percentile(lat, 95, method='higher')),
                           'max': float(lat.max())} if lat.size else None,
            'forward_ms': {'median': forward, 'p95': _float(after, 'latency_ms.forward.p95')},
            'forward_bound_hz': 1000.0 / forward if forward > 0 else float('nan'),
            'stages_ms_median': {k.split('.')[1]: float(v) for k, v in after.items()
                                 if k.startswith('latency_ms.') and k.endswith('.median')},
            'topics': topics, 'node_log': log.name}


def run_live(model, label: str, size: tuple[int, int], rate: float, seconds: float, threads: list[int],
             backend: str, params: dict) -> dict:
    """Every threads value in turn (one node process each)."""
    if not isinstance(model, (str, os.PathLike)):
        raise MgeoError('--live runs the node as a process: give a model file or directory, not a preset')
    ros_env()
    rows = [measure(str(model), size, rate, seconds, t, backend, params) for t in threads]
    from mgeo_ros.runtime.devices import default_intra_op_threads

    return {'meta': {'model': label, 'size': f'{size[0]}x{size[1]}', 'cpu_count': os.cpu_count(),
                     'default_threads': default_intra_op_threads(), 'load_avg': list(os.getloadavg())},
            'rows': rows}


def format_live_table(report: dict) -> str:
    m = report['meta']
    head = (f"{'threads':>8} {'input Hz':>8} {'published Hz':>12} {'forward-bound Hz':>16} {'forward ms med/p95':>19} "
            f"{'latency ms med/p95/max':>23} {'dropped':>7}")
    lines = [f"mgeo bench --node --live: the node as a process, {m['model']} model, {m['size']} rgb8 + CameraInfo, "
             'every output subscribed; latency = image sent -> depth received', head, '-' * len(head)]
    for r in report['rows']:
        lat = r['latency_ms'] or {'median': float('nan'), 'p95': float('nan'), 'max': float('nan')}
        t = r['intra_op_threads']
        label = f"{t}" if t else f"auto={m['default_threads']}"
        lines.append(f"{label:>8} {r['input_hz']:8.1f} {r['published_hz']:12.2f} {r['forward_bound_hz']:16.2f} "
                     f"{r['forward_ms']['median']:9.0f}/{r['forward_ms']['p95']:<9.0f} "
                     f"{lat['median']:7.0f}/{lat['p95']:6.0f}/{lat['max']:<8.0f} {r['dropped_newest_wins']:7d}")
    lines.append(f"backend {report['rows'][0]['backend'] if report['rows'] else '-'}; {m['cpu_count']} cpu, load "
                 f"average {m['load_avg'][0]:.1f} at the end; forward-bound Hz = 1000 / median forward ms (from the "
                 "node's /diagnostics)")
    return '\n'.join(lines)
