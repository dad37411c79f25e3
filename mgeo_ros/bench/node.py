"""`mgeo bench --node`: the node's own cost per frame, timed as the node runs it, forward replaced by a replay.

For each frame size, a real `mgeo_depth_node` is built in this process (its parameters, camera channel and
`FramePipeline`, not its subscriptions or worker thread) and fed ready-received Image + CameraInfo messages. The
model runs once per recorded frame to record its outputs; after that a `ReplayBackend` hands them back, so the
timings are decode -> preprocess -> postprocess -> the output messages built and published, to a subscriber in
another process (`node_bench_sink`) that subscribes to every topic the node publishes. Stage rows come from the
pipeline's own stage timings (the `/diagnostics` window, sized to the run): a stage the pipeline starts timing
appears as a row without a change here.

"""
from __future__ import annotations

import cProfile
import dataclasses
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from mgeo_ros.errors import MgeoError
from mgeo_ros.geometry import Intrinsics
from mgeo_ros.ros import convert
from mgeo_ros.ros.diagnostics import Timings, summarize
from mgeo_ros.ros.fastdds import NEW, profile_env
from mgeo_ros.ros.node import NODE_NAME, _DepthNodeParts
from mgeo_ros.ros.pipeline import IncomingFrame
from mgeo_ros.runtime.backends.replay_backend import ReplayBackend, record
from mgeo_ros.runtime.preprocess import grid_tokens

REPO = Path(__file__).resolve().parents[2]
# What the goals are stated for: every output subscribed, an organized xyzrgb cloud at full resolution.
BENCH_PARAMS = {'points_color': True, 'points_organized': True, 'points_stride': 1}
FIRST, LAST = ('decode', 'preprocess', 'forward', 'postprocess'), ('publish', 'own', 'total')
HIDDEN = ('queue_wait', 'since_stamp', 'transport')


def ros_env() -> None:
    """Localhost-only discovery and the large-frame Fast DDS profile (a 640x480 frame needs it), unless set; the
    profile under the variable the installed Fast DDS reads (`fastdds.profile_env`: 2.x ignores the new name)."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = REPO / 'config' / 'fastdds_large_frames.xml'
    if profile.is_file():
        for name, value in profile_env(os.environ.get(NEW, str(profile))).items():
            os.environ.setdefault(name, value)


def camera_image(width: int, height: int, seed: int) -> np.ndarray:
    """A textured RGB frame (gradients, a pattern, sensor-like noise): something a camera could send."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 / width, y * 255 / height, 128 + 60 * np.sin(x / 17.0 + seed) * np.cos(y / 23.0)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def bench_intrinsics(width: int, height: int) -> Intrinsics:
    """The benches' camera: centred, fx = fy = 0.8 W (a ~64 degree horizontal FOV)."""
    return Intrinsics(fx=0.8 * width, fy=0.8 * width, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width,
                      height=height)


def as_received(msg):
    """The message as a subscription hands it over (serialized and deserialized: rclpy's own field types)."""
    return deserialize_message(serialize_message(msg), type(msg))


