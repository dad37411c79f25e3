"""The flying-pixel figures: GT occlusion edges (not steep slopes), the flying/non-edge split, and the shares."""
from __future__ import annotations

import numpy as np

from mgeo_ros.eval.flying_pixels import classify, figures, grid_reference, gt_discontinuities, scale_aligned

H, W = 96, 128


def _scene(horizon: float = 25.0) -> np.ndarray:
    """A floor-like ramp (continuous; steeper the closer `horizon` is to row 0) with a box in front of it: one
    occlusion boundary."""
    rows = np.arange(H, dtype=np.float32)[:, None]
    gt = np.broadcast_to(30.0 / (rows + horizon) + 1.0, (H, W)).astype(np.float32)
    gt = gt.copy()
    gt[30:60, 40:80] = 0.7
    return gt


def test_occlusion_edges_are_found_and_a_continuous_ramp_is_not():
    gt = _scene(horizon=10.0)
    step = np.abs(np.diff(gt[:30, 0])) / gt[1:30, 0]
    assert step.max() > 0.05  # steeper than the 5 % step rule alone: the 3x rule keeps it from being an edge
    edges = gt_discontinuities(gt)
    box = np.zeros_like(edges)
    box[29:61, 39:81] = True
    box[31:59, 41:79] = False  # the box's border ring, one pixel on each side
    assert edges[box].mean() > 0.9
    assert not edges[~box].any()  # the ramp's steps grow smoothly: no edge


def test_blended_edge_points_are_flying_and_the_filter_removes_them():
    gt = _scene()
    pred = grid_reference(gt, (W // 4, H // 4)) * np.float32(1.3)  # wrong metric scale: alignment removes it
    np.testing.assert_allclose(scale_aligned(pred, gt)[5:25, 5:35], gt[5:25, 5:35], rtol=0.02)
    flying, non_edge = classify(scale_aligned(pred, gt), gt)
    assert flying.sum() > 50 and not (flying & non_edge).any()
    rows = figures([(pred, gt)], [0.0, 0.08])
    assert rows[0]['removed'] == rows[0]['lost'] == 0  # tolerance 0 = filter off
    assert rows[1]['flying'] == flying.sum() and rows[1]['non_edge'] == non_edge.sum()
    assert rows[1]['removed_share'] > 0.8 and rows[1]['lost_share'] < 0.03


def test_a_smooth_wrong_prediction_has_flying_points_the_filter_cannot_see():
    """What the default model does: no edge at all where the GT has one."""
    gt = _scene()
    pred = np.full_like(gt, 2.0)
    rows = figures([(pred, gt)], [0.08])
    assert rows[0]['flying'] > 0 and rows[0]['removed'] == 0
