"""mgeo_depth_node: one camera in; metric depth, its camera_info, a point cloud, a validity mask and diagnostics out.

Threads: the executor thread only stores incoming messages (the newest image replaces a waiting one, see
`FrameSlot`); one worker thread decodes, runs the model and publishes. Every output carries the input header.
Run: `mgeo_depth_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info -p model:=...`
or `python -m mgeo_ros.ros.node --ros-args ...`.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mgeo_ros.ros import params as P
from mgeo_ros.ros.compat import with_message_info
from mgeo_ros.ros.diagnostics import NodeStats, ThrottledLog, to_diagnostic_status
from mgeo_ros.ros.frame_slot import FrameSlot, SequenceGaps
from mgeo_ros.ros.pipeline import FramePipeline, IncomingFrame
from mgeo_ros.ros.qos import make_qos

NODE_NAME = 'mgeo_depth_node'
INPUT_TOPICS = ('image', 'camera_info')  # relative: remap them (image/compressed follows image)
OUTPUT_TOPICS = ('depth/image', 'depth/camera_info', 'points', 'depth/mask', 'depth/confidence', 'depth/normals')
STOP_WAIT_S = 0.2  # how long shutdown waits for the worker to leave on its own
_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass
class Outputs:
    """The node's publishers (names relative, so namespaces and remaps apply)."""

    depth: object
    info: object
    points: object
    mask: object
    confidence: object
    normals: object

    def all(self) -> tuple:
        return (self.depth, self.info, self.points, self.mask, self.confidence, self.normals)


def _descriptor(spec: P.ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.kind], description=spec.describe())
    if spec.choices:
        d.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    # rclpy does not check the type: params.validate does, and its refusal names the parameter and the type it wants
    # (rclpy's own says "Wrong parameter type, expected 'Type.INTEGER' got 'Type.DOUBLE'"). Floats also accept
    # integers (`-p max_depth:=5`); the node coerces them.
    d.dynamic_typing = True
    if spec.kind is int and spec.min is not None and spec.max is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    if spec.kind is float and spec.min is not None and spec.max is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