def parse_value(text: str):
    """A `--param key=value` value: bool, int, float or string, like `-p key:=value`."""
    low = text.strip().lower()
    if low in ('true', 'false'):
        return low == 'true'
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class BenchNode(_DepthNodeParts, Node):
    """mgeo_depth_node's parameters, camera channel and FramePipeline, without subscriptions or worker thread: the
    bench serves each frame itself."""

    def __init__(self, namespace: str, params: dict) -> None:
        Node.__init__(self, NODE_NAME, namespace=namespace,
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self._init_common(lifecycle=False)
        self._create_outputs()

    def output_topics(self) -> list[tuple[str, str]]:
        """(topic, type) of every topic this node publishes under its namespace."""
        ns = self.get_namespace().rstrip('/') + '/'
        found = self.get_publisher_names_and_types_by_node(self.get_name(), self.get_namespace())
        return sorted((topic, types[0]) for topic, types in found if topic.startswith(ns))


class Sink:
    """The subscriber process (`node_bench_sink`) for every output topic of a node."""

    def __init__(self, topics: list[tuple[str, str]]) -> None:
        self.proc = subprocess.Popen([sys.executable, '-m', 'mgeo_ros.bench.sink']
                                     + [f'{t}={ty}' for t, ty in topics], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        line = self.proc.stdout.readline().strip()
        if line != 'ready':
            raise RuntimeError(f'bench sink did not start (said {line!r}, exit {self.proc.poll()})')

    def close(self) -> dict:
        try:
            out, _ = self.proc.communicate(input='', timeout=15)
            return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            self.proc.kill()
            self.proc.wait()
            return {}


def _wait_subscribed(node: BenchNode, topics: set[str], timeout: float = 20.0) -> None:
    pubs = [p for p in node.channels[0].outputs.all() if p.topic_name in topics]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in pubs):
            time.sleep(0.3)  # let the sink's side of discovery finish too
            return
        time.sleep(0.05)
    raise TimeoutError('the bench sink did not subscribe to every output in time')


def record_outputs(predictor, images: list[np.ndarray]) -> list:
    """Network outputs of `predictor`'s model for each frame (preprocessed exactly as the node does)."""
    prepared = []
    for rgb in images:
        image = predictor.preprocessor(rgb).copy()
        prepared.append(image)
    nh, nw = prepared[0].shape[2:]
    return record(predictor.backend, prepared, grid_tokens(nw, nh))


def _rows(timings: Timings) -> dict:
    """{stage: summary dict} with the per-frame 'own' = total - forward - queue_wait added."""
    out = {k: dataclasses.asdict(v) for k, v in timings.summary().items() if k not in HIDDEN}
    total, forward = timings.values('total'), timings.values('forward')
    wait = timings.values('queue_wait') or [0.0] * len(total)
    if total and len(total) == len(forward) == len(wait):
        out['own'] = dataclasses.asdict(summarize([t - f - w for t, f, w in zip(total, forward, wait, strict=True)]))
    return out


def bench_size(size: tuple[int, int], recorder, params: dict, runs: int, warmup: int, frames: int, period: float,
               camera_info: bool, profile: int = 0, subscribe: list[str] | None = None) -> dict:
    """One frame size: `runs` timed frames after `warmup`; with `profile`, also the functions that take the most
    time per timed frame."""
    width, height = size
    images = [camera_image(width, height, seed) for seed in range(frames)]
    outputs = record_outputs(recorder, images)
    from mgeo_ros.runtime import Predictor

    node = BenchNode(f'/mgeo_bench_{os.getpid()}_{width}x{height}', params)
    cfg = node.cfg
    channel = node.channels[0]
    sink = None
    try:
        pipeline = channel.pipeline
        backend = ReplayBackend(outputs, input_size=recorder.backend.input_size)
        pipeline.predictor = Predictor(backend, num_tokens=recorder.num_tokens, mask_threshold=cfg['mask_threshold'])
        channel.stats.model_status, channel.stats.active = 'ready', True
        channel.stats.timings = timings = Timings(window=runs)
        topics = node.output_topics()
        if subscribe:  # only these are subscribed, so only these are built (the node skips what nobody reads)
            unknown = [o for o in subscribe if not any(t.endswith('/' + o) for t, _ in topics)]
            if unknown:
                raise MgeoError(f'--outputs {unknown}: the node publishes {[t for t, _ in topics]}')
            topics = [(t, ty) for t, ty in topics if any(t.endswith('/' + o) for o in subscribe)]
        sink = Sink(topics)
        _wait_subscribed(node, {t for t, _ in topics})

        intr = bench_intrinsics(width, height)
        header = Header(frame_id='bench_optical')
        info = as_received(convert.intrinsics_to_camera_info(intr, header)) if camera_info else None
        msgs = [as_received(convert.numpy_to_image(rgb, 'rgb8', header)) for rgb in images]
        clock = node.get_clock()

        def run(k: int) -> None:
            msg = msgs[k]
            msg.header.stamp = clock.now().to_msg()
            data = serialize_message(msg)  # as a subscription hands it over (raw=True)
            inferred = channel._infer(pipeline, IncomingFrame('raw', data, time.monotonic(), lambda _h: info), node.cfg)
            if inferred is not None:
                channel._publish(pipeline, inferred)

        profiler = cProfile.Profile() if profile else None
        next_at = time.monotonic()
        for i in range(warmup + runs):
            if i == warmup:
                timings.clear()
            if profiler is not None and i >= warmup:
                profiler.enable()
                run(i % frames)
                profiler.disable()
            else:
                run(i % frames)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        time.sleep(1.0)  # the last messages are still on their way to the subscriber
        received = sink.close()
        sink = None
        net_w, net_h = pipeline.predictor.network_size(width, height)
        return {'size': f'{width}x{height}', 'network_input': f'{net_w}x{net_h}', 'frames_timed': runs,
                'topics': [t for t, _ in topics], 'received_by_sink': received, 'now': _rows(timings),
                'params': {k: cfg[k] for k in sorted(cfg) if k in params or k in BENCH_PARAMS},
                'profile_ms_per_frame': _top_functions(profiler, runs, profile) if profiler is not None else None}
    finally:
        if sink is not None:
            sink.close()
        node.destroy_node()


def _top_functions(profiler: cProfile.Profile, frames: int, count: int) -> list[dict]:
    """The `count` functions with the most cumulative time per frame (ms), own code and library calls alike."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():
        where = name if path == '~' else f'{Path(path).name}:{line}({name})'
        rows.append({'function': where, 'calls_per_frame': calls / frames, 'cumulative_ms': cumulative * 1e3 / frames,
                     'own_ms': own * 1e3 / frames})
    rows.sort(key=lambda r: r['cumulative_ms'], reverse=True)
    return rows[:count]


def make_recorder(model, backend: str, num_tokens: int, threads: int | None):
    """A real Predictor for recording network outputs (any backend that runs here)."""
    from mgeo_ros.runtime import Predictor

    return Predictor(model, backend=backend, num_tokens=num_tokens, threads=threads)


def run_node_bench(model, label: str, sizes, runs: int, warmup: int, frames: int, backend: str, period: float,
                   params: dict, camera_info: bool = True, profile: int = 0,
                   outputs: list[str] | None = None) -> dict:
    """Every size; see the module docstring. `params` override node parameters on top of BENCH_PARAMS."""
    ros_env()
    merged = {**BENCH_PARAMS, **params}
    rclpy.init()
    try:
        probe = BenchNode(f'/mgeo_bench_probe_{os.getpid()}', merged)  # the node's own parameter defaults
        cfg = dict(probe.cfg)
        probe.destroy_node()
        recorder = make_recorder(model, backend, int(cfg['num_tokens']), cfg['intra_op_threads'])
        results = [bench_size(s, recorder, merged, runs, warmup, frames, period, camera_info, profile,
                              outputs)
                   for s in sizes]
    finally:
        rclpy.try_shutdown()
    meta = {'model': label, 'recorded_with': f'{recorder.backend.name} ({recorder.backend.device})',
            'num_tokens': recorder.num_tokens, 'frames_recorded': frames, 'runs': runs, 'warmup': warmup,
            'period_s': period, 'camera_info': camera_info, 'outputs': outputs, 'cpu_count': os.cpu_count(),
            'load_avg': list(os.getloadavg())}
    return {'meta': meta, 'sizes': results}


def _cell(s: dict) -> str:
    return f"{s['median']:8.2f} {s['p95']:8.2f}"


def format_node_table(report: dict) -> str:
    """The table for the README: per size, per stage median / p95."""
    m = report['meta']
    lines = [f"mgeo bench --node: the node's per-frame path (both stages and the publishing) with the "
             f"forward REPLAYED from "
             f"recorded network outputs ({m['model']}, recorded on {m['recorded_with']}, {m['num_tokens']} tokens, "
             f"{m['frames_recorded']} distinct frames)",
             f"{'outputs ' + ', '.join(m['outputs']) if m.get('outputs') else 'every output'} subscribed from "
             'another process; params: '
             + ', '.join(f'{k}={v}' for k, v in report['sizes'][0]['params'].items())
             + f"; camera_info {'given' if m['camera_info'] else 'absent (focal recovered)'}"]
    for r in report['sizes']:
        lines.append('')
        lines.append(f"{r['size']} (network {r['network_input']}), {r['frames_timed']} frames, ms")
        head = f"{'stage':<22} {'median':>8} {'p95':>8}"
        lines += [head, '-' * len(head)]
        now = r['now']
        middle = sorted(k for k in now if k not in FIRST + LAST)
        for stage in list(FIRST) + middle + list(LAST):
            if stage not in now:
                continue
            label = {'forward': 'forward (replayed)', 'own': 'own (total - forward)'}.get(stage, stage)
            lines.append(f'{label:<22} {_cell(now[stage])}')
        if r.get('profile_ms_per_frame'):
            lines.append('where the time goes (today\'s path, cProfile, ms per frame: cumulative / own):')
            lines += [f"  {p['cumulative_ms']:8.2f} {p['own_ms']:8.2f}  {p['function']}"
                      for p in r['profile_ms_per_frame']]
        got = r['received_by_sink']
        if got:
            lines.append('received by the subscriber process: '
                         + ', '.join(f"{t.rsplit('/', 2)[-2] + '/' if t.count('/') > 2 else ''}{t.rsplit('/', 1)[-1]}"
                                     f" {v['messages']}" for t, v in sorted(got.items())))
    lines.append('')
    lines.append(f"medians and p95 (nearest rank) over the timed frames after {m['warmup']} warm-up;"
                 f" {m['cpu_count']} cpu, load average {m['load_avg'][0]:.1f}")
    return '\n'.join(lines)
