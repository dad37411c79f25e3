"""The managed node's memory over configure → activate → deactivate → cleanup cycles while frames flow:
`python -m mgeo_ros.bench.memory --model MODEL --lifecycle-cycles 20`.

Runs `mgeo_depth_node --lifecycle` as its own process (the given model and backend, every output subscribed by this
process), plays a camera at `rate` Hz the whole time, and drives the node through the four transitions `cycles`
times over its lifecycle services, holding it active for `active_s` seconds each time. After each cleanup it samples
the node's resident set size, threads and open file descriptors. A cleanup that frees what its configure made leaves
them flat from the second cycle on (the first one loads the libraries and the allocator's arenas for good).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from mgeo_ros.bench.live import Camera, camera_frames, start_node, stop_node
from mgeo_ros.bench.node import ros_env
from mgeo_ros.errors import MgeoError

TRANSITIONS = ('configure', 'activate', 'deactivate', 'cleanup')


def process_counts(pid: int) -> dict:
    """Of process `pid` (Linux /proc): resident set size and its private (anonymous), shared-memory and file-backed
    parts in MiB, threads and open file descriptors."""
    keys = {'VmRSS:': 'rss_mib', 'RssAnon:': 'rss_anon_mib', 'RssShmem:': 'rss_shmem_mib',
            'RssFile:': 'rss_file_mib', 'Threads:': 'threads'}
    out: dict = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            word = line.split(maxsplit=1)[0] if line.strip() else ''
            if word in keys:
                value = int(line.split()[1])
                out[keys[word]] = value if word == 'Threads:' else value / 1024.0
    if 'rss_mib' not in out or 'threads' not in out:
        raise OSError(f'no VmRSS/Threads for process {pid}')
    out['fds'] = len(os.listdir(f'/proc/{pid}/fd'))
    return out


def trend(values: list[float]) -> dict:
    """Over per-cycle samples from the second cycle on: growth of the lowest of the last third against the larger
    of the first two (percent), the median of the pairwise slopes (Theil-Sen; per cycle, and as percent of that base
    over the whole run), and the mean of the last third against the middle third (percent). A leak raises every
    late sample; a single sample that dips or jumps (the allocator handing a block back, or not yet, just before it
    is read) moves neither the base, the growth nor the slope."""
    base = np.asarray(values[1:], dtype=np.float64)
    if base.size < 2:
        return {'growth_percent': 0.0, 'slope_per_cycle': 0.0, 'slope_percent_over_run': 0.0,
                'last_vs_middle_third_percent': 0.0}
    start = float(base[:2].max())
    i, j = np.triu_indices(base.size, k=1)
    slope = float(np.median((base[j] - base[i]) / (j - i)))
    third = max(1, base.size // 3)
    middle, last = base[third:2 * third] if base.size >= 3 else base[:1], base[-third:]
    return {'growth_percent': 100.0 * (float(last.min()) - start) / start, 'slope_per_cycle': slope,
            'slope_percent_over_run': 100.0 * slope * (base.size - 1) / start,
            'last_vs_middle_third_percent': 100.0 * (last.mean() - middle.mean()) / middle.mean()}


class _Lifecycle:
    """The node's lifecycle services, called from this process."""

    def __init__(self, camera: Camera, node_path: str) -> None:
        from lifecycle_msgs.srv import ChangeState

        self._request = ChangeState.Request
        self.client = camera.node.create_client(ChangeState, f'{node_path}/change_state')

    def change(self, label: str, timeout: float) -> None:
        from lifecycle_msgs.msg import Transition

        if not self.client.wait_for_service(timeout_sec=timeout):
            raise MgeoError(f'the node offers no {self.client.srv_name} service after {timeout} s; is it started '
                            'with --lifecycle?')
        ids = {'configure': Transition.TRANSITION_CONFIGURE, 'activate': Transition.TRANSITION_ACTIVATE,
               'deactivate': Transition.TRANSITION_DEACTIVATE, 'cleanup': Transition.TRANSITION_CLEANUP}
        request = self._request()
        request.transition.id = ids[label]
        future = self.client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise MgeoError(f'lifecycle {label} did not answer in {timeout} s')
            time.sleep(0.01)
        if not future.result().success:
            raise MgeoError(f'lifecycle {label} failed (see the node log)')


