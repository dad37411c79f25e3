"""Measure mgeo_depth_node across processes: end-to-end latency (image publish -> depth receive), per-stage node
timings from /diagnostics, and frames published / dropped / lost at several input rates.

  .venv/bin/python test/node_measure.py --model tiny.onnx --backend onnxruntime --size 640x480 --rates 10,30,100

Not a test (no test_ prefix): the numbers depend on the machine. Uses the harness of the node tests.
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

from node_harness import NodeHarness, start_node, stop_node  # noqa: E402

from mgeo_ros.bench.node import bench_intrinsics, camera_image  # noqa: E402 (the bench's camera frames)


def _counters(diag: dict) -> dict:
    keys = ('frames_received', 'frames_published', 'frames_dropped', 'frames_lost_before_node')
    return {k: int(diag.get(k, 0)) for k in keys}


def run_rate(harness: NodeHarness, rate: float, seconds: float, size: tuple[int, int], intr) -> dict:
    width, height = size
    frames = [camera_image(width, height, i) for i in range(4)]
    harness.wait_for(lambda: False, 1.0)
    before = _counters(harness.latest_diagnostics())
    sent: dict = {}
    count = int(rate * seconds)
    t_next = time.monotonic()
    for i in range(count):
        now_ns = time.time_ns()  # real stamps, so the node's since_stamp latency is meaningful
        key = (now_ns // 1_000_000_000, now_ns % 1_000_000_000)
        sent[key] = time.monotonic()
        harness.publish(frames[i % len(frames)], key, intrinsics=intr)
        t_next += 1.0 / rate
        time.sleep(max(0.0, t_next - time.monotonic()))
    harness.wait_for(lambda: key in harness.received['depth/image'], 15)
    time.sleep(1.0)
    after = harness.latest_diagnostics()
    with harness.lock:
        got = {k: t for k, t in harness.arrival['depth/image'].items() if k in sent}
    latency = np.array([got[k] - sent[k] for k in got]) * 1e3
    delta = {k: v - before[k] for k, v in _counters(after).items()}
    return {
        'rate_hz': rate, 'sent': count, 'depth_received': len(got),
        'node_received': delta['frames_received'], 'published': delta['frames_published'],
        'dropped_by_newest_wins': delta['frames_dropped'], 'lost_before_node': delta['frames_lost_before_node'],
        'e2e_latency_ms': {'median': float(np.median(latency)), 'p90': float(np.percentile(latency, 90)),
                           'max': float(latency.max())} if len(latency) else None,
        'stages_ms': {k.split('.', 1)[1]: after[k] for k in sorted(after) if k.startswith('latency_ms.')},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', required=True)
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--size', default='640x480')
    parser.add_argument('--rates', default='10,30,100')
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--num-tokens', type=int, default=1200)
    parser.add_argument('--out', default='')
    args = parser.parse_args()

    width, height = (int(v) for v in args.size.split('x'))
    intr = bench_intrinsics(width, height)
    ns = f'/measure{os.getpid()}'
    log = Path(args.out).with_suffix('.node.log') if args.out else Path(f'/tmp/node_measure_{os.getpid()}.log')
    proc = start_node(ns, {'model': args.model, 'backend': args.backend, 'num_tokens': args.num_tokens,
                           'diagnostics_period': 0.5}, log_path=log)
    harness = NodeHarness(ns, 'measure')
    results = []
    try:
        harness.wait_ready(proc, timeout=120)
        run_rate(harness, 5.0, 2.0, (width, height), intr)  # warm-up
        for rate in (float(r) for r in args.rates.split(',')):
            result = run_rate(harness, rate, args.seconds, (width, height), intr)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        harness.close()
        stop_node(proc)
    summary = {'model': args.model, 'backend': args.backend, 'size': args.size, 'num_tokens': args.num_tokens,
               'cpu_count': os.cpu_count(), 'load_avg': os.getloadavg(), 'results': results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