class _DepthNodeParts:
    """The node's building blocks, shared by the plain node (all at start) and the lifecycle node (per transition)."""

    def _init_common(self, lifecycle: bool) -> None:
        self.stats = NodeStats()
        self.stats.model_status = 'unconfigured' if lifecycle else 'loading'
        self.cfg = self._declare_parameters()
        self._log_bad = ThrottledLog(self.get_logger().warning, self.cfg['log_throttle'])
        self.slot: FrameSlot[IncomingFrame] = FrameSlot()
        self.pipeline: FramePipeline | None = None
        self.outputs: Outputs | None = None
        self._worker: threading.Thread | None = None
        self._image_sub = self._info_sub = None
        self._gaps = SequenceGaps()
        self._info_lock = threading.Lock()
        self._infos: collections.OrderedDict = collections.OrderedDict()  # (sec, nanosec) -> CameraInfo, newest last
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', QoSProfile(depth=10))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(self.cfg['diagnostics_period'], self._publish_diagnostics)

    def _create_outputs(self) -> None:
        out_qos = make_qos(self.cfg['output_qos'], self.cfg['output_qos_depth'])
        self.outputs = Outputs(
            depth=self.create_publisher(Image, 'depth/image', out_qos),
            info=self.create_publisher(CameraInfo, 'depth/camera_info', out_qos),
            points=self.create_publisher(PointCloud2, 'points', out_qos),
            mask=self.create_publisher(Image, 'depth/mask', out_qos),
            confidence=self.create_publisher(Image, 'depth/confidence', out_qos),
            normals=self.create_publisher(Image, 'depth/normals', out_qos),
        )
        self.pipeline = FramePipeline(self, self.stats, self.outputs, self._log_bad)

    def _destroy_outputs(self) -> None:
        if self.outputs is not None:
            for pub in self.outputs.all():
                self.destroy_publisher(pub)
        self.outputs = self.pipeline = None

    def _create_inputs(self) -> None:
        in_qos = make_qos(self.cfg['input_qos'], self.cfg['input_qos_depth'])
        if self.cfg['image_transport'] == 'compressed':
            # Like image_transport: <resolved image topic>/compressed, so `-r image:=/cam/image_raw` is enough.
            topic = self.resolve_topic_name('image') + '/compressed'
            self._image_sub = self.create_subscription(CompressedImage, topic, with_message_info(self._on_compressed),
                                                       in_qos)
        else:
            self._image_sub = self.create_subscription(Image, 'image', with_message_info(self._on_image), in_qos)
        self._info_sub = self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, in_qos)
        self.stats.active = True
        self.get_logger().info(
            f'listening on {self._image_sub.topic_name} ({self.cfg["image_transport"]}, {self.cfg["input_qos"]}) and '
            f'{self._info_sub.topic_name}; publishing {", ".join(OUTPUT_TOPICS)} '
            f'({self.cfg["output_qos"]}, depth {self.cfg["output_qos_depth"]})')

    def _destroy_inputs(self) -> None:
        for sub in (self._image_sub, self._info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._image_sub = self._info_sub = None
        self.stats.active = False

    def _start_worker(self, load_model: bool) -> None:
        self.slot = FrameSlot()
        self._worker = threading.Thread(target=self._work, args=(load_model,), name='mgeo_inference', daemon=True)
        self._worker.start()

    def _stop_worker(self) -> None:
        """Close the slot and give the worker a moment to leave. A frame in the backend (or a model still loading)
        is a native call that cannot be interrupted: it is not waited for (see `main`); it ends without publishing."""
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout=STOP_WAIT_S)
        self._worker = None

    # ---- parameters ---------------------------------------------------------------------------------------------
    def _declare_parameters(self) -> dict:
        cfg = {}
        for spec in P.PARAMS:
            try:
                value = self.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
            except Exception as exc:  # wrong type given at start: keep running on the default, say why
                self.get_logger().error(f'parameter {spec.name}: {exc}; using the default {spec.default!r}')
                value = self.declare_parameter(spec.name, spec.default, _descriptor(spec), ignore_override=True).value
            value = P.coerce(spec.name, value)
            reason = P.validate(spec.name, value)
            if reason is not None:
                self.get_logger().error(f'invalid start value: {reason}; using the default {spec.default!r}')
                value = spec.default
                self.set_parameters([rclpy.parameter.Parameter(spec.name, value=value)])
            cfg[spec.name] = value
        return cfg

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """Validate every change first (all or nothing); safe ones apply at once, the others are refused."""
        updates = {}
        for p in changes:
            if p.name not in P.SPECS:  # rclpy's own (use_sim_time, qos_overrides...): rclpy handles them
                continue
            value = P.coerce(p.name, p.value)
            reason = P.check_change(p.name, self.cfg.get(p.name), value)
            if reason is not None:
                self.get_logger().warning(f'parameter change refused: {reason}')
                return SetParametersResult(successful=False, reason=reason)
            updates[p.name] = value
        if self.cfg:  # empty while declaring: the initial values are handled by _declare_parameters
            self.cfg = {**self.cfg, **updates}  # one atomic swap: the worker sees all or none of the changes
            self._log_bad.period = self.cfg['log_throttle']
            if self.pipeline is not None:
                self.pipeline.on_config_changed(updates)
            if updates:
                applied = ', '.join(f'{k}={v!r}' for k, v in updates.items())
                self.get_logger().info(f'parameters applied live: {applied}')
        return SetParametersResult(successful=True)

    # ---- callbacks (executor thread: keep them O(1)) ----------------------------------------------------------------
    def _on_image(self, msg: Image, info: dict) -> None:
        self._enqueue(IncomingFrame('raw', msg, time.monotonic(), self.camera_info_for), info)

    def _on_compressed(self, msg: CompressedImage, info: dict) -> None:
        self._enqueue(IncomingFrame('compressed', msg, time.monotonic(), self.camera_info_for), info)

    def _enqueue(self, frame: IncomingFrame, info: dict) -> None:
        replaced = self.slot.put(frame)
        gid = info.get('publisher_gid') or {}
        publisher = bytes(gid.get('data', b'')) if isinstance(gid, dict) else gid
        with self.stats.lock:
            self.stats.received += 1
            if replaced is not None:
                self.stats.dropped += 1
            self.stats.lost_before_node += self._gaps.observe(publisher, info.get('publication_sequence_number'))
            sent, got = info.get('source_timestamp'), info.get('received_timestamp')
            if sent and got:
                self.stats.timings.add('transport', (got - sent) / 1e6)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._info_lock:
            self._infos.pop(key, None)
            self._infos[key] = msg
            while len(self._infos) > 8:
                self._infos.popitem(last=False)

    def camera_info_for(self, header) -> CameraInfo | None:
        """The CameraInfo with the image's stamp if one arrived, else the latest (asked when the frame is processed,
        so an info that arrives just after its image is still used)."""
        with self._info_lock:
            if not self._infos:
                return None
            exact = self._infos.get((header.stamp.sec, header.stamp.nanosec))
            return exact if exact is not None else next(reversed(self._infos.values()))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        last_frame = self.pipeline.last_frame_id if self.pipeline is not None else ''
        hardware = self.cfg['frame_id'] or last_frame or 'camera'
        msg.status = [to_diagnostic_status(self.stats, f'{self.get_fully_qualified_name()}: depth', hardware)]
        self._diag_pub.publish(msg)

    # ---- worker thread ------------------------------------------------------------------------------------------
    def _work(self, load_model: bool) -> None:
        pipeline, slot = self.pipeline, self.slot
        if load_model:
            pipeline.load_model(self.cfg)
        while not slot.closed:
            frame = slot.take(timeout=0.2)
            if frame is None:
                continue
            try:
                pipeline.process(frame, self.cfg)
            except Exception as exc:  # a bug or an unforeseen input must not kill the node: count it, say it
                if slot.closed:  # stopped under this frame (publishers or context gone): nothing to report
                    return
                self.stats.count_bad('internal_error')
                self._log_bad('internal_error', f'frame skipped after an unexpected error: {type(exc).__name__}: {exc}')

    def shutdown(self) -> None:
        """Stop the worker before the node goes away."""
        self._stop_worker()


