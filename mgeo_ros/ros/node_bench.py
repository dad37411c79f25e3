"""`mgeo bench --node`: the node's own cost per frame, timed as the node runs it, forward replaced by a replay.

For each frame size, a real `mgeo_depth_node` is built in this process (its parameters, publishers and
`FramePipeline`, not its subscriptions or worker thread) and fed ready-received Image + CameraInfo messages. The
model runs once per recorded frame to record its outputs; after that a `ReplayBackend` hands them back, so the
timings are decode -> preprocess -> postprocess -> the output messages built and published, to a subscriber in
another process (`node_bench_sink`) that subscribes to every topic the node publishes. Stage rows come from the
pipeline's own stage timings (the `/diagnostics` window, sized to the run): a stage the pipeline starts timing
appears as a row without a change here.

The baseline column is the path before issue 16 (`node_bench_baseline`, a frozen copy) run on the same frames in the
same run, frames interleaved; its outputs are compared with today's, message by message.
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
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from mgeo_ros.errors import MgeoError
from mgeo_ros.geometry import Intrinsics
from mgeo_ros.ros import convert
from mgeo_ros.ros.diagnostics import Timings, summarize
from mgeo_ros.ros.fastdds import NEW, profile_env
from mgeo_ros.ros.node import NODE_NAME, _DepthNodeParts
from mgeo_ros.ros.node_bench_baseline import BaselinePipeline
from mgeo_ros.ros.pipeline import IncomingFrame
from mgeo_ros.runtime.backends.replay_backend import ReplayBackend, record
from mgeo_ros.runtime.preprocess import grid_tokens

REPO = Path(__file__).resolve().parents[2]
# What the goals are stated for: every output subscribed, an organized xyzrgb cloud at full resolution.
BENCH_PARAMS = {'points_color': True, 'points_organized': True, 'points_stride': 1}
FIRST, LAST = ('decode', 'preprocess', 'forward', 'postprocess'), ('publish', 'own', 'total')
HIDDEN = ('queue_wait', 'since_stamp', 'transport')
# Issue 16's goals for the node's own work per frame (total - forward), every output subscribed, on a 2-core CPU.
GOALS_MS = {'640x480': 4.0, '1280x720': 10.0}  # ~0 or not per-frame work when frames are handed over directly


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
    """mgeo_depth_node's parameters, publishers and FramePipeline, without subscriptions or worker thread: the bench
    calls `pipeline.process` itself."""

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


class _Capture:
    """A publisher stand-in that keeps the last message it published (used only for the outputs check)."""

    def __init__(self, publisher) -> None:
        self.publisher = publisher
        self.last = None

    def publish(self, msg) -> None:
        self.last = msg
        self.publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self.publisher, name)


def _capture(outputs, run) -> dict:
    """Run `run()` with every publisher of `outputs` captured; {field: last message}."""
    saved = {f.name: getattr(outputs, f.name) for f in dataclasses.fields(outputs)
             if getattr(outputs, f.name) is not None}  # an output switched off by a parameter has no publisher
    for name, pub in saved.items():
        setattr(outputs, name, _Capture(pub))
    try:
        run()
        return {name: getattr(outputs, name).last for name in saved if getattr(outputs, name).last is not None}
    finally:
        for name, pub in saved.items():
            setattr(outputs, name, pub)


def _float_diff(a: np.ndarray, b: np.ndarray) -> dict:
    """Largest difference between two float arrays where both are finite; where their NaN/Inf patterns differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    pattern = int(np.count_nonzero((np.isnan(a) != np.isnan(b)) | (np.isinf(a) != np.isinf(b))
                                   | (np.isinf(a) & np.isinf(b) & (a != b))))
    diff = np.abs(a[both] - b[both])
    top = float(np.abs(b[both]).max()) if both.any() else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {'max_abs': max_abs, 'max_rel': max_abs / top if top > 0 else max_abs, 'pattern_mismatch': pattern}


