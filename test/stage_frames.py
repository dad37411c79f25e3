"""The seeded network outputs the frame-stage tests feed: a slanted plane with a box in front of it, holes and a sky.

Not a test module (no test_ prefix); imported by test/runtime/test_runtime_frame_stage.py and the node's stage-two
test in test/ros/test_node_confidence_normals.py.
"""
from __future__ import annotations

import numpy as np

from mgeo_ros.runtime.backends.base import RawOutput

NET = (21, 16)  # network W, H


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