class MgeoDepthNode(_DepthNodeParts, Node):
    """The depth node, running from the start; see the module docstring and README section "node"."""

    def __init__(self, **kwargs) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self._init_common(lifecycle=False)
        self._create_outputs()
        self._create_inputs()
        self._start_worker(load_model=True)


class MgeoDepthLifecycleNode(_DepthNodeParts, LifecycleNode):
    """The same node as a managed (lifecycle) node: configure loads the model (and fails with the reason if it
    cannot), activate subscribes, deactivate unsubscribes (nothing is computed), cleanup frees the model."""

    def __init__(self, **kwargs) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._init_common(lifecycle=True)

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self._create_outputs()
        self.pipeline.load_model(self.cfg)
        if self.stats.model_status != 'ready':
            self._destroy_outputs()
            return TransitionCallbackReturn.FAILURE
        self._start_worker(load_model=False)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._create_inputs()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._destroy_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_outputs()
        self.stats.model_status = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._destroy_inputs()
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS


def run(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown, then tear it down (usable in-process; returns the exit code)."""
    argv = list(sys.argv if args is None else args)
    lifecycle = '--lifecycle' in remove_ros_args(argv)
    rclpy.init(args=argv)
    node = None
    try:
        node = MgeoDepthLifecycleNode() if lifecycle else MgeoDepthNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if threading.current_thread() is threading.main_thread():
            # A second Ctrl-C (a terminal's and launch's) must not break the teardown into a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def main(args: list[str] | None = None) -> int:
    """Console script `mgeo_depth_node [--lifecycle] --ros-args ...` (--lifecycle: a managed node, unconfigured at
    start; drive it with the lifecycle services or a lifecycle manager).

    Once the node is down, the process ends without finalizing the interpreter: that finalization (PyTorch, ONNX
    Runtime and DDS libraries' teardown) took 1.5 s after a Ctrl-C, and a frame still inside the backend (which
    cannot be interrupted) could crash it. Logs are flushed first; the exit code is the node's."""
    code = run(args)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
