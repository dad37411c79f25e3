"""`mgeo bench --node`: the node as a robot runs it, its forward shaped like a GPU engine's.

For each frame size, the real `mgeo_depth_node` runs in this process (its parameters, subscriptions, both stages per
camera, publishers; spun like `mgeo_depth_node` spins it). Its model is replaced by a replay of recorded network
outputs (`bench.replay`): each forward waits `forward_ms` with the GIL released and hands back the outputs the real
model gave for the frame, so everything around the network is the node's real work. A child process
(`bench.sink`) plays the camera (rgb8 Image, or with `compressed` JPEG CompressedImage frames at `quality`, +
CameraInfo, stamped when sent) and subscribes to every output. With `param_sets`, each size is measured once per set
of node parameters (which outputs, their size, the cloud's stride...), on top of `params`.

Reported per size and set: the input form, the per-stage wall ms and thread CPU ms (decode, preprocess, forward,
frame stage, publish), the published rate against the engine's 1000 / forward_ms; the node's own CPU time per frame
(its two stages' thread CPU time, stage 1 + stage 2, per published frame: what the node computes, not the wait for
the engine) and this process's CPU time over the run per published frame (adds DDS's own threads and the
executor); the transport floor: the node's own output messages of one frame published again by a bare rclpy
publisher to the same subscriber (thread CPU time per frame), and own / floor; latency stamp -> depth received.
With `rates`, the first size is also fed at each camera rate: published rate and latency median.

`real_forward`: the node runs the real model instead of the replay (a GPU run: TensorRT), engine rate from the
node's own forward times.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from mgeo_ros.bench.replay import ReplayBackend, record
from mgeo_ros.errors import MgeoError
from mgeo_ros.geometry import Intrinsics
from mgeo_ros.ros.diagnostics import Timings, summarize
from mgeo_ros.ros.fastdds import NEW, profile_env
from mgeo_ros.ros.node import NODE_NAME, _DepthNodeParts
from mgeo_ros.ros.outputs import OUTPUTS
from mgeo_ros.runtime.preprocess import grid_tokens

REPO = Path(__file__).resolve().parents[2]
# The bench's node settings: every output subscribed, an organized xyzrgb cloud at full resolution.
BENCH_PARAMS = {'points_color': True, 'points_organized': True, 'points_stride': 1}
STAGE_ORDER = ('queue_wait', 'decode', 'rectify', 'preprocess', 'forward', 'stage1', 'stage1_cpu', 'handover_wait',
               'postprocess', 'filter', 'publish', 'stage2', 'stage2_cpu', 'total', 'since_stamp')
WARMUP_S = 2.0
OUTPUT_NAMES = tuple(o.name for o in OUTPUTS)  # what `outputs` may name: depth, info, points, mask, confidence, normals
_RUNS = itertools.count()  # each measurement's node gets a namespace of its own
JPEG_QUALITY = 80  # `--compressed jpeg`: the quality the bench's camera encodes at
# the per-frame stages a user weighs (`stage_ms`): the node's stage key for each
STAGES = {'decode': 'decode', 'preprocess': 'preprocess', 'forward': 'forward', 'frame_stage': 'postprocess',
          'publish': 'publish'}


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


def make_recorder(model, backend: str, cfg: dict):
    """A real Predictor with the node's settings `cfg`: it records the network outputs that are replayed, or runs
    the forward itself (`--forward-ms real`)."""
    from mgeo_ros.runtime import Predictor

    precision = 'fp32' if cfg['precision'] == 'auto' else cfg['precision']
    return Predictor(model, backend=backend, num_tokens=int(cfg['num_tokens']), precision=precision,
                     threads=cfg['intra_op_threads'])


def record_outputs(predictor, images: list[np.ndarray]) -> list:
    """Network outputs of `predictor`'s model for each frame (preprocessed exactly as the node does)."""
    prepared = [predictor.preprocessor(rgb).copy() for rgb in images]
    nh, nw = prepared[0].shape[2:]
    return record(predictor.backend, prepared, grid_tokens(nw, nh))


