"""The node's memory under a stream: `python -m mgeo_ros.bench.memory --minutes M` (with `--lifecycle-cycles N`:
the managed node cycled N times under the stream, bench/lifecycle_memory.py).

Runs `mgeo_depth_node` as its own process (the given model and backend, every output subscribed by this process),
feeds it rgb8 Image + CameraInfo at `--rate` Hz for `--minutes`, and samples the node's resident set size (VmRSS)
every `--every` seconds. Reported: RSS after the warm-up and at the end, the growth in percent, and the slope over
the second half (least squares, MiB per minute): flat memory means frame-size buffers are reused and every queue
and statistics window is bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from mgeo_ros.bench.live import Camera, camera_frames, start_node, stop_node
from mgeo_ros.bench.node import ros_env
from mgeo_ros.cli_args import positive_int, size_wxh


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid` (Linux /proc), MiB."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise OSError(f'no VmRSS for process {pid}')


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    t, m = np.array(samples, dtype=np.float64).T
    return float(np.polyfit(t / 60.0, m, 1)[0]) if len(samples) > 1 else 0.0


def run(model: str, backend: str, size: tuple[int, int], rate: float, minutes: float, every: float, warmup: float,
        params: dict) -> dict:
    ros_env()
    ns = f'/mgeo_memory_{os.getpid()}'
    proc, log = start_node(ns, {'model': model, 'backend': backend, **params})
    camera = Camera(ns)
    samples: list[tuple[float, float]] = []
    sent = 0
    try:
        topics = camera.subscribe_outputs(timeout=300)
        frames, info = camera_frames(*size)
        start = time.monotonic()
        end, next_sample, next_frame = start + warmup + minutes * 60.0, start + warmup, start
        while time.monotonic() < end:
            camera.publish(frames[sent % len(frames)], info)
            sent += 1
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start - warmup, rss_mib(proc.pid)))
                next_sample += every
            next_frame += 1.0 / rate
            time.sleep(max(0.0, next_frame - time.monotonic()))
        status = dict(camera.status)
    finally:
        camera.close()
        stop_node(proc, log)
    first, last = samples[0][1], samples[-1][1]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    return {'model': model, 'backend': status.get('backend', backend), 'size': f'{size[0]}x{size[1]}',
            'rate_hz': rate, 'minutes': minutes, 'frames_sent': sent,
            'frames_published': int(status.get('frames_published', 0)), 'topics': topics,
            'rss_start_mib': first, 'rss_end_mib': last, 'rss_max_mib': max(m for _, m in samples),
            'growth_percent': 100.0 * (last - first) / first, 'second_half_slope_mib_per_min': slope_mib_per_min(half),
            'samples': samples, 'node_log': log.name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', required=True, help='model file or checkpoint directory the node loads')
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--size', type=size_wxh, default=(640, 480), help='frame size WxH (640x480)')
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate, Hz (10)')
    parser.add_argument('--minutes', type=float, default=20.0, help='streaming time after the warm-up (20)')
    parser.add_argument('--every', type=float, default=10.0, help='seconds between RSS samples (10)')
    parser.add_argument('--warmup', type=float, default=30.0, help='seconds streamed before the first sample (30)')
    parser.add_argument('--param', action='append', default=[], metavar='NAME=VALUE', help='a node parameter')
    parser.add_argument('--lifecycle-cycles', type=positive_int, default=None, metavar='N',
                        help='instead, run the managed node (--lifecycle) through N configure, activate, deactivate, '
                             'cleanup cycles under the stream, sampling RSS, threads and fds after each cleanup')
    parser.add_argument('--active', type=float, default=2.0, metavar='S',
                        help='--lifecycle-cycles: seconds active per cycle (2)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of the summary')
    args = parser.parse_args(argv)
    from mgeo_ros.bench.node import parse_value

    params = {k.strip(): parse_value(v) for k, _, v in (p.partition('=') for p in args.param)}
    width, height = args.size
    if args.lifecycle_cycles:
        from mgeo_ros.bench.lifecycle_memory import run_cycles, summary

        r = run_cycles(args.model, args.backend, (width, height), args.rate, args.lifecycle_cycles, args.active,
                       params)
        print(json.dumps(r, indent=2) if args.json else summary(r))
        return 0
    r = run(args.model, args.backend, (width, height), args.rate, args.minutes, args.every, args.warmup, params)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"mgeo_depth_node memory, {r['size']} at {r['rate_hz']:g} Hz for {r['minutes']:g} min ({r['backend']}, "
              f"every output subscribed): {r['frames_sent']} sent, {r['frames_published']} published; RSS "
              f"{r['rss_start_mib']:.1f} -> {r['rss_end_mib']:.1f} MiB ({r['growth_percent']:+.2f} %, max "
              f"{r['rss_max_mib']:.1f}), second half {r['second_half_slope_mib_per_min']:+.3f} MiB/min")
    return 0


if __name__ == '__main__':
    sys.exit(main())
