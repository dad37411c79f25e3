"""mgeo_depth_node: cameras in; metric depth, its camera_info, a point cloud, a validity mask and diagnostics out.

One camera by default; with the `cameras` parameter one process serves several through one model (see
camera_channel.py for what is per camera and runtime/batching.py for how their frames share the model).
Threads: the executor thread only stores incoming messages (per camera, the newest image replaces a waiting one, see
`FrameSlot`); per camera, one thread decodes the frame and runs the model while another makes and publishes the
outputs of the frame before it (camera_channel.py). Every output carries the input header.
Run: `mgeo_depth_node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info -p model:=...`
or `python -m mgeo_ros.ros.node --ros-args ...`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.utilities import remove_ros_args

from mgeo_ros import node_params as P
from mgeo_ros.ros.camera_channel import CLEANUP_WAIT_S, STOP_WAIT_S, CameraChannel
from mgeo_ros.ros.diagnostics import NodeStats
from mgeo_ros.ros.fastdds import apply_default_profile
from mgeo_ros.ros.model_status import model_diagnostic_status
from mgeo_ros.ros.outputs import TOPICS as OUTPUT_TOPICS
from mgeo_ros.runtime.heap import keep_freed_buffers, release_freed

NODE_NAME = 'mgeo_depth_node'
INPUT_TOPICS = ('image', 'camera_info')  # relative: remap them (image/compressed follows image)
_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
              tuple: ParameterType.PARAMETER_STRING_ARRAY}


def _descriptor(spec: P.ParamSpec, name: str = '') -> ParameterDescriptor:
    """`name`: a camera's own `<camera>.NAME` declared with NAME's spec (default: the spec's own name)."""
    d = ParameterDescriptor(name=name or spec.name, type=_ROS_TYPES[spec.kind], description=spec.describe())
    if spec.choices:
        d.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    # rclpy does not check the type: params.validate does, and its refusal names the parameter and the type it wants
    # (rclpy's own says "Wrong parameter type, expected 'Type.INTEGER' got 'Type.DOUBLE'"). Floats also accept
    # integers (`-p max_depth:=5`); the node coerces them.
    d.dynamic_typing = spec.kind is not tuple  # a string array is declared by its type (rclpy: not dynamic)
    if spec.kind is int and spec.min is not None and spec.max is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    if spec.kind is float and spec.min is not None and spec.max is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


class _DepthNodeParts:
    """The node's building blocks, shared by the plain node (all at start) and the lifecycle node (per transition):
    parameters, the camera channels (one without a name prefix when `cameras` is empty), the model."""

    def _init_common(self, lifecycle: bool) -> None:
        self.cfg = self._declare_parameters()
        self.multi = bool(self.cfg['cameras'])
        self.channels = [CameraChannel(self, name) for name in (self.cfg['cameras'] or ('',))]
        for ch in self.channels:
            ch.stats.model_status = 'unconfigured' if lifecycle else 'loading'
        self.model = None  # runtime.camera_session.LoadedModel: the model every camera shares
        self._model_ready = threading.Event()
        self._loader: threading.Thread | None = None
        if self.multi and self.cfg['frame_id']:
            self.get_logger().warning('frame_id is ignored with several cameras: each output keeps its own image\'s '
                                      'frame_id')
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', QoSProfile(depth=10))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Changes apply once rclpy has taken the whole batch (every value validated first, by _on_set_parameters).
        self._apply_after_set = hasattr(self, 'add_post_set_parameters_callback')
        if self._apply_after_set:
            self.add_post_set_parameters_callback(self._on_parameters_set)
        self._validate_set_parameters_requests()
        self._diag_timer = self.create_timer(self.cfg['diagnostics_period'], self._publish_diagnostics)

    @property
    def stats(self) -> NodeStats:
        """The first (or only) camera's counters; the model state is the same in every camera's."""
        return self.channels[0].stats

    def _create_outputs(self) -> None:
        for ch in self.channels:
            ch.create_outputs()

    def _destroy_outputs(self) -> None:
        for ch in self.channels:
            ch.destroy_outputs()

    def _create_inputs(self) -> None:
        for ch in self.channels:
            ch.create_inputs()
        cfg = self.cfg
        listening = ', '.join(f'{ch.image_sub.topic_name} + {ch.info_sub.topic_name}' for ch in self.channels)
        published = ', '.join(OUTPUT_TOPICS) if not self.multi else \
            '<camera>/{' + ', '.join(OUTPUT_TOPICS) + '} for ' + ', '.join(cfg['cameras'])
        self.get_logger().info(
            f'listening on {listening} ({cfg["image_transport"]}, {cfg["input_qos"]}); publishing {published} '
            f'({cfg["output_qos"]}, depth {cfg["output_qos_depth"]})')

    def _destroy_inputs(self) -> None:
        for ch in self.channels:
            ch.destroy_inputs()

    @property
    def shared(self):
        """The shared model's queue (runtime.batching.SharedModel) when several cameras share the model."""
        return self.model.shared if self.model is not None else None

    def _load_model(self) -> None:
        """Load the model once (runtime/camera_session.py) and attach every camera's session to it, each with its
        own view and per-pixel placement. On failure the node stays up and every status says why."""
        from mgeo_ros.runtime.camera_session import load_model

        for ch in self.channels:
            ch.stats.model_status = 'loading'
        status, error, label = 'ready', '', ''
        try:
            self.model = load_model(self.cfg, len(self.channels), self.get_logger())
            label = self.model.label
        except Exception as exc:  # missing/corrupt model, backend absent: keep the node alive and say why
            status, error = 'error', f'{type(exc).__name__}: {exc}'
            named = self.cfg['model'] or 'the packaged default'
            self.get_logger().error(f'cannot load model {named!r}: {error}. The node keeps running and '
                                    'reports this in /diagnostics; fix the `model`/`backend` parameters and restart.')
        for ch in self.channels:
            ch.pipeline.attach(self.model, ch.name)
            with ch.stats.lock:
                ch.stats.model_status, ch.stats.model_error = status, error
                ch.stats.backend = label or ch.stats.backend

    def _load_then_release(self) -> None:
        try:
            self._load_model()
        finally:
            self._model_ready.set()

    def _start_workers(self, load_model: bool) -> None:
        """One worker per camera; they wait until the model is loaded (here in the background, or already)."""
        self._model_ready = threading.Event()
        for ch in self.channels:
            ch.start(self._model_ready)
        if load_model:
            self._loader = threading.Thread(target=self._load_then_release, name='mgeo_model_loader', daemon=True)
            self._loader.start()
        else:
            self._model_ready.set()

    def _stop_workers(self, wait_s: float = STOP_WAIT_S) -> None:
        for ch in self.channels:
            ch.stop(wait_s)

    def _close_model(self) -> None:
        for ch in self.channels:
            if ch.pipeline is not None:
                ch.pipeline.session.detach()
        if self.model is not None:
            self.model.close()
        self.model = None
        release_freed()  # the model's and the cameras' buffers go back to the system, not only to the heap

    # ---- parameters ---------------------------------------------------------------------------------------------
    def _declare_parameters(self) -> dict:
        cfg = {}
        for spec in P.PARAMS:
            # an empty list has no ROS type of its own: a string array is declared by type (unset = empty)
            default = Parameter.Type.STRING_ARRAY if spec.kind is tuple else spec.default
            try:
                value = self.declare_parameter(spec.name, default, _descriptor(spec)).value
            except Exception as exc:  # wrong type given at start: keep running on the default, say why
                self.get_logger().error(f'parameter {spec.name}: {exc}; using the default {spec.default!r}')
                value = self.declare_parameter(spec.name, default, _descriptor(spec), ignore_override=True).value
            if value is None and spec.kind is tuple:  # unset (or `[]` in a YAML): make it an empty array, not unset
                self.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
            value = P.coerce(spec.name, value)
            reason = P.validate(spec.name, value)
            if reason is not None:
                self.get_logger().error(f'invalid start value: {reason}; using the default {spec.default!r}')
                value = spec.default
                kind = Parameter.Type.STRING_ARRAY if spec.kind is tuple else None
                self.set_parameters([Parameter(spec.name, kind, list(value) if kind else value)])
            cfg[spec.name] = value
        for name, default in P.camera_parameters(cfg['cameras'], cfg).items():  # a camera's own <camera>.NAME
            spec = P.SPECS[P.spec_name(name)]
            value = P.coerce(name, self.declare_parameter(name, default, _descriptor(spec, name)).value)
            reason = P.validate(name, value)
            if reason is not None:
                self.get_logger().error(f'invalid start value: {name}: {reason}; using {default!r}')
                value = default
                self.set_parameters([Parameter(name, value=value)])
            cfg[name] = value
        return cfg

    def _refusal(self, changes) -> str | None:
        """Why a batch of changes is refused (the first refused value's reason), or None when all may apply."""
        for p in changes:
            if P.spec_name(p.name) in P.SPECS:  # rclpy's own (use_sim_time, qos_overrides...): rclpy handles them
                reason = P.check_change(p.name, self.cfg.get(p.name), P.coerce(p.name, p.value))
                if reason is not None:
                    return reason
        return None

    def _validate_set_parameters_requests(self) -> None:
        """A set_parameters request (`ros2 param set` with several values, `ros2 param load`) is one batch: rclpy
        sets its values one at a time, so the whole request is validated first, and one refused value refuses
        every value of it (nothing applies)."""
        for srv in self.services:
            if srv.srv_type is SetParameters and srv.srv_name.endswith('/set_parameters'):
                srv.callback = functools.partial(self._on_set_parameters_request, srv.callback)

    def _on_set_parameters_request(self, set_each, request, response):
        reason = self._refusal([Parameter.from_parameter_msg(p) for p in request.parameters])
        if reason is None:
            return set_each(request, response)
        self.get_logger().warning(f'parameter change refused: {reason}; no value of the request applied')
        response.results = [SetParametersResult(successful=False, reason=reason) for _ in request.parameters]
        return response

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """Validate every change of a batch before any applies: one refused value refuses the batch, and nothing of
        it applies. Valid batches apply after rclpy has stored them (`_on_parameters_set`); where rclpy has no
        post-set callback, here, once all are validated."""
        reason = self._refusal(changes)
        if reason is not None:
            self.get_logger().warning(f'parameter change refused: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        if not self._apply_after_set:
            self._apply({p.name: P.coerce(p.name, p.value) for p in changes if P.spec_name(p.name) in P.SPECS})
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, changes) -> None:
        """rclpy has stored a validated batch: apply it."""
        self._apply({p.name: P.coerce(p.name, p.value) for p in changes if P.spec_name(p.name) in P.SPECS})

    def _apply(self, updates: dict) -> None:
        """Apply validated changes to the running node in one step."""
        if not self.cfg or not updates:  # empty while declaring: _declare_parameters handles the initial values
            return
        self.cfg = {**self.cfg, **updates}  # one atomic swap: the worker sees all or none of the changes
        for ch in self.channels:
            ch.log_bad.period = self.cfg['log_throttle']
            if ch.pipeline is not None:
                ch.pipeline.on_config_changed(self.cfg, updates)
        applied = ', '.join(f'{k}={v!r}' for k, v in updates.items())
        self.get_logger().info(f'parameters applied live: {applied}')

    def _publish_diagnostics(self) -> None:
        """One status per camera, plus one for the shared model when there are several cameras."""
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        fqn = self.get_fully_qualified_name()
        msg.status = [ch.diagnostic_status(fqn) for ch in self.channels]
        if self.multi:
            first = self.channels[0].stats
            max_batch = self.shared.max_batch if self.shared is not None else 0
            msg.status.append(model_diagnostic_status(
                f'{fqn}: model', first.model_status, first.model_error, first.backend, max_batch,
                self.shared.stats if self.shared is not None else None))
        self._diag_pub.publish(msg)

    def shutdown(self) -> None:
        """Stop the workers and the shared model before the node goes away."""
        self._stop_workers()
        self._close_model()


class MgeoDepthNode(_DepthNodeParts, Node):
    """The depth node, running from the start; see the module docstring and docs/node.md."""

    def __init__(self, **kwargs) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self._init_common(lifecycle=False)
        self._create_outputs()
        self._create_inputs()
        self._start_workers(load_model=True)


class MgeoDepthLifecycleNode(_DepthNodeParts, LifecycleNode):
    """The same node as a managed (lifecycle) node: configure loads the model (and fails with the reason if it
    cannot), activate subscribes, deactivate unsubscribes (nothing is computed), cleanup frees the model."""

    def __init__(self, **kwargs) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._init_common(lifecycle=True)

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self._create_outputs()
        self._load_model()
        if self.stats.model_status != 'ready':
            self._close_model()
            self._destroy_outputs()
            return TransitionCallbackReturn.FAILURE
        self._start_workers(load_model=False)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._create_inputs()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._destroy_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_workers(CLEANUP_WAIT_S)  # a frame still in the backend holds the model: let it finish
        self._close_model()
        self._destroy_outputs()
        for ch in self.channels:
            ch.stats.model_status = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._destroy_inputs()
        self._stop_workers()
        self._close_model()
        return TransitionCallbackReturn.SUCCESS


def run(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown, then tear it down (usable in-process; returns the exit code)."""
    argv = list(sys.argv if args is None else args)
    own = remove_ros_args(argv)[1:]
    if '--help' in own or '-h' in own:
        sys.stdout.write(P.usage(NODE_NAME, INPUT_TOPICS, OUTPUT_TOPICS))
        return 0
    unknown = [a for a in own if a != '--lifecycle']
    if unknown:
        print(f'{NODE_NAME}: error: unknown argument(s) {" ".join(unknown)}; expected --lifecycle, --help or ROS '
              f'arguments after --ros-args (e.g. --ros-args -p num_tokens:=1200)', file=sys.stderr)
        return 2
    lifecycle = '--lifecycle' in own
    apply_default_profile()  # camera-sized frames need it; Fast DDS reads it when rclpy.init makes the participant
    keep_freed_buffers()  # before DDS starts its threads, so that the arena cap holds for every thread of the process
    rclpy.init(args=argv)
    node = None
    try:
        node = MgeoDepthLifecycleNode() if lifecycle else MgeoDepthNode()
        overrides = list(getattr(node, '_parameter_overrides', {}))  # every -p / params-file value for this node
        for warning in P.undeclared_warnings(overrides, [n for n in overrides if node.has_parameter(n)]):
            node.get_logger().warning(warning)
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
