"""Writes test/data/frame_golden/frames.npz: one camera's frames through the node's per-frame path as it stood
before the frame stage (postprocess, scale smoothing, validity, flying pixels, min_confidence, normals, confidence,
cloud), kept as the reference `test_runtime_frame_stage.py` compares the frame stage with.

Run once from a checkout holding that path: `python test/make_frame_golden.py`.
"""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.ros import cloud
from mgeo_ros.ros.out_buffers import OutputBuffers
from mgeo_ros.ros.pipeline import FramePipeline
from mgeo_ros.ros.scale_filter import ScaleFilter
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.flying_pixels import DepthJumpTest
from mgeo_ros.runtime.postprocess import postprocess
from mgeo_ros.runtime.prediction import Prediction

OUT = Path(__file__).parent / 'data' / 'frame_golden' / 'frames.npz'
NET = (21, 16)  # network W, H
FRAME = (48, 36)
CASES = {  # name: (cfg overrides, with normal head, camera intrinsics or None)
    'plain': ({}, False, None),
    'head_maxdepth_inf': ({'max_depth': 3.2, 'inf_beyond_max_depth': True}, True, None),
    'flying_angle_conf': ({'flying_pixel_max_jump': 0.05, 'flying_pixel_max_view_angle': 70.0,
                           'min_confidence': 0.6, 'max_depth': 4.0}, False,
                          Intrinsics(45.0, 44.0, 23.0, 18.5, 48, 36)),
    'head_angle_smooth': ({'flying_pixel_max_view_angle': 60.0, 'scale_smoothing': 0.7}, True,
                          Intrinsics(38.0, 38.0, 24.0, 17.0, 48, 36)),
}
BASE = {'scale_smoothing': 0.0, 'scale_reset_ratio': 1.5, 'max_depth': 0.0, 'inf_beyond_max_depth': False,
        'flying_pixel_max_jump': 0.0, 'flying_pixel_radius': 1, 'flying_pixel_max_view_angle': 0.0,
        'min_confidence': 0.0, 'points_stride': 1, 'points_color': False, 'points_normals': False,
        'points_organized': True}


def raw_frame(seed: int, with_normal: bool) -> RawOutput:
    """A slanted plane with a box in front of it, some holes and a sky band: edges, flying pixels, invalid areas."""
    rng = np.random.default_rng(seed)
    w, h = NET
    u = np.linspace(-0.6, 0.6, w, dtype=np.float32)[None, :]
    v = np.linspace(-0.45, 0.45, h, dtype=np.float32)[:, None]
    z = 1.5 + 0.8 * v + 0.3 * u + 0.05 * rng.standard_normal((h, w)).astype(np.float32)
    z[5:11, 7:14] -= 0.7  # a box in front
    points = np.stack([u * z, v * z, z - 0.2], axis=-1).astype(np.float32)  # shift 0.2 for the recovery to find
    mask = np.clip(0.9 + 0.1 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)
    mask[:3] = 0.1  # sky
    mask[rng.random((h, w)) < 0.05] = 0.3
    points[12, 4] = np.nan
    normal = None
    if with_normal:
        normal = rng.standard_normal((h, w, 3)).astype(np.float32) * 0.2 + np.array([0, 0, -1], np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return RawOutput(points, mask, 2.0 + 0.1 * seed, normal)


def run_case(cfg: dict, with_head: bool, intr) -> dict[str, np.ndarray]:
    """Three frames through the old per-frame path; the arrays it published for each."""
    fake = SimpleNamespace(scale=ScaleFilter(cfg['scale_smoothing'], cfg['scale_reset_ratio']),
                           stats=SimpleNamespace(lock=threading.Lock()), _jump_test=DepthJumpTest(),
                           buffers=OutputBuffers(), _normals=FramePipeline._normals)
    out: dict[str, list] = {k: [] for k in ('depth', 'mask', 'confidence', 'normals', 'cloud', 'scalars')}
    for seed in range(3):
        raw = raw_frame(seed, with_head)
        pred = Prediction(**postprocess(raw, FRAME, intr, 0.5))
        depth, valid, beyond = FramePipeline._stabilized_depth(fake, pred, cfg)
        valid, beyond = FramePipeline._remove_unreliable(fake, pred, depth, valid, beyond, cfg)
        depth_nan = np.where(valid, depth, np.float32(np.nan)).astype(np.float32)
        shown = depth_nan.copy()
        if cfg['inf_beyond_max_depth'] and beyond is not None:
            shown[beyond] = np.inf
        normals = FramePipeline._normals(pred.normals, pred.intrinsics, depth_nan, valid)
        msg = FramePipeline._cloud(fake, pred, depth_nan, valid, None, None, cfg)
        xyz = cloud.unpack_points(msg.data, msg.height, msg.width, msg.point_step, msg.row_step, msg.fields,
                                  msg.is_bigendian)[0]
        i = pred.intrinsics
        out['depth'].append(shown)
        out['mask'].append(valid)
        out['confidence'].append(pred.confidence)
        out['normals'].append(normals)
        out['cloud'].append(xyz)
        out['scalars'].append([i.fx, i.fy, i.cx, i.cy, pred.metric_scale, fake.scale.value, pred.shift])
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    arrays = {}
    for name, (over, head, intr) in CASES.items():
        for key, value in run_case({**BASE, **over}, head, intr).items():
            arrays[f'{name}/{key}'] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f'wrote {OUT} ({OUT.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