def compare_messages(new, old) -> dict:
    """How one output message of today's path differs from the baseline's (same topic)."""
    if type(new) is not type(old):
        return {'layout_equal': False}
    if isinstance(new, Image):
        layout = (new.height, new.width, new.encoding, new.step) == (old.height, old.width, old.encoding, old.step)
        if not layout:
            return {'layout_equal': False}
        a, b = convert.image_to_numpy(new), convert.image_to_numpy(old)
        if a.dtype.kind == 'f':
            return {'layout_equal': True, **_float_diff(a, b)}
        return {'layout_equal': True, 'differing': int(np.count_nonzero(a != b))}
    if isinstance(new, CameraInfo):
        layout = (new.width, new.height, new.distortion_model) == (old.width, old.height, old.distortion_model)
        k = _float_diff(np.r_[new.k, new.p, new.d], np.r_[old.k, old.p, old.d])
        return {'layout_equal': layout, **k}
    layout = ([(f.name, f.offset, f.datatype) for f in new.fields] == [(f.name, f.offset, f.datatype)
                                                                       for f in old.fields]
              and (new.height, new.width, new.point_step, new.is_dense) == (old.height, old.width, old.point_step,
                                                                             old.is_dense))
    if not layout:
        return {'layout_equal': False}
    pa, ca = convert.pointcloud2_to_numpy(new)
    pb, cb = convert.pointcloud2_to_numpy(old)
    out = {'layout_equal': True, **_float_diff(pa, pb)}
    if ca is not None:
        out['differing'] = int(np.count_nonzero((ca != cb).any(axis=-1)))  # points with another colour
    return out


def identical(checks: dict, rel: float = 1e-5) -> bool:
    """Same layout, same invalid pixels, same colours and masks, floats equal to `rel` of their magnitude."""
    return all(c.get('layout_equal') and c.get('pattern_mismatch', 0) == 0 and c.get('differing', 0) == 0
               and c.get('max_rel', 0.0) <= rel for c in checks.values())


