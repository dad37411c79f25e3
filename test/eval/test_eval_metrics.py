"""Metrics on hand-computed cases, alignment recovery, invariances, boundary F1 and temporal metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.eval.metrics import (
    boundary_f1,
    boundary_map,
    depth_flicker,
    depth_metrics,
    fov_error,
    point_metrics,
    scale_jitter,
    scale_step,
)
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import unproject

H, W = 36, 48
ANCHORS = 32          # keeps the affine ROE searches fast; exactly-affine data is solved exactly by any anchor


def scene_depth(seed: int = 0) -> np.ndarray:
    """A slanted floor with a box in front of it: smooth parts plus occlusion edges in all four directions."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, H)[:, None]
    depth = 2.0 + 3.0 * rows + 0.3 * np.sin(np.linspace(0, 3, W))[None, :]
    depth = depth + rng.uniform(-0.05, 0.05, (H, W))
    depth[10:24, 14:30] = 1.2
    return depth.astype(np.float32)


def noisy(depth: np.ndarray, seed: int = 1, amount: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (depth * np.exp(rng.normal(0.0, amount, depth.shape))).astype(np.float32)


def test_perfect_prediction_is_perfect_for_every_alignment():
    gt = scene_depth()
    mask = np.ones_like(gt, dtype=bool)
    for alignment in ('none', 'scale', 'affine', 'affine_disparity'):
        m = depth_metrics(gt.copy(), gt, mask, alignment, max_anchors=ANCHORS)
        for key in ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog'):
            assert m[key] == pytest.approx(0.0, abs=1e-5), (alignment, key)
        for key in ('delta1', 'delta2', 'delta3', 'coverage'):
            assert m[key] == pytest.approx(1.0), (alignment, key)
    points = unproject(gt, Intrinsics.from_fov(1.2, W, H))
    for alignment in ('none', 'shift', 'scale', 'affine'):
        m = point_metrics(points.copy(), points, mask, alignment, max_anchors=ANCHORS)
        assert m['rel'] == pytest.approx(0.0, abs=1e-6) and m['delta1'] == 1.0, alignment


def test_hand_computed_depth_metrics():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]], dtype=np.float32)
    pred = gt * 1.1
    pred[1, 1] = 12.0                    # one pixel off by 1.5x: fails δ1 (1.25), passes δ2 (1.5625)
    m = depth_metrics(pred, gt, np.ones_like(gt, dtype=bool))
    abs_err = np.array([0.1, 0.2, 0.4, 4.0])
    g = np.array([1.0, 2.0, 4.0, 8.0])
    assert m['abs_rel'] == pytest.approx(np.mean(abs_err / g), rel=1e-6)
    assert m['sq_rel'] == pytest.approx(np.mean(abs_err ** 2 / g), rel=1e-6)
    assert m['rmse'] == pytest.approx(math.sqrt(np.mean(abs_err ** 2)), rel=1e-6)
    d = np.log(np.array([1.1, 1.1, 1.1, 1.5]))
    assert m['rmse_log'] == pytest.approx(math.sqrt(np.mean(d ** 2)), rel=1e-6)
    assert m['log10'] == pytest.approx(np.mean(np.abs(d)) / math.log(10), rel=1e-6)
    assert m['silog'] == pytest.approx(100 * math.sqrt(np.mean(d ** 2) - np.mean(d) ** 2), rel=1e-5)
    assert (m['delta1'], m['delta2'], m['delta3']) == pytest.approx((0.75, 1.0, 1.0))


def test_invalid_pixels_are_excluded_and_coverage_reported():
    gt = np.array([[1.0, 2.0], [4.0, np.nan]], dtype=np.float32)
    pred = np.array([[1.0, np.nan], [5.0, 3.0]], dtype=np.float32)
    mask = np.array([[True, True], [True, True]])
    m = depth_metrics(pred, gt, mask)
    assert m['num_pixels'] == 2                     # (0,0) and (1,0): GT NaN and pred NaN pixels dropped
    assert m['coverage'] == pytest.approx(2 / 3)    # 3 valid GT pixels, 2 predicted
    assert m['abs_rel'] == pytest.approx((0.0 + 0.25) / 2)
    masked = depth_metrics(pred, gt, np.array([[True, False], [False, False]]))
    assert masked['abs_rel'] == 0.0 and masked['num_pixels'] == 1


