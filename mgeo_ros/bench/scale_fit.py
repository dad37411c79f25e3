"""`mgeo bench --scale-fit`: the per-frame cost of the scale anchors' fit at a frame size, for each kind of anchor
(a cloud through extrinsics, a sparse registered depth image, a scan) and for the ground plane, on synthetic data
whose true scale is known (the table also shows that each fit found it)."""
from __future__ import annotations

import math
import time
from functools import partial

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.runtime.scale_anchors import (
    fit_anchors,
    fit_ground,
    pixel_anchors_from_depth,
    point_anchors,
    point_anchors_from_scan,
)

TRUE_SCALE = 1.7
PITCH_DEG = 20.0
HEIGHT_M = 0.5


def _frame(width: int, height: int, seed: int):
    """A floor under a wall 4 m ahead, seen from HEIGHT_M pitched PITCH_DEG down, with 1 % depth noise."""
    intr = Intrinsics.from_fov(math.radians(70), width, height)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    p = math.radians(PITCH_DEG)
    up = np.array([0.0, -math.cos(p), -math.sin(p)])
    down = -(rays @ up)
    t = np.minimum(np.where(down > 1e-6, HEIGHT_M / np.maximum(down, 1e-6), np.inf), 4.0)
    depth = (t * np.exp(np.random.default_rng(seed).normal(0.0, 0.01, t.shape))).astype(np.float32)
    return intr, depth


def _time(fn, runs: int, warmup: int) -> tuple[float, object]:
    for _ in range(warmup):
        fn()
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3, result


def _size_rows(width: int, height: int, points: int, runs: int, warmup: int, rng: np.random.Generator) -> list[dict]:
    intr, truth = _frame(width, height, int(rng.integers(1 << 30)))
    predicted = truth / TRUE_SCALE
    valid = np.isfinite(predicted)
    cloud = unproject(truth, intr).reshape(-1, 3)
    cloud = cloud[rng.choice(cloud.shape[0], size=min(points, cloud.shape[0]), replace=False)]
    lidar = RigidTransform(np.eye(3), np.array([0.05, -0.1, 0.0]))   # a LiDAR beside the camera
    cloud = cloud - lidar.translation                                 # its points in its own frame
    floor_points = unproject(predicted, intr)
    sparse = np.full(truth.shape, np.nan, np.float32)
    pick = rng.choice(truth.size, size=min(points, truth.size), replace=False)
    sparse.reshape(-1)[pick] = truth.reshape(-1)[pick]
    laser = RigidTransform.from_xyz_quaternion([0, 0, 0, 0.5, -0.5, 0.5, 0.5])
    beams = np.linspace(-0.6, 0.6, min(points, 1081))
    col = np.clip(np.rint(intr.cx - intr.fx * np.tan(beams)), 0, width - 1).astype(int)
    ranges = truth[int(round(intr.cy)), col] / np.cos(beams)
    # (on receipt: the message's anchors, made once in the subscription callback; per frame: match + fit)
    cases = {
        'points (cloud, extrinsics)': lambda: point_anchors(cloud, lidar),
        'depth (sparse image)': lambda: pixel_anchors_from_depth(sparse),
        'scan': lambda: point_anchors_from_scan(ranges, beams[0], beams[1] - beams[0], 0.05, 30.0, laser),
    }
    rows = []
    for name, convert in cases.items():
        receipt_ms, anchors = _time(convert, runs, warmup)
        ms, fit = _time(partial(fit_anchors, anchors, intr, predicted, valid, 20), runs, warmup)
        rows.append(_row(width, height, name, ms, receipt_ms, fit))
    ms, fit = _time(lambda: fit_ground(floor_points, valid, HEIGHT_M, PITCH_DEG), runs, warmup)
    rows.append(_row(width, height, 'ground plane', ms, 0.0, fit))
    return rows


def _row(width: int, height: int, name: str, ms: float, receipt_ms: float, fit) -> dict:
    return {'size': f'{width}x{height}', 'anchors': name, 'ms': ms, 'receipt_ms': receipt_ms,
            'matched': fit.matched, 'scale': fit.scale, 'true_scale': TRUE_SCALE, 'reason': fit.reason}


def run_scale_fit_bench(sizes: list[tuple[int, int]], points: int = 10_000, runs: int = 50, warmup: int = 5,
                        seed: int = 0) -> dict:
    """Median ms per frame of each fit (matching -> robust fit; ground: the floor search on the predicted points),
    the ms the anchors' message conversion costs once on receipt (the subscription's thread, not the frame's), and
    the scale each fit found."""
    rng = np.random.default_rng(seed)
    rows = [row for width, height in sizes for row in _size_rows(width, height, points, runs, warmup, rng)]
    return {'rows': rows, 'points': points, 'runs': runs}


def format_scale_fit_table(report: dict) -> str:
    lines = [f"scale fit per frame ({report['points']} anchor points, median of {report['runs']} runs; "
             'on receipt: converting the message, once, in its callback)',
             f"{'size':<10}{'anchors':<30}{'ms/frame':>9}{'on receipt':>11}{'matched':>9}{'scale':>9}"
             f"  (true {TRUE_SCALE})"]
    for r in report['rows']:
        scale = f"{r['scale']:.4f}" if r['scale'] is not None else r['reason']
        receipt = f"{r['receipt_ms']:.3f}" if r['receipt_ms'] else '-'
        lines.append(f"{r['size']:<10}{r['anchors']:<30}{r['ms']:>9.3f}{receipt:>11}{r['matched']:>9}{scale:>9}")
    return '\n'.join(lines)