class Sink:
    """The subscriber process (`node_bench_sink`) for every output topic of a node."""

    def __init__(self, topics: list[tuple[str, str]]) -> None:
        self.proc = subprocess.Popen([sys.executable, '-m', 'mgeo_ros.ros.node_bench_sink']
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
    pubs = [p for p in (getattr(node.outputs, f.name) for f in dataclasses.fields(node.outputs))
            if p is not None and p.topic_name in topics]
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
               camera_info: bool, baseline: bool, profile: int = 0, subscribe: list[str] | None = None) -> dict:
    """One frame size: today's path (and the baseline), `runs` timed frames each after `warmup`; with `profile`,
    also the functions of today's path that take the most time per timed frame."""
    width, height = size
    images = [camera_image(width, height, seed) for seed in range(frames)]
    outputs = record_outputs(recorder, images)
    from mgeo_ros.runtime import Predictor

    node = BenchNode(f'/mgeo_bench_{os.getpid()}_{width}x{height}', params)
    cfg = node.cfg
    sink = None
    try:
        pipeline = node.pipeline
        input_size = recorder.backend.input_size
        new_backend = ReplayBackend(outputs, input_size=input_size)
        pipeline.predictor = Predictor(new_backend, num_tokens=recorder.num_tokens,
                                       mask_threshold=cfg['mask_threshold'])
        node.stats.model_status, node.stats.active = 'ready', True
        old_backend = ReplayBackend(outputs, input_size=input_size)
        old_timings = Timings(window=runs)
        old = BaselinePipeline(old_backend, recorder.num_tokens, node.outputs, old_timings, node.get_clock(),
                               input_size=input_size) if baseline else None
        node.stats.timings = new_timings = Timings(window=runs)
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

        def run_new(k: int) -> None:
            msg = msgs[k]
            msg.header.stamp = clock.now().to_msg()
            pipeline.process(IncomingFrame('raw', msg, time.monotonic(), lambda _h: info), node.cfg)

        def run_old(k: int) -> None:
            msg = msgs[k]
            msg.header.stamp = clock.now().to_msg()
            old.process(msg, time.monotonic(), intr if camera_info else None, node.cfg)

        profiler = cProfile.Profile() if profile else None
        next_at = time.monotonic()
        for i in range(warmup + runs):
            if i == warmup:
                new_timings.clear()
                old_timings.clear()
            order = (run_new, run_old) if i % 2 == 0 else (run_old, run_new)
            for run in order:
                if run is run_old and old is None:
                    continue
                if profiler is not None and run is run_new and i >= warmup:
                    profiler.enable()
                    run(i % frames)
                    profiler.disable()
                else:
                    run(i % frames)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
        checks = {}
        if old is not None:
            for k in range(frames):
                new_backend.seek(k)
                old_backend.seek(k)
                got_new = _capture(node.outputs, lambda k=k: run_new(k))
                got_old = _capture(node.outputs, lambda k=k: run_old(k))
                for name in sorted(set(got_new) & set(got_old)):
                    c = compare_messages(got_new[name], got_old[name])
                    prev = checks.get(name)
                    checks[name] = c if prev is None else _worse(prev, c)
        time.sleep(1.0)  # the last messages are still on their way to the subscriber
        received = sink.close()
        sink = None
        net_w, net_h = pipeline.predictor.network_size(width, height)
        return {'size': f'{width}x{height}', 'network_input': f'{net_w}x{net_h}', 'frames_timed': runs,
                'topics': [t for t, _ in topics], 'received_by_sink': received,
                'now': _rows(new_timings), 'baseline': _rows(old_timings) if old is not None else None,
                'outputs_vs_baseline': checks, 'identical': identical(checks) if old is not None else None,
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


def _worse(a: dict, b: dict) -> dict:
    """Elementwise worst of two comparison dicts (bigger differences, False layouts)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = (out.get(k, True) and v) if isinstance(v, bool) else max(out.get(k, 0), v)
    return out


def make_recorder(model, backend: str, num_tokens: int, threads: int | None):
    """A real Predictor for recording network outputs (any backend that runs here)."""
    from mgeo_ros.runtime import Predictor

    return Predictor(model, backend=backend, num_tokens=num_tokens, threads=threads)


def run_node_bench(model, label: str, sizes, runs: int, warmup: int, frames: int, backend: str, period: float,
                   params: dict, camera_info: bool = True, baseline: bool = True, profile: int = 0,
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
        results = [bench_size(s, recorder, merged, runs, warmup, frames, period, camera_info, baseline, profile,
                              outputs)
                   for s in sizes]
    finally:
        rclpy.try_shutdown()
    meta = {'model': label, 'recorded_with': f'{recorder.backend.name} ({recorder.backend.device})',
            'num_tokens': recorder.num_tokens, 'frames_recorded': frames, 'runs': runs, 'warmup': warmup,
            'period_s': period, 'camera_info': camera_info, 'outputs': outputs, 'cpu_count': os.cpu_count(),
            'load_avg': list(os.getloadavg())}
    return {'meta': meta, 'sizes': results}


def _cell(s: dict | None) -> str:
    return f"{s['median']:8.2f} {s['p95']:8.2f}" if s else f"{'-':>8} {'-':>8}"


def format_node_table(report: dict) -> str:
    """The table for the README: per size, per stage median / p95 now and at the baseline."""
    m = report['meta']
    lines = [f"mgeo bench --node: the node's per-frame path (FramePipeline.process) with the forward REPLAYED from "
             f"recorded network outputs ({m['model']}, recorded on {m['recorded_with']}, {m['num_tokens']} tokens, "
             f"{m['frames_recorded']} distinct frames)",
             f"{'outputs ' + ', '.join(m['outputs']) if m.get('outputs') else 'every output'} subscribed from "
             'another process; params: '
             + ', '.join(f'{k}={v}' for k, v in report['sizes'][0]['params'].items())
             + f"; camera_info {'given' if m['camera_info'] else 'absent (focal recovered)'}"]
    for r in report['sizes']:
        lines.append('')
        lines.append(f"{r['size']} (network {r['network_input']}), {r['frames_timed']} frames, ms")
        head = f"{'stage':<22} {'median':>8} {'p95':>8}   {'baseline median':>15} {'p95':>8}"
        lines += [head, '-' * len(head)]
        now, base = r['now'], r['baseline'] or {}
        middle = sorted(k for k in now if k not in FIRST + LAST)
        for stage in list(FIRST) + middle + list(LAST):
            if stage not in now and stage not in base:
                continue
            label = {'forward': 'forward (replayed)', 'own': 'own (total - forward)'}.get(stage, stage)
            a, b = now.get(stage), base.get(stage)
            lines.append(f'{label:<22} {_cell(a)}   {"":>6}{_cell(b)}')
        goal, own = GOALS_MS.get(r['size']), now.get('own')
        if goal is not None and own is not None:
            verdict = 'met' if own['median'] <= goal else 'NOT met'
            lines.append(f"issue 16's goal, own <= {goal:g} ms (every output subscribed, 2-core CPU): {verdict} here "
                         f"(median {own['median']:.2f} ms)")
        if r['identical'] is not None:
            worst = max((c.get('max_rel', 0.0) for c in r['outputs_vs_baseline'].values()), default=0.0)
            verdict = 'identical within float32 noise' if r['identical'] else 'DIFFERENT'
            lines.append(f"outputs vs baseline ({', '.join(sorted(r['outputs_vs_baseline']))}): {verdict} "
                         f'(largest relative float difference {worst:.1e})')
            if not r['identical']:
                lines.append('  ' + json.dumps(r['outputs_vs_baseline']))
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
    lines.append(f"medians and p95 (nearest rank) over the timed frames after {m['warmup']} warm-up, baseline frames "
                 f"interleaved with today's; {m['cpu_count']} cpu, load average {m['load_avg'][0]:.1f}")
    return '\n'.join(lines)