class BenchDepthNode(_DepthNodeParts, Node):
    """mgeo_depth_node's parts (parameters, camera channels, diagnostics), set up by the bench."""

    def __init__(self, params: dict, namespace: str = '') -> None:
        Node.__init__(self, NODE_NAME, namespace=namespace,
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self._init_common(lifecycle=False)


class ServedNode:
    """mgeo_depth_node in this process, set up as `MgeoDepthNode` sets itself up (publishers, both stages per camera,
    subscriptions) with the given predictor in place of loading a model; spun by its own executor thread.
    `last_messages` holds the last frame's output messages (for the transport floor)."""

    def __init__(self, namespace: str, params: dict, predictor) -> None:
        self.node = node = BenchDepthNode(params, namespace)
        node._create_outputs()
        self.last_messages: list = []
        for ch in node.channels:
            ch.pipeline.session.predictor = predictor
            ch.stats.model_status = 'ready'
            ch.stats.timings = Timings(window=100_000)  # every frame of the run, not the diagnostics' window
            real = ch.pipeline.messages

            def kept(frame, real=real):
                self.last_messages = real(frame)
                return self.last_messages
            ch.pipeline.messages = kept
        node._start_workers(load_model=False)
        node._create_inputs()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self._running = True
        self._spin = threading.Thread(target=self._loop, name='bench_executor', daemon=True)
        self._spin.start()

    def _loop(self) -> None:
        while self._running and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    @property
    def channel(self):
        return self.node.channels[0]

    def output_topics(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """(topic, type) of the outputs `names` (rows of ros/outputs.OUTPUTS: depth, info, points, mask,
        confidence, normals, ...), or of every output the node publishes."""
        publishers = self.channel.publishers
        if names is None:
            pubs = tuple(publishers.values())
        else:
            unknown = sorted(set(names) - set(OUTPUT_NAMES))
            if unknown:
                raise MgeoError(f'--outputs: unknown output(s) {unknown}; choose from {", ".join(OUTPUT_NAMES)}')
            pubs = tuple(publishers[n] for n in names)
        return sorted((pub.topic_name, f'{t.__module__.split(".")[0]}/msg/{t.__name__}')
                      for pub, t in ((p, p.msg_type) for p in pubs))

    def close(self) -> None:
        self._running = False
        self._spin.join(2)
        self.node.shutdown()
        self.executor.shutdown()
        self.node.destroy_node()


class SinkProcess:
    """The `bench.sink` child: the camera and the subscriber of every output."""

    def __init__(self, topics: list[tuple[str, str]], camera: tuple[str, int, int], compressed: str | None = None,
                 quality: int = JPEG_QUALITY) -> None:
        args = [sys.executable, '-m', 'mgeo_ros.bench.sink', '--camera', camera[0], str(camera[1]), str(camera[2])]
        if compressed:
            args += ['--compressed', compressed, '--quality', str(int(quality))]
        self.proc = subprocess.Popen(args + [f'{t}={ty}' for t, ty in topics], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        line = self.proc.stdout.readline().strip()
        if line != 'ready':
            raise MgeoError(f'bench sink did not start (said {line!r}, exit {self.proc.poll()})')

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise MgeoError(f'bench sink ended (exit {self.proc.poll()}) on {command!r}')
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.communicate(input='', timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_subscribed(served: ServedNode, topics: set[str], timeout: float = 20.0) -> None:
    pubs = [p for p in served.channel.publishers.values() if p.topic_name in topics]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in pubs) and served.channel.image_sub.get_publisher_count() > 0:
            time.sleep(0.3)  # let the sink's side of discovery finish too
            return
        time.sleep(0.05)
    raise MgeoError('the bench sink did not connect to the node in time')


def _rate(stream: dict) -> float:
    """Published frames per second from the sink's arrival times of one stream."""
    arrivals = stream['arrival_s']
    return (len(arrivals) - 1) / arrivals[-1] if len(arrivals) > 1 and arrivals[-1] > 0 else 0.0


def _median(values) -> float:
    return float(statistics.median(values)) if values else float('nan')


def transport_floor(node, messages: list, publishers: dict, frames: int, period: float) -> list[float]:
    """Thread CPU ms to publish one frame's `messages` (the node's own) with bare publishers on the same topics,
    per frame, `frames` times `period` apart."""
    bare = {name: node.create_publisher(type(msg), publishers[name].topic_name, publishers[name].qos_profile)
            for name, msg in messages}
    time.sleep(1.0)  # discovery: the sink matches the new publishers
    cpu = []
    next_at = time.monotonic()
    for _ in range(frames):
        t0 = time.thread_time()
        for name, msg in messages:
            bare[name].publish(msg)
        cpu.append((time.thread_time() - t0) * 1e3)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    for pub in bare.values():
        node.destroy_publisher(pub)
    return cpu


def bench_size(size: tuple[int, int], predictor, forward_ms: float | None, params: dict, seconds: float,
               camera_hz: float, rates: list[float], frames: int, compressed: str | None = None,
               quality: int = JPEG_QUALITY, param_set: dict | None = None, outputs: list[str] | None = None
               ) -> dict:
    """One frame size and parameter set; see the module docstring. `forward_ms` None: `predictor` runs the real
    model."""
    from mgeo_ros.runtime import Predictor

    width, height = size
    images = [camera_image(width, height, seed) for seed in range(frames)]
    if forward_ms is not None:
        backend = ReplayBackend(record_outputs(predictor, images), input_size=predictor.backend.input_size,
                                forward_ms=forward_ms, input_form=getattr(predictor.backend, 'input_form', 'float'))
        predictor = Predictor(backend, num_tokens=predictor.num_tokens,
                              mask_threshold=float(params.get('mask_threshold', 0.5)))
    param_set = dict(param_set or {})
    params = {**params, **param_set, **({'image_transport': 'compressed'} if compressed else {})}
    ns = f'/mgeo_bench_{os.getpid()}_{width}x{height}_{next(_RUNS)}'
    served = ServedNode(ns, params, predictor)
    sink = None
    try:
        topics = served.output_topics(outputs)
        sink = SinkProcess(topics, (ns, width, height), compressed, quality)
        _wait_subscribed(served, {t for t, _ in topics})
        stats = served.channel.stats
        sink.ask(f'stream {camera_hz} {WARMUP_S}')  # first-frame allocations, discovery
        stats.timings.clear()
        published0, dropped0, cpu0 = stats.processed, stats.dropped, time.process_time()
        stream = sink.ask(f'stream {camera_hz} {seconds}')
        cpu_s, published = time.process_time() - cpu0, stats.processed - published0
        timings = stats.timings
        own = [a + b for a, b in zip(timings.values('stage1_cpu'), timings.values('stage2_cpu'), strict=True)]
        forward = timings.values('forward')
        engine_hz = 1000.0 / (forward_ms if forward_ms is not None else _median(forward))
        period = 1.0 / max(1.0, _rate(stream))
        floor = transport_floor(served.node, served.last_messages, {
            name: served.channel.publishers[name] for name, _ in served.last_messages}, 50, period)
        result = {
            'size': f'{width}x{height}', 'input': f'{compressed} q{int(quality)}' if compressed else 'rgb8',
            'param_set': param_set, 'outputs': sorted(outputs) if outputs else 'all',
            'network_input': 'x'.join(map(str, predictor.network_size(width, height))),
            'forward': 'replayed' if forward_ms is not None else f'real ({predictor.backend_name})',
            'forward_ms': forward_ms if forward_ms is not None else _median(forward), 'engine_hz': engine_hz,
            'camera_hz': camera_hz, 'seconds': seconds, 'sent': stream['sent'], 'published': stream['published'],
            'published_hz': _rate(stream), 'dropped': stats.dropped - dropped0,
            'own_ms_median': _median(own), 'own_ms_p95': summarize(own).p95 if own else float('nan'),
            'process_cpu_ms_per_frame': cpu_s * 1e3 / published if published else float('nan'),
            'floor_ms_median': _median(floor), 'floor_messages': sorted(name for name, _ in served.last_messages),
            'latency_ms_median': _median(stream['latency_ms']),
            'stages': {k: dataclasses.asdict(v) for k, v in timings.summary().items()},
        }
        result['stage_ms'] = {name: _median(timings.values(key)) for name, key in STAGES.items()}
        result['stage_cpu_ms'] = {name: _median(timings.values(f'{key}_cpu')) for name, key in STAGES.items()}
        result['own_over_floor'] = result['own_ms_median'] / result['floor_ms_median']
        result['rates'] = [_rate_row(sink, rate, seconds, engine_hz, result) for rate in rates]
        result['received_by_sink'] = sink.ask('counts')
        return result
    finally:
        if sink is not None:
            sink.close()
        served.close()


def _rate_row(sink: SinkProcess, rate: float, seconds: float, engine_hz: float, result: dict) -> dict:
    """The node fed at one camera rate: published rate against min(camera, engine), latency median against
    2 x (forward + own)."""
    sink.ask(f'stream {rate} {min(seconds, 2.0)}')
    stream = sink.ask(f'stream {rate} {seconds}')
    bound = min(rate, engine_hz)
    published = _rate(stream)
    return {'camera_hz': rate, 'sent': stream['sent'], 'published': stream['published'], 'published_hz': published,
            'bound_hz': bound, 'published_over_bound': published / bound,
            'latency_ms_median': _median(stream['latency_ms']),
            'latency_goal_ms': 2.0 * (result['forward_ms'] + result['own_ms_median'])}


def run_node_bench(model, label: str, sizes, forward_ms: list[float] | None, seconds: float, camera_hz: float,
                   rates: list[float], frames: int, backend: str, params: dict,
                   compressed: str | list[str | None] | None = None, quality: int = JPEG_QUALITY,
                   param_sets: list[dict] | None = None, output_sets: list[list[str]] | None = None) -> dict:
    """Every size (forward_ms: one per size, or None for the real forward) x every camera input (`compressed`: one
    of None = rgb8 and 'jpeg', or a list of them) x every output set (the outputs the subscriber takes; none: all) x
    every parameter set (none: `params` alone); rates at the first of each only."""
    ros_env()
    inputs = compressed if isinstance(compressed, list) else [compressed]
    merged = {**BENCH_PARAMS, **params}
    if forward_ms is not None and len(forward_ms) not in (1, len(sizes)):
        raise MgeoError(f'--forward-ms: give one value or one per size ({len(sizes)}), got {forward_ms}')
    rclpy.init()
    try:
        probe = BenchDepthNode(merged, f'/mgeo_bench_probe_{os.getpid()}')
        cfg = dict(probe.cfg)  # the node's own parameter values
        probe.destroy_node()
        recorder = make_recorder(model, backend, cfg)
        results = []
        for i, size in enumerate(sizes):
            ms = None if forward_ms is None else forward_ms[i if len(forward_ms) > 1 else 0]
            runs = itertools.product(inputs, output_sets or [None], param_sets or [{}])
            for j, (camera, outputs, param_set) in enumerate(runs):
                results.append(bench_size(size, recorder, ms, merged, seconds, camera_hz,
                                          rates if i == j == 0 else [], frames, camera, quality, param_set,
                                          outputs))
    finally:
        rclpy.try_shutdown()
    meta = {'model': label, 'recorded_with': f'{recorder.backend.name} ({recorder.backend.device})',
            'num_tokens': recorder.num_tokens, 'frames_recorded': frames, 'params': merged,
            'input': ' + '.join(f'{c} q{int(quality)}' if c else 'rgb8' for c in inputs), 'seconds': seconds,
            'camera_hz': camera_hz, 'cpu_count': os.cpu_count(), 'load_avg': list(os.getloadavg())}
    return {'meta': meta, 'sizes': results}


def _cell(s: dict | None) -> str:
    return f"{s['median']:8.2f} {s['p95']:8.2f}" if s else f"{'-':>8} {'-':>8}"


def format_node_table(report: dict) -> str:
    """The table: per size, the rates, own CPU against the transport floor, latency, and the stages."""
    m = report['meta']
    lines = [f"mgeo bench --node: mgeo_depth_node in one process, its outputs (all, or a block's set) subscribed "
             f"from another process that also plays the camera; model {m['model']} ({m['num_tokens']} tokens, "
             f"outputs recorded on {m['recorded_with']}); params "
             + ', '.join(f'{k}={v}' for k, v in m['params'].items())]
    for r in report['sizes']:
        chosen = ', '.join(f'{k}={v}' for k, v in r.get('param_set', {}).items())
        if r.get('outputs', 'all') != 'all':
            chosen = f"outputs {'+'.join(r['outputs'])}" + (f'; {chosen}' if chosen else '')
        lines += ['', f"{r['size']} {r.get('input', 'rgb8')}" + (f" [{chosen}]" if chosen else '')
                  + f" (network {r['network_input']}), forward {r['forward']} {r['forward_ms']:.1f} ms, "
                      f"camera {r['camera_hz']:g} Hz for {r['seconds']:g} s: {r['sent']} sent, {r['published']} "
                      f"published, {r['dropped']} dropped (newest wins)"]
        lines.append(f"  published {r['published_hz']:.2f} Hz = {r['published_hz'] / r['engine_hz']:.2f} x the "
                     f"engine's {r['engine_hz']:.2f} Hz")
        lines.append(f"  own CPU per frame (stage threads) median {r['own_ms_median']:.2f} ms (p95 "
                     f"{r['own_ms_p95']:.2f}); process CPU per published frame {r['process_cpu_ms_per_frame']:.2f} ms")
        lines.append(f"  transport floor (the same {len(r['floor_messages'])} messages, bare publisher) median "
                     f"{r['floor_ms_median']:.2f} ms; own / floor {r['own_over_floor']:.2f}")
        lines.append(f"  latency stamp -> depth received, median {r['latency_ms_median']:.1f} ms")
        if 'stage_ms' in r:
            lines.append('  per frame (ms, median): ' + ', '.join(f'{k.replace("_", " ")} {v:.2f}'
                                                                    for k, v in r['stage_ms'].items()))
        if 'stage_cpu_ms' in r:
            lines.append('  CPU per frame (thread ms, median): ' + ', '.join(
                f'{k.replace("_", " ")} {v:.2f}' for k, v in r['stage_cpu_ms'].items()))
        head = f"  {'stage (ms)':<22} {'median':>8} {'p95':>8}"
        lines += [head, '  ' + '-' * (len(head) - 2)]
        stages = r['stages']
        for stage in [s for s in STAGE_ORDER if s in stages] + sorted(s for s in stages if s not in STAGE_ORDER):
            lines.append(f'  {stage:<22} {_cell(stages[stage])}')
        for row in r['rates']:
            lines.append(f"  camera {row['camera_hz']:6.1f} Hz: published {row['published_hz']:6.2f} Hz = "
                         f"{row['published_over_bound']:.2f} x min(camera, engine); latency median "
                         f"{row['latency_ms_median']:6.1f} ms (2 x (forward + own) = {row['latency_goal_ms']:.1f})")
    lines += ['', f"own = thread CPU time of stage 1 + stage 2 per frame; floor = thread CPU time of publishing the "
                  f"node's own messages of one frame; {m['cpu_count']} cpu, load average {m['load_avg'][0]:.1f}"]
    return '\n'.join(lines)
