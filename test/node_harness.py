"""Test helpers for mgeo_depth_node: start it as a subprocess, feed it from this process, collect its outputs.

Not a test module (no test_ prefix); imported by test/test_node_*.py and by the node measurement script.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def node_command() -> list[str]:
    """The console script of this interpreter's environment when installed there, else the module run by this same
    interpreter. Never a script found on PATH: under the Jazzy job (torch-free venv) that could be the dev venv's
    node, and the job would then test the wrong ROS and a node that has torch."""
    script = Path(sys.executable).with_name('mgeo_depth_node')
    return [str(script)] if script.exists() else [sys.executable, '-m', 'mgeo_ros.ros.node']


def no_torch_env(tmp_path) -> dict:
    """os.environ plus a `torch` package that refuses to import, first on the path."""
    shim = tmp_path / 'no_torch'
    (shim / 'torch').mkdir(parents=True)
    (shim / 'torch' / '__init__.py').write_text(
        "raise ImportError('torch is blocked: the ONNX Runtime node must run without it')\n")
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(shim)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


def start_node(ns: str, params: dict, env: dict | None = None, log_path: Path | None = None,
               extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """mgeo_depth_node in namespace `ns`, camera topics remapped to `ns`/cam/..., with -p overrides."""
    args = node_command() + list(extra_args) + ['--ros-args', '-r', f'__ns:={ns}', '-r', f'image:={ns}/cam/image_raw',
                             '-r', f'camera_info:={ns}/cam/camera_info']
    return _spawn(args, params, env, log_path)


def _spawn(args: list[str], params: dict, env: dict | None, log_path: Path | None) -> subprocess.Popen:
    """Start `args` plus one `-p key:=value` per parameter (bools as ROS spells them), output to `log_path`."""
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args = args + ['-p', f'{key}:={text}']
    out = open(log_path, 'w') if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed by the OS with the child)
    return subprocess.Popen(args, env=env if env is not None else dict(os.environ), stdout=out,
                            stderr=subprocess.STDOUT, cwd=str(REPO))


def stop_node(proc: subprocess.Popen) -> int | None:
    from mgeo_ros.ros.spin_thread import interrupt

    return interrupt(proc, 10)


@contextmanager
def serving(proc: subprocess.Popen, harness, log: Path, tail: int = 3000) -> Iterator[tuple]:
    """A module fixture's life of one node: yields (harness, proc, log); at the end closes the harness, stops the
    node, prints its log tail and asserts the node exited 0 on SIGINT."""
    try:
        yield harness, proc, log
    finally:
        harness.close()
        code = stop_node(proc)
        print(f'\nnode log ({log}):\n' + log.read_text()[-tail:])
        assert code == 0, f'the node exited with {code} on SIGINT'


@contextmanager
def node_in_process(*ros_args: str) -> Iterator:
    """MgeoDepthNode in this process on its own rclpy context, started with `--ros-args *ros_args`; shut down at the
    end (for checks of how it reads parameter files, without a subprocess)."""
    import rclpy

    from mgeo_ros.ros.node import MgeoDepthNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = MgeoDepthNode(context=context, cli_args=['--ros-args', *ros_args])
    try:
        yield node
    finally:
        node.shutdown()
        node.destroy_node()
        context.try_shutdown()


@contextmanager
def spun_with_helper(node, name: str) -> Iterator:
    """A helper node (for publishers, subscriptions and clients) in the in-process node's context, both spun by one
    executor on a daemon thread; the executor stops and the helper goes at the end."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    helper = rclpy.create_node(name, context=node.context)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.add_node(helper)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield helper
    finally:
        executor.shutdown()
        helper.destroy_node()


def settled_model_status(node, timeout: float = 10.0) -> str:
    """The in-process node's model status once it has stopped 'loading' (or after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while node.stats.model_status == 'loading' and time.monotonic() < deadline:
        time.sleep(0.05)
    return node.stats.model_status


@contextmanager
def launched(launch_file: Path, arguments: dict[str, str], probe_name: str) -> Iterator:
    """`launch_file` run with `arguments` by a LaunchService in a thread (needs launch_ros); yields a probe rclpy node
    to look at the graph with; the launch is shut down at the end."""
    import rclpy
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    import launch

    include = launch.actions.IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)),
                                                      launch_arguments=arguments.items())
    service = launch.LaunchService()
    service.include_launch_description(launch.LaunchDescription([include]))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node(probe_name, context=context)
    try:
        yield probe
    finally:
        service.shutdown()
        thread.join(20)
        probe.destroy_node()
        context.try_shutdown()


def camera_intrinsics(width: int = 160, height: int = 120):
    """The single-camera tests' camera (160 x 120, slightly non-square pixels, off-centre principal point)."""
    from mgeo_ros.geometry import Intrinsics

    return Intrinsics(fx=140.0, fy=138.0, cx=81.0, cy=58.5, width=width, height=height)