def test_known_scale_and_shift_are_recovered():
    gt = scene_depth()
    mask = np.ones_like(gt, dtype=bool)
    m = depth_metrics(gt / 3.0, gt, mask, 'scale')
    assert m['scale'] == pytest.approx(3.0, rel=1e-5) and m['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert depth_metrics(gt / 3.0, gt, mask, 'none')['abs_rel'] == pytest.approx(2 / 3, rel=1e-5)
    m = depth_metrics((gt - 0.7) / 2.0, gt, mask, 'affine', max_anchors=ANCHORS)
    assert m['scale'] == pytest.approx(2.0, rel=1e-4) and m['shift'] == pytest.approx(0.7, abs=1e-4)
    assert m['abs_rel'] == pytest.approx(0.0, abs=1e-5)
    disparity = 0.5 / gt + 0.2                      # affine in disparity
    m = depth_metrics(1.0 / disparity, gt, mask, 'affine_disparity')
    assert m['scale'] == pytest.approx(2.0, rel=1e-4) and m['shift'] == pytest.approx(-0.4, abs=1e-4)
    assert m['abs_rel'] == pytest.approx(0.0, abs=1e-5)


def test_alignment_uses_gt_weights_robustly():
    """ROE is an L1 fit: 10 % wild outliers must not move the recovered scale."""
    gt = scene_depth()
    pred = gt / 2.5
    pred.reshape(-1)[::10] *= 7.0
    m = depth_metrics(pred, gt, np.ones_like(gt, dtype=bool), 'scale')
    assert m['scale'] == pytest.approx(2.5, rel=1e-4)
    assert m['delta1'] == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize('alignment,transform', [
    ('scale', lambda d: d * 3.7),
    ('affine', lambda d: d * 0.4 + 1.3),
    ('affine_disparity', lambda d: 1.0 / (2.0 / d + 0.05)),
])
def test_depth_invariances(alignment, transform):
    gt = scene_depth()
    pred = noisy(gt)
    mask = np.ones_like(gt, dtype=bool)
    mask[:3] = False
    base = depth_metrics(pred, gt, mask, alignment, max_anchors=ANCHORS)
    moved = depth_metrics(transform(pred.astype(np.float64)), gt, mask, alignment, max_anchors=ANCHORS)
    for key in ('abs_rel', 'delta1', 'rmse', 'silog'):
        assert moved[key] == pytest.approx(base[key], rel=1e-4, abs=1e-7), key
    # ...and the metric (unaligned) numbers do change, so the check above is not vacuous
    assert depth_metrics(transform(pred), gt, mask)['abs_rel'] != pytest.approx(
        depth_metrics(pred, gt, mask)['abs_rel'], rel=1e-3)


def test_point_metrics_hand_computed_and_invariances():
    gt = np.array([[[0.0, 0.0, 2.0], [3.0, 0.0, 4.0]]])        # |g| = 2, 5
    pred = np.array([[[0.0, 0.0, 2.2], [3.0, 0.0, 6.0]]])      # err = 0.2, 2.0
    m = point_metrics(pred, gt, np.ones((1, 2), bool))
    assert m['rel'] == pytest.approx((0.2 / 2 + 2.0 / 5) / 2)
    assert m['delta1'] == pytest.approx(0.5)                  # 0.2 < 0.5 yes; 2.0 < 0.25*5 no

    depth = scene_depth()
    points = unproject(depth, Intrinsics.from_fov(1.2, W, H)).astype(np.float64)
    pred = unproject(noisy(depth), Intrinsics.from_fov(1.1, W, H)).astype(np.float64)
    mask = np.ones_like(depth, dtype=bool)
    t = np.array([0.3, -0.2, 0.5])
    cases = {'shift': pred + t, 'scale': pred * 2.2, 'affine': pred * 0.6 + t}
    for alignment, moved in cases.items():
        a = point_metrics(pred, points, mask, alignment, max_anchors=ANCHORS)
        b = point_metrics(moved, points, mask, alignment, max_anchors=ANCHORS)
        assert b['rel'] == pytest.approx(a['rel'], rel=1e-4), alignment
        assert b['delta1'] == pytest.approx(a['delta1'], abs=1e-9), alignment
    recovered = point_metrics(points * 0.5 - t, points, mask, 'affine', max_anchors=ANCHORS)
    assert recovered['scale'] == pytest.approx(2.0, rel=1e-5)
    assert recovered['shift'] == pytest.approx(list(2.0 * t), abs=1e-5)
    assert recovered['rel'] == pytest.approx(0.0, abs=1e-6)
    only_shift = point_metrics(points + t, points, mask, 'shift')
    assert only_shift['shift'] == pytest.approx(list(-t), abs=1e-5) and only_shift['rel'] < 1e-6


def test_bad_inputs_name_the_problem():
    gt = scene_depth()
    with pytest.raises(BadInputError, match='alignment'):
        depth_metrics(gt, gt, None, 'median')
    with pytest.raises(BadInputError, match='shape'):
        depth_metrics(gt[:-1], gt, None)
    with pytest.raises(BadInputError, match='alignment'):
        point_metrics(np.zeros((2, 2, 3)), np.ones((2, 2, 3)), None, 'affine_disparity')


def test_boundary_f1_same_map_scaled_and_shifted_edges():
    gt = scene_depth()
    assert boundary_f1(gt, gt) == pytest.approx(1.0)
    assert boundary_f1(gt * 4.2, gt) == pytest.approx(1.0)            # ratios: scale-invariant
    shifted = np.roll(gt, 2, axis=1)
    blurred = gt.copy()
    blurred[:, 1:-1] = (gt[:, :-2] + gt[:, 1:-1] + gt[:, 2:]) / 3.0  # soft edges: ratios split over 2 pairs
    f_shift, f_blur = boundary_f1(shifted, gt), boundary_f1(blurred, gt)
    assert 0.0 <= f_shift < 0.5
    assert f_blur < 1.0
    flat = np.full_like(gt, 3.0)
    assert boundary_f1(flat, gt) == 0.0                             # predicts no edge at all
    assert math.isnan(boundary_f1(gt, flat))                        # undefined without GT edges


def test_boundary_f1_hand_computed_single_edge_and_mask():
    gt = np.full((4, 6), 4.0)
    gt[:, :3] = 2.0                                                  # one vertical step: left side is nearer
    assert boundary_f1(gt, gt) == pytest.approx(1.0)
    pred = gt.copy()
    pred[:2, 2] = 4.0                                                # top half of the edge moves one column left
    # every threshold: GT has 4 "left nearer" relations; pred has 4 of them (2 agree) plus 1 spurious vertical
    # relation at the kink (column 2, rows 1/2). Recall = 2/4; precision = mean over pred's directions (2/4, 0/1)
    # = 0.25; F1 = 2·0.25·0.5 / 0.75 = 1/3
    assert boundary_f1(pred, gt) == pytest.approx(1.0 / 3.0)
    mask = np.ones_like(gt, dtype=bool)
    mask[:2] = False                                                 # hide the disagreeing rows
    assert boundary_f1(pred, gt, mask) == pytest.approx(1.0)
    edges = boundary_map(gt, 1.15)
    assert edges[:, 2].all() and edges.sum() == 4


def test_fov_error_degrees():
    a = Intrinsics.from_fov(math.radians(60.0), 640, 480)
    b = Intrinsics.from_fov(math.radians(62.5), 640, 480)
    assert fov_error(a, b) == pytest.approx(2.5)
    assert fov_error(a, a) == 0.0
    assert fov_error(a, b, 'y') > 0.0


def test_scale_jitter_ignores_trend_and_measures_wobble():
    t = np.arange(20)
    trend = np.exp(0.02 * t + 0.3)
    assert scale_jitter(trend) == pytest.approx(0.0, abs=1e-9)
    assert scale_jitter(trend, detrend='none') > 0.1
    wobble = trend * np.exp(0.05 * (-1.0) ** t)
    assert scale_jitter(wobble) == pytest.approx(0.05, rel=0.02)
    assert scale_step(wobble) == pytest.approx(0.1, rel=0.05)      # alternating ±0.05: steps of ≈0.1
    assert math.isnan(scale_jitter([1.0]))


def test_depth_flicker_on_constructed_sequences():
    gt = scene_depth()
    static = np.stack([gt] * 5)
    assert depth_flicker(static, None) == pytest.approx(0.0)
    alternating = np.stack([gt, gt * 1.1, gt, gt * 1.1])
    assert depth_flicker(alternating) == pytest.approx(0.1 / 1.05, rel=1e-5)
    # a moving object: masked out by static_mask, the rest is stable
    moving = np.stack([gt] * 3)
    moving[1, 10:24, 14:30] = 3.0
    static_mask = np.ones_like(gt, dtype=bool)
    static_mask[10:24, 14:30] = False
    assert depth_flicker(moving) > 0.0
    assert depth_flicker(moving, static_mask=static_mask) == pytest.approx(0.0)
    masks = np.ones_like(moving, dtype=bool)
    masks[1, 10:24, 14:30] = False                                  # or the frame's own validity mask
    assert depth_flicker(moving, masks) == pytest.approx(0.0)
    assert math.isnan(depth_flicker(gt[None]))


def test_anchor_subset_matches_the_full_search_and_never_beats_it():
    """The default subset of anchors must stay near MoGe's full search, which is optimal for the ROE objective."""
    gt = scene_depth().astype(np.float64)
    pred = noisy(gt, seed=5, amount=0.15) * 0.7 + 0.3
    mask = np.ones_like(gt, dtype=bool)
    full = depth_metrics(pred, gt, mask, 'affine', max_anchors=None)
    subset = depth_metrics(pred, gt, mask, 'affine')

    def roe_cost(m):        # weighted L1 objective on all pixels (every pixel is in its own 64×64 cell here)
        return float(np.sum(np.abs(pred * m['scale'] + m['shift'] - gt) / gt))

    assert roe_cost(full) <= roe_cost(subset) + 1e-9
    assert subset['abs_rel'] == pytest.approx(full['abs_rel'], rel=2e-2)