def run_cycles(model: str, backend: str, size: tuple[int, int], rate: float, cycles: int, active_s: float,
               params: dict, timeout: float = 300.0) -> dict:
    """Cycle the managed node `cycles` times under a `rate` Hz camera; per-cycle samples and their trends."""
    ros_env()
    ns = f'/mgeo_lifecycle_{os.getpid()}'
    proc, log = start_node(ns, {'model': model, 'backend': backend, **params}, lifecycle=True)
    camera = Camera(ns)
    frames, info = camera_frames(*size)
    stop = threading.Event()
    sent = [0]

    def play() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            camera.publish(frames[sent[0] % len(frames)], info)
            sent[0] += 1
            next_at += 1.0 / rate
            stop.wait(max(0.0, next_at - time.monotonic()))

    player = threading.Thread(target=play, name='mgeo_lifecycle_camera', daemon=True)
    samples: list[dict] = []
    topics: list[str] = []
    try:
        lifecycle = _Lifecycle(camera, f'{ns}/mgeo_depth_node')
        player.start()
        for cycle in range(1, cycles + 1):
            lifecycle.change('configure', timeout)
            if cycle == 1:
                topics = camera.subscribe_outputs(timeout=timeout)
            lifecycle.change('activate', timeout)
            before = len(camera.arrivals)
            time.sleep(active_s)
            published = len(camera.arrivals) - before
            lifecycle.change('deactivate', timeout)
            lifecycle.change('cleanup', timeout)
            samples.append({'cycle': cycle, **process_counts(proc.pid), 'depth_received': published})
    finally:
        stop.set()
        player.join(2.0)
        camera.close()
        stop_node(proc, log)
    rss = [s['rss_mib'] for s in samples]
    return {'model': model, 'backend': backend, 'size': f'{size[0]}x{size[1]}', 'rate_hz': rate, 'cycles': cycles,
            'active_s': active_s, 'frames_sent': sent[0], 'topics': topics, 'samples': samples,
            'rss': trend(rss), 'threads': trend([s['threads'] for s in samples]),
            'fds': trend([s['fds'] for s in samples]), 'rss_min_mib': min(rss), 'node_log': log.name}


def _part(first: dict, last: dict, key: str) -> str:
    """One part of the resident size after cycle 2 -> after the last cycle (MiB), or '?' where /proc lacks it."""
    return f"{first[key]:.1f} -> {last[key]:.1f} MiB" if key in first and key in last else '?'


def summary(r: dict) -> str:
    """One paragraph: RSS after cycle 2 and the last (and which part moved), growth, slope, threads and descriptors."""
    first, last = r['samples'][min(1, len(r['samples']) - 1)], r['samples'][-1]
    return (f"mgeo_depth_node --lifecycle, {r['cycles']} cycles (configure, activate {r['active_s']:g} s, deactivate, "
            f"cleanup) under a {r['size']} camera at {r['rate_hz']:g} Hz ({r['backend']}): RSS after cycle 2 "
            f"{first['rss_mib']:.1f} MiB, after cycle {last['cycle']} {last['rss_mib']:.1f} MiB "
            f"({r['rss']['growth_percent']:+.2f} %; min {r['rss_min_mib']:.1f}), slope "
            f"{r['rss']['slope_per_cycle']:+.2f} MiB/cycle ({r['rss']['slope_percent_over_run']:+.2f} % over the run), "
            f"last third vs middle third {r['rss']['last_vs_middle_third_percent']:+.2f} %; of it private "
            f"{_part(first, last, 'rss_anon_mib')}, files {_part(first, last, 'rss_file_mib')}, shared memory "
            f"{_part(first, last, 'rss_shmem_mib')}; threads "
            f"{first['threads']} -> {last['threads']}, fds {first['fds']} -> {last['fds']}; depth received per "
            f"active phase: {', '.join(str(s['depth_received']) for s in r['samples'])}")