def smooth_rgb(width: int, height: int, seed: int = 0, box: tuple[slice, slice] | None = None) -> np.ndarray:
    """A smooth colourful pattern plus mild noise (compresses losslessly and gives the model something non-constant);
    `box` (rows, cols) is painted red before the noise: an object for the model to put an edge around."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    if box is not None:
        base[box] = (250, 20, 20)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class NodeHarness:
    """A test-side rclpy node spinning in a thread: camera publishers and output collectors (keyed by stamp)."""

    OUTPUTS = ('depth/image', 'depth/camera_info', 'points', 'depth/mask')

    def __init__(self, ns: str, name: str = 'node_harness', outputs: tuple[str, ...] | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        from mgeo_ros.ros.spin_thread import SpinThread

        self.ns = ns
        if outputs is not None:
            self.OUTPUTS = tuple(outputs)
        self._ros = SpinThread(f'{name}_{os.getpid()}')
        self.node = self._ros.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f'{ns}/cam/image_raw', reliable)
        self.compressed_pub = self.node.create_publisher(CompressedImage, f'{ns}/cam/image_raw/compressed', reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, f'{ns}/cam/camera_info', reliable)
        self.lock = threading.Lock()
        self.received: dict[str, dict] = defaultdict(dict)  # topic -> stamp -> msg
        self.arrival: dict[str, dict] = defaultdict(dict)  # topic -> stamp -> monotonic time
        self.diagnostics: list = []
        self._types = {'depth/image': Image, 'depth/camera_info': CameraInfo, 'points': PointCloud2,
                       'depth/mask': Image, 'depth/confidence': Image, 'depth/normals': Image,
                       'depth/image/compressedDepth': CompressedImage, 'depth/mask/compressed': CompressedImage}
        self.subs = [self._subscription(t) for t in self.OUTPUTS]
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, QoSProfile(depth=50))
        self._ros.start()

    def _collector(self, topic: str):
        def store(msg) -> None:
            now = time.monotonic()
            key = stamp_key(msg.header)
            with self.lock:
                self.received[topic][key] = msg
                self.arrival[topic][key] = now
        return store

    def _subscription(self, topic: str):
        from rclpy.qos import QoSProfile

        return self.node.create_subscription(self._types[topic], f'{self.ns}/{topic}', self._collector(topic),
                                             QoSProfile(depth=100))

    def subscribe(self, topic: str) -> None:
        """Start collecting one more output; wait_outputs and wait_ready include it from here on."""
        self.OUTPUTS = (*self.OUTPUTS, topic)
        self.subs.append(self._subscription(topic))

    def unsubscribe(self, topic: str) -> None:
        """Stop collecting an output (the node sees no subscriber to it any more, once discovery has told it)."""
        index = self.OUTPUTS.index(topic)
        self.OUTPUTS = self.OUTPUTS[:index] + self.OUTPUTS[index + 1:]
        self.node.destroy_subscription(self.subs.pop(index))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.ns + '/'):
                with self.lock:
                    self.diagnostics.append((time.monotonic(), status))

    def latest_diagnostics(self, after: float | None = None) -> dict[str, str]:
        """Values of the newest status (received after monotonic time `after`, if given; else {})."""
        with self.lock:
            if not self.diagnostics or (after is not None and self.diagnostics[-1][0] <= after):
                return {}
            status = self.diagnostics[-1][1]
        values = {kv.key: kv.value for kv in status.values}
        values['_level'] = status.level[0] if isinstance(status.level, bytes) else int(status.level)
        values['_message'] = status.message
        return values

    def wait_for(self, predicate, timeout: float, period: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period)
        return bool(predicate())

    def wait_ready(self, proc, timeout: float = 60.0, compressed: bool = False) -> None:
        """Until the node reports its model ready and is connected to every publisher and collector."""
        pub = self.compressed_pub if compressed else self.image_pub

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited with {proc.returncode}')
            diag = self.latest_diagnostics()
            if diag.get('model_status') == 'error':
                raise RuntimeError(f'the node could not load its model: {diag.get("_message")}')
            return (diag.get('model_status') == 'ready' and pub.get_subscription_count() > 0
                    and self.info_pub.get_subscription_count() > 0
                    and all(s.get_publisher_count() > 0 for s in self.subs))
        if not self.wait_for(ready, timeout):
            raise TimeoutError(f'node not ready after {timeout} s; diagnostics: {self.latest_diagnostics()}')
        time.sleep(0.5)  # let the node's side of discovery see our subscriptions too

    def publish(self, rgb: np.ndarray, key: tuple[int, int], frame_id: str = 'cam_optical', intrinsics=None,
                compressed: bool = False, encoding: str = 'rgb8') -> None:
        from std_msgs.msg import Header

        from mgeo_ros.ros import convert

        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = key
        if intrinsics is not None:
            self.info_pub.publish(convert.intrinsics_to_camera_info(intrinsics, header))
        if compressed:
            self.compressed_pub.publish(convert.rgb8_to_compressed(rgb, header, fmt='png'))
        else:
            self.image_pub.publish(convert.numpy_to_image(rgb, encoding, header))

    def outputs_for(self, key) -> dict:
        with self.lock:
            return {t: self.received[t].get(key) for t in self.OUTPUTS}

    def wait_outputs(self, key, timeout: float = 30.0, topics=None) -> dict:
        topics = self.OUTPUTS if topics is None else topics
        assert self.wait_for(lambda: all(self.outputs_for(key)[t] is not None for t in topics), timeout), \
            f'outputs for stamp {key} missing: {[t for t, m in self.outputs_for(key).items() if m is None]}'
        return self.outputs_for(key)

    def set_parameters(self, node_name: str, values: dict, timeout: float = 10.0):
        """Call <node>/set_parameters (the standard service) and return the list of SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f'{self.ns}/{node_name}/set_parameters')
        try:
            assert client.wait_for_service(timeout_sec=timeout), 'set_parameters service not available'
            request = SetParameters.Request(
                parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
            future = client.call_async(request)
            assert self.wait_for(future.done, timeout), 'set_parameters timed out'
            return future.result().results
        finally:
            self.node.destroy_client(client)

    def change_state(self, node_name: str, transition_id: int, timeout: float = 30.0) -> bool:
        """Call <node>/change_state (lifecycle) and return whether the transition succeeded."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.node.create_client(ChangeState, f'{self.ns}/{node_name}/change_state')
        try:
            assert client.wait_for_service(timeout_sec=timeout), 'change_state service not available'
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
            assert self.wait_for(future.done, timeout), 'change_state timed out'
            return future.result().success
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._ros.close()


def start_multi_node(ns: str, cameras: list[str], params: dict, env: dict | None = None,
                     log_path: Path | None = None) -> subprocess.Popen:
    """One mgeo_depth_node serving `cameras`; each camera's inputs remapped to `ns`/<camera>/cam/..."""
    args = node_command() + ['--ros-args', '-r', f'__ns:={ns}', '-p', f'cameras:=[{",".join(cameras)}]']
    for cam in cameras:
        args += ['-r', f'{cam}/image:={ns}/{cam}/cam/image_raw', '-r', f'{cam}/camera_info:={ns}/{cam}/cam/camera_info']
    return _spawn(args, params, env, log_path)


class MultiCameraHarness:
    """Like NodeHarness for a node serving several cameras: per camera an image and camera_info publisher and a
    collector for each output under <ns>/<camera>/...; diagnostics by status name."""

    OUTPUTS = NodeHarness.OUTPUTS + ('depth/confidence', 'depth/normals')  # every output of every camera
    set_parameters = NodeHarness.set_parameters  # the node's standard service, as for one camera

    def __init__(self, ns: str, cameras: list[str], name: str = 'multi_harness',
                 outputs: tuple[str, ...] | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from mgeo_ros.ros.spin_thread import SpinThread

        self.ns, self.cameras = ns, list(cameras)
        if outputs is not None:
            self.OUTPUTS = tuple(outputs)
        self._ros = SpinThread(f'{name}_{os.getpid()}')
        self.node = self._ros.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {'depth/image': Image, 'depth/camera_info': CameraInfo, 'points': PointCloud2, 'depth/mask': Image,
                 'depth/confidence': Image, 'depth/normals': Image}
        self.image_pubs, self.info_pubs, self.subs = {}, {}, []
        self.lock = threading.Lock()
        self.received: dict[tuple[str, str], dict] = defaultdict(dict)  # (camera, topic) -> stamp -> msg
        self.arrival: dict[tuple[str, str], dict] = defaultdict(dict)
        self.statuses: dict[str, tuple[float, object]] = {}  # status name -> (monotonic, status)
        for cam in self.cameras:
            self.image_pubs[cam] = self.node.create_publisher(Image, f'{ns}/{cam}/cam/image_raw', reliable)
            self.info_pubs[cam] = self.node.create_publisher(CameraInfo, f'{ns}/{cam}/cam/camera_info', reliable)
            self.subs += [self.node.create_subscription(types[t], f'{ns}/{cam}/{t}', self._collector(cam, t),
                                                        QoSProfile(depth=100)) for t in self.OUTPUTS]
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, QoSProfile(depth=50))
        self._ros.start()

    def _collector(self, cam: str, topic: str):
        def store(msg) -> None:
            now = time.monotonic()
            key = stamp_key(msg.header)
            with self.lock:
                self.received[(cam, topic)][key] = msg
                self.arrival[(cam, topic)][key] = now
        return store

    def _on_diag(self, msg) -> None:
        now = time.monotonic()
        with self.lock:
            for status in msg.status:
                if status.name.startswith(self.ns + '/'):
                    self.statuses[status.name] = (now, status)

    def status(self, suffix: str) -> dict[str, str]:
        """Values of the newest status whose name ends with `suffix` (e.g. 'front depth', 'model'); {} if none."""
        with self.lock:
            found = [s for name, (_, s) in self.statuses.items() if name.endswith(': ' + suffix)]
        if not found:
            return {}
        values = {kv.key: kv.value for kv in found[0].values}
        values['_level'] = found[0].level[0] if isinstance(found[0].level, bytes) else int(found[0].level)
        values['_message'] = found[0].message
        return values

    def status_names(self) -> set[str]:
        with self.lock:
            return set(self.statuses)

    wait_for = NodeHarness.wait_for

    def wait_ready(self, proc, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited with {proc.returncode}')
            model = self.status('model')
            if model.get('model_status') == 'error':
                raise RuntimeError(f'the node could not load its model: {model.get("_message")}')
            return (model.get('model_status') == 'ready'
                    and all(p.get_subscription_count() > 0 for p in self.image_pubs.values())
                    and all(p.get_subscription_count() > 0 for p in self.info_pubs.values())
                    and all(s.get_publisher_count() > 0 for s in self.subs))
        if not self.wait_for(ready, timeout):
            raise TimeoutError(f'node not ready after {timeout} s; model status: {self.status("model")}')
        time.sleep(0.5)

    def publish(self, cam: str, rgb: np.ndarray, key: tuple[int, int], frame_id: str, intrinsics=None) -> None:
        from std_msgs.msg import Header

        from mgeo_ros.ros import convert

        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = key
        if intrinsics is not None:
            self.info_pubs[cam].publish(convert.intrinsics_to_camera_info(intrinsics, header))
        self.image_pubs[cam].publish(convert.numpy_to_image(rgb, 'rgb8', header))

    def outputs_for(self, cam: str, key) -> dict:
        with self.lock:
            return {t: self.received[(cam, t)].get(key) for t in self.OUTPUTS}

    def wait_outputs(self, cam: str, key, timeout: float = 60.0) -> dict:
        assert self.wait_for(lambda: all(m is not None for m in self.outputs_for(cam, key).values()), timeout), \
            f'{cam}: outputs for stamp {key} missing: {[t for t, m in self.outputs_for(cam, key).items() if m is None]}'
        return self.outputs_for(cam, key)

    def count(self, cam: str, topic: str = 'depth/image', after: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t in self.arrival[(cam, topic)].values() if t >= after)

    def close(self) -> None:
        self._ros.close()
