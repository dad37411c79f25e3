"""Measure several cameras on one node against one node per camera (docs/node.md "Several cameras").

  .venv/bin/python test/node_measure_multicam.py forward --b1 m_b1.onnx --b4 m_b4.onnx
  .venv/bin/python test/node_measure_multicam.py multi  --model m_b4.onnx --seconds 30
  .venv/bin/python test/node_measure_multicam.py single --model m_b1.onnx --seconds 30

forward: ONNX Runtime throughput of one batch-4 forward against four batch-1 forwards (same process, interleaved).
multi: one node serving four cameras fed at 10 Hz each from this process; per-camera output rate, image publish ->
depth received latency, and the node's peak RSS (VmHWM). single: the same four streams into four single-camera
nodes; their rates, latencies and the sum of their peak RSS. Every output is subscribed in both. Not a test (no
test_ prefix): numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(5 + os.getpid() % 90))
from mgeo_ros.ros.fastdds import NEW, profile_env  # noqa: E402 (Fast DDS 2.x reads only the old variable)

for _name, _value in profile_env(os.environ.get(NEW, str(REPO / 'config' / 'fastdds_large_frames.xml'))).items():
    os.environ.setdefault(_name, _value)

from node_harness import MultiCameraHarness, NodeHarness, start_multi_node, start_node, stop_node  # noqa: E402

from mgeo_ros.bench.node import camera_image  # noqa: E402 (the bench's camera frames)

CAMERAS = ['front', 'left', 'right', 'rear']
OUTPUTS = MultiCameraHarness.OUTPUTS  # every output of the node subscribed, in both setups


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, MiB."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024.0
    return float('nan')


def _intrinsics(width: int, height: int, i: int):
    from mgeo_ros.geometry import Intrinsics

    f = (0.75 + 0.05 * i) * width
    return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)


def measure_forward(b1: str, b4: str, repeats: int) -> dict:
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.preprocess import Preprocessor

    one, four = Predictor(b1, backend='onnxruntime'), Predictor(b4, backend='onnxruntime')
    pre = Preprocessor(four.num_tokens, four.backend.input_size)
    images = np.concatenate([pre(camera_image(640, 480, i)).copy() for i in range(4)])
    tokens = four.num_tokens
    one.backend.forward_batch(images, tokens)
    four.backend.forward_batch(images, tokens)  # warm-up
    t_single, t_batch = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        for i in range(4):
            one.backend.forward(images[i:i + 1], tokens)
        t_single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        four.backend.forward_batch(images, tokens)
        t_batch.append(time.perf_counter() - t0)
    s, b = float(np.median(t_single)), float(np.median(t_batch))
    return {'input': list(four.backend.input_size), 'repeats': repeats,
            'four_batch1_ms': s * 1e3, 'one_batch4_ms': b * 1e3,
            'frames_per_s_batch1': 4 / s, 'frames_per_s_batch4': 4 / b, 'speedup': s / b,
            'load_avg': os.getloadavg()}


def _feed(publish, seconds: float, rate: float, width: int, height: int) -> dict:
    """Publish every camera at `rate` for `seconds`, cameras staggered within a period; returns sent times."""
    frames = [camera_image(width, height, i) for i in range(len(CAMERAS))]
    intr = [_intrinsics(width, height, i) for i in range(len(CAMERAS))]
    sent: dict = {cam: {} for cam in CAMERAS}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        for i, cam in enumerate(CAMERAS):
            now_ns = time.time_ns()
            key = (now_ns // 1_000_000_000, now_ns % 1_000_000_000)
            sent[cam][key] = time.monotonic()
            publish(i, cam, frames[i], key, intr[i])
            time.sleep(max(0.0, start + (n + (i + 1) / len(CAMERAS)) / rate - time.monotonic()))
        n += 1
    return sent


def _per_camera(sent: dict, arrivals: dict, seconds: float) -> dict:
    out = {}
    for cam in CAMERAS:
        got = {k: t for k, t in arrivals[cam].items() if k in sent[cam]}
        lat = np.array([got[k] - sent[cam][k] for k in got]) * 1e3
        out[cam] = {'sent': len(sent[cam]), 'published': len(got), 'rate_hz': len(got) / seconds,
                    'latency_ms_median': float(np.median(lat)) if len(lat) else None,
                    'latency_ms_p90': float(np.percentile(lat, 90)) if len(lat) else None}
    return out


def measure_multi(model: str, seconds: float, rate: float, warmup: float, threads: int = 0) -> dict:
    ns = f'/mcm{os.getpid()}'
    log = Path(f'/tmp/node_measure_multi_{os.getpid()}.log')
    proc = start_multi_node(ns, CAMERAS, {'model': model, 'backend': 'onnxruntime', 'diagnostics_period': 0.5,
                                          'intra_op_threads': threads},
                            log_path=log)
    harness = MultiCameraHarness(ns, CAMERAS, 'measure_multi', outputs=OUTPUTS)
    try:
        harness.wait_ready(proc, timeout=180)

        def publish(i, cam, rgb, key, intr):
            harness.publish(cam, rgb, key, f'{cam}_optical', intrinsics=intr)

        _feed(publish, warmup, rate, 640, 480)
        sent = _feed(publish, seconds, rate, 640, 480)
        time.sleep(3.0)
        with harness.lock:
            arrivals = {cam: dict(harness.arrival[(cam, 'depth/image')]) for cam in CAMERAS}
        result = {'cameras': _per_camera(sent, arrivals, seconds), 'peak_rss_mb': peak_rss_mb(proc.pid),
                  'model_status': harness.status('model'),
                  'camera_stages': {cam: {k: v for k, v in harness.status(f'{cam} depth').items()
                                          if k.startswith('latency_ms.')} for cam in CAMERAS}}
    finally:
        harness.close()
        stop_node(proc)
    return result


def measure_single(model: str, seconds: float, rate: float, warmup: float) -> dict:
    procs, harnesses = {}, {}
    try:
        for cam in CAMERAS:
            ns = f'/scm{os.getpid()}_{cam}'
            procs[cam] = start_node(ns, {'model': model, 'backend': 'onnxruntime', 'diagnostics_period': 0.5},
                                    log_path=Path(f'/tmp/node_measure_single_{os.getpid()}_{cam}.log'))
            harnesses[cam] = NodeHarness(ns, f'measure_{cam}', outputs=OUTPUTS)
        for cam in CAMERAS:
            harnesses[cam].wait_ready(procs[cam], timeout=180)

        def publish(i, cam, rgb, key, intr):
            harnesses[cam].publish(rgb, key, frame_id=f'{cam}_optical', intrinsics=intr)

        _feed(publish, warmup, rate, 640, 480)
        sent = _feed(publish, seconds, rate, 640, 480)
        time.sleep(3.0)
        arrivals = {}
        for cam in CAMERAS:
            with harnesses[cam].lock:
                arrivals[cam] = dict(harnesses[cam].arrival['depth/image'])
        rss = {cam: peak_rss_mb(procs[cam].pid) for cam in CAMERAS}
        result = {'cameras': _per_camera(sent, arrivals, seconds), 'peak_rss_mb': rss,
                  'peak_rss_mb_sum': sum(rss.values())}
    finally:
        for h in harnesses.values():
            h.close()
        for p in procs.values():
            stop_node(p)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=('forward', 'multi', 'single'))
    parser.add_argument('--model', default='')
    parser.add_argument('--b1', default='')
    parser.add_argument('--b4', default='')
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--warmup', type=float, default=5.0)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=0, help='multi: the node\'s intra_op_threads (0 = its default)')
    parser.add_argument('--out', default='')
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.mode == 'forward':
        result = measure_forward(args.b1, args.b4, args.repeats)
    elif args.mode == 'multi':
        result = measure_multi(args.model, args.seconds, args.rate, args.warmup, args.threads)
    else:
        result = measure_single(args.model, args.seconds, args.rate, args.warmup)
    result.update(mode=args.mode, threads=args.threads,
                  model=args.model or args.b4, seconds=args.seconds, rate_hz=args.rate,
                  load_avg_before=load_before, load_avg_after=os.getloadavg(), cpu_count=os.cpu_count())
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
