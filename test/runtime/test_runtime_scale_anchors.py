"""Scale anchors: depth images of any resolution, scans, clouds and one range reading matched to a frame, the robust
fit against outliers, the source fallback and its events, the nearest-stamp buffer."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.runtime.scale_anchors import (
    ScaleFit,
    fit_anchors,
    fit_ground,
    fit_scale,
    parse_scale_sources,
    pixel_anchors_from_depth,
    point_anchors,
    point_anchors_from_range,
    point_anchors_from_scan,
    robust_log_scale,
)
from mgeo_ros.runtime.scale_source import AnchorBuffer, AnchorSettings, ScaleAnchoring, ScaleSourceChooser

W, H = 64, 48
INTR = Intrinsics.from_fov(math.radians(70), W, H)
# laser frame (x forward, y left, z up) -> optical frame (x right, y down, z forward)
LASER_IN_OPTICAL = RigidTransform(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), np.zeros(3))


def _scene(seed: int = 0) -> np.ndarray:
    """A true depth map: a slanted wall with a box in front (metres)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = 3.0 + 0.03 * u + 0.01 * v
    depth[10:25, 20:40] = 1.5
    return depth.astype(np.float32)


def test_parse_sources_falls_back_to_the_model():
    assert parse_scale_sources('scan, ground') == ('scan', 'ground', 'model')
    assert parse_scale_sources('') == ('model',)
    assert parse_scale_sources('depth,depth,model,scan') == ('depth', 'model')
    with pytest.raises(BadInputError, match="'lidar' is not a source"):
        parse_scale_sources('lidar')


@pytest.mark.parametrize('factor', [1, 2, 0.5])
def test_depth_image_of_another_resolution_maps_by_size_ratio(factor):
    truth = _scene()
    # the anchor camera sees the same field of view at another resolution: resample the truth at its pixel centres
    aw, ah = int(W * factor), int(H * factor)
    col = np.clip(np.rint((np.arange(aw) + 0.5) * W / aw - 0.5), 0, W - 1).astype(int)
    row = np.clip(np.rint((np.arange(ah) + 0.5) * H / ah - 0.5), 0, H - 1).astype(int)
    anchor = truth[row][:, col].copy()
    anchor[::3] = np.nan      # holes
    anchor[:, ::5] = 0.0      # no return
    anchors = pixel_anchors_from_depth(anchor, stamp=1.0)
    fit = fit_anchors(anchors, INTR, truth / 1.7, None, 20)
    assert fit.usable and fit.scale == pytest.approx(1.7, rel=1e-5)  # exact pairs: float32 rounding only
    assert fit.residual < 1e-5 and fit.matched == anchors.depth.size


def test_depth_in_millimetres_and_all_invalid():
    mm = np.full((H, W), 2500, np.uint16)
    fit = fit_anchors(pixel_anchors_from_depth(mm), INTR, np.full((H, W), 2.0, np.float32), None, 20)
    assert fit.scale == pytest.approx(1.25, rel=1e-6)
    bad = np.full((H, W), np.nan, np.float32)
    bad[0, :3] = np.inf
    fit = fit_anchors(pixel_anchors_from_depth(bad), INTR, np.ones((H, W), np.float32), None, 20)
    assert not fit.usable and 'no valid depth' in fit.reason


def test_scan_points_project_through_extrinsics():
    truth = _scene()
    # beams in the optical x-z plane (row cy) hitting the truth: range = z / cos(angle)
    angles = np.linspace(-0.5, 0.5, 60)
    u = INTR.cx - INTR.fx * np.tan(angles)      # laser y is left = -x optical
    z = truth[int(round(INTR.cy)), np.clip(np.rint(u), 0, W - 1).astype(int)]
    ranges = (z / np.cos(angles)).astype(np.float32)
    ranges[:5] = np.inf
    ranges[5:8] = 0.01    # below range_min
    ranges[8] = np.nan
    ranges[9] = 50.0      # above range_max
    # the row is not exactly the optical centre row: tilt the scan plane onto that row
    alpha = math.atan2(round(INTR.cy) - INTR.cy, INTR.fy)   # the row's rays: y / z = tan(alpha)
    tilt = np.array([[1, 0, 0], [0, math.cos(alpha), math.sin(alpha)], [0, -math.sin(alpha), math.cos(alpha)]])
    ext = RigidTransform(tilt @ LASER_IN_OPTICAL.rotation, np.zeros(3))
    scan = point_anchors_from_scan(ranges, angles[0], angles[1] - angles[0], 0.1, 20.0, ext, stamp=2.0)
    assert len(scan) == 50
    fit = fit_anchors(scan, INTR, truth * 0.8, None, 20)
    assert fit.usable and fit.scale == pytest.approx(1.25, rel=0.02)  # nearest-pixel sampling of a slanted wall
    assert fit.matched >= 45
    empty = point_anchors_from_scan(np.full(10, np.inf), -0.5, 0.1, 0.1, 20.0, ext)
    assert 'empty scan' in fit_anchors(empty, INTR, truth, None, 20).reason


def test_cloud_behind_outside_and_invalid_pixels():
    truth = _scene()
    pts = unproject(truth, INTR).reshape(-1, 3)
    assert fit_anchors(point_anchors(pts), INTR, truth / 2, None, 20).scale == pytest.approx(2.0, rel=1e-5)
    flipped = RigidTransform(np.diag([1.0, -1.0, -1.0]), np.zeros(3))  # a sensor facing backwards
    assert fit_anchors(point_anchors(pts, flipped), INTR, truth, None, 20).reason == 'all behind the camera'
    aside = RigidTransform(np.eye(3), np.array([100.0, 0.0, 0.0]))
    assert fit_anchors(point_anchors(pts, aside), INTR, truth, None, 20).reason == 'all outside the image'
    valid = np.zeros((H, W), bool)
    assert fit_anchors(point_anchors(pts), INTR, truth, valid, 20).reason == 'all on invalid pixels'
    valid[:2, :5] = True  # 10 valid pixels: fewer than 20
    fit = fit_anchors(point_anchors(pts), INTR, truth, valid, 20)
    assert not fit.usable and fit.matched == 10 and 'too few points' in fit.reason
    nan_cloud = np.full((4, 4, 3), np.nan, np.float32)
    assert fit_anchors(point_anchors(nan_cloud), INTR, truth, None, 20).reason == 'no finite points'


def test_one_range_reading_is_enough():
    truth = _scene()
    # a rangefinder looking along the optical axis from 5 cm to the right of the camera
    ext = RigidTransform(LASER_IN_OPTICAL.rotation, np.array([0.05, 0.0, 0.0]))
    u, v = int(round(INTR.cx + 0.05 * INTR.fx / 3.5)), int(round(INTR.cy))
    reading = point_anchors_from_range(float(truth[v, u]), 0.05, 8.0, ext, stamp=3.0)
    fit = fit_anchors(reading, INTR, truth / 3, None, 20)
    assert fit.usable and fit.matched == 1 and fit.scale == pytest.approx(3.0, rel=0.02)
    out = point_anchors_from_range(math.inf, 0.05, 8.0, ext)
    assert 'outside' in fit_anchors(out, INTR, truth, None, 20).reason


def _outlier_case(sigma: float, seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.8, 8.0, n)
    predicted = truth / 1.7 * np.exp(rng.normal(0.0, sigma, n))   # the model's own per-pixel error
    clean = truth * (1.0 + 0.02 * rng.normal(size=n))             # a LiDAR's 2 % noise
    wrong = clean.copy()
    wrong[rng.choice(n, n // 5, replace=False)] *= 3.0            # a fifth of them 3x too far (glass, multipath)
    return truth, predicted, clean, wrong


def _abs_rel(scale, predicted, truth):
    return float(np.mean(np.abs(scale * predicted - truth) / truth))


@pytest.mark.parametrize('sigma', [0.02, 0.1, 0.2])
def test_a_fifth_of_anchors_three_times_too_far_moves_the_fit_under_two_percent(sigma):
    for seed in range(10):
        truth, predicted, clean, wrong = _outlier_case(sigma, seed)
        s_clean = fit_scale(clean, predicted, 20).scale
        s_wrong = fit_scale(wrong, predicted, 20).scale
        assert abs(s_wrong / s_clean - 1) < 0.02, (sigma, seed, s_clean, s_wrong)
        assert abs(_abs_rel(s_wrong, predicted, truth) / _abs_rel(s_clean, predicted, truth) - 1) < 0.02


def test_one_median_mad_pass_is_not_enough():
    """Measured: the same outliers through a single median/3·MAD cut (then the median) move the scale further."""
    worst_single, worst_iterated = 0.0, 0.0
    for seed in range(10):
        _, predicted, clean, wrong = _outlier_case(0.2, seed)
        s_clean = fit_scale(clean, predicted, 20).scale
        r = np.log(wrong / predicted)
        med = np.median(r)
        keep = np.abs(r - med) <= 3.0 * 1.4826 * np.median(np.abs(r - med))
        worst_single = max(worst_single, abs(math.exp(np.median(r[keep])) / s_clean - 1))
        worst_iterated = max(worst_iterated, abs(fit_scale(wrong, predicted, 20).scale / s_clean - 1))
    assert worst_iterated < 0.02 < worst_single, (worst_iterated, worst_single)


def test_robust_log_scale_flags_the_wrong_anchors():
    _, predicted, _, wrong = _outlier_case(0.02, 0)
    _, inliers = robust_log_scale(np.log(wrong / predicted))
    far = wrong / predicted > 1.7 * 2
    assert not inliers[far].any() and inliers[~far].mean() > 0.95


def test_fit_thins_many_pairs_and_reports_ratio():
    rng = np.random.default_rng(1)
    truth = rng.uniform(1, 5, 20_000)
    fit = fit_scale(truth, truth / 2.0, 20, 'points', model_scale=4.0)
    assert fit.scale == pytest.approx(2.0) and fit.ratio == pytest.approx(0.5)
    assert fit.matched == 20_000 and fit.inliers == 20_000


def test_ground_source_scale_from_mount_height():
    # a camera 0.4 m above the floor, pitched 25 deg down; predicted points at half the metric scale
    from mgeo_ros.geometry.ground_plane import up_in_optical

    up = up_in_optical(25.0, 0.0)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones_like(u)], -1)
    t = 0.4 / -(rays @ up)  # the floor: up·p = -0.4
    pts = np.where((t > 0)[..., None], rays * t[..., None], np.nan).astype(np.float32)
    fit = fit_ground(pts * 0.5, None, 0.4, 25.0, 0.0, 20.0, 20, model_scale=1.0)
    assert fit.usable and fit.scale == pytest.approx(2.0, rel=1e-3)   # exact plane: float32 points only
    assert fit_ground(pts, None, 0.0).reason.startswith('camera_height is 0')
    assert 'plane not found' in fit_ground(pts, np.zeros((H, W), bool), 0.4, 25.0).reason


def _fits(table):
    return lambda name: table[name]


def test_chooser_falls_back_counts_and_reports_changes_once():
    chooser = ScaleSourceChooser('scan,ground')
    good = ScaleFit('scan', 1.2, 100, 95, 0.01, 1.1)
    ground = ScaleFit('ground', 1.1, 500, 400, 0.02, 1.0)
    stale = ScaleFit('scan', reason='stale (nearest anchor 0.3 s before the frame)')
    no_plane = ScaleFit('ground', reason='plane not found')
    first = chooser.choose(_fits({'scan': good}))  # ground is not even asked
    assert first.source == 'scan' and not first.changed
    assert [(e.source, e.usable) for e in first.events] == [('scan', True)]
    assert chooser.choose(_fits({'scan': good})).events == ()
    second = chooser.choose(_fits({'scan': stale, 'ground': ground}))
    assert second.source == 'ground' and second.changed
    assert [(e.source, e.usable) for e in second.events] == [('scan', False), ('ground', True)]
    assert 'stale' in second.events[0].message
    third = chooser.choose(_fits({'scan': stale, 'ground': no_plane}))
    assert third.source == 'model' and third.changed and third.fit.scale is None
    assert [(e.source, e.usable, e.reason) for e in third.events] == [('ground', False, 'plane not found')]
    assert chooser.choose(_fits({'scan': stale, 'ground': no_plane})).changed is False
    assert chooser.frames == {'scan': 2, 'ground': 1, 'model': 2}
    assert chooser.reasons['ground'] == 'plane not found'


def test_buffer_gives_the_nearest_present_anchor_within_max_age():
    buf: AnchorBuffer[str] = AnchorBuffer(max_age=0.1, capacity=4)
    assert buf.nearest(10.0) == (None, 'no messages')
    for t in (9.80, 9.95, 10.04, 9.70):
        buf.add(t, f'a{t:.2f}')
    assert buf.nearest(10.0) == ('a10.04', '')       # the nearest, also when it is a little after the frame
    assert buf.nearest(9.90) == ('a9.95', '')
    item, reason = buf.nearest(10.5)
    assert item is None and reason.startswith('stale') and 'before the frame' in reason
    item, reason = buf.nearest(9.0)
    assert item is None and 'after the frame' in reason
    buf.add(10.2, 'a10.20')                           # capacity 4: the oldest (9.70) goes
    assert len(buf) == 4 and buf.nearest(9.70)[0] is None
    with pytest.raises(ValueError, match='max_age'):
        AnchorBuffer(max_age=0)


def test_scale_anchoring_walks_the_fallback_per_frame():
    """One camera's anchoring: scan first, the ground next, the model last; stale scans fall through with the reason
    in the diagnostics; the source change says restart the smoothing; ground points are made only when asked."""
    truth = _scene()
    settings = AnchorSettings.from_text('scan,ground', min_points=20, max_age=0.1, camera_height=0.4,
                                        camera_pitch=25.0)
    anchoring = ScaleAnchoring(settings)
    pts = unproject(truth, INTR).reshape(-1, 3)
    anchoring.add('scan', point_anchors(pts, stamp=10.0, source='scan'))
    anchoring.add('depth', point_anchors(pts, stamp=10.0))     # not in the list: ignored
    assert set(anchoring.buffers) == {'scan'}
    made = []

    def floor_points():
        made.append(1)
        return np.full((H, W, 3), np.nan, np.float32)          # no floor in view

    first = anchoring.choose(10.02, INTR, truth / 2, None, floor_points)
    assert first.source == 'scan' and first.fit.scale == pytest.approx(2.0, rel=1e-5) and not made
    second = anchoring.choose(10.5, INTR, truth / 2, None, floor_points)   # the scan is 0.5 s old
    assert second.source == 'model' and second.changed and made
    assert [(e.source, e.usable) for e in second.events] == [('scan', False), ('ground', False)]
    diag = anchoring.diagnostics()
    assert diag['scale_source'] == 'model' and diag['scale_source.frames.scan'] == '1'
    assert diag['scale_source.scan.reason'].startswith('stale')
    assert 'plane not found' in diag['scale_source.ground.reason']
    third = anchoring.choose(10.03, INTR, truth / 2, None, None, model_scale=4.0)
    assert third.source == 'scan' and third.changed and third.fit.ratio == pytest.approx(0.5, rel=1e-5)
    assert anchoring.diagnostics()['scale_anchor.ratio'] == '0.5000'


def test_absrel_optimal_scale_is_the_minimum_of_absrel():
    from mgeo_ros.runtime.scale_anchors import absrel_optimal_scale

    rng = np.random.default_rng(3)
    ratio = np.exp(rng.gamma(2.0, 0.15, 501) - 0.2)  # skewed, as a network's depth errors are
    grid = np.linspace(0.5, 2.0, 30001)
    cost = np.abs(grid[:, None] / ratio[None, :] - 1.0).sum(axis=1)  # Σ|s·p − a|/a with p = a / ratio
    best = float(grid[np.argmin(cost)])
    # the grid's step is 5e-5: the exact weighted median lies within one step of its minimum
    assert absrel_optimal_scale(ratio) == pytest.approx(best, abs=1e-4)
    assert abs(absrel_optimal_scale(ratio) - float(np.exp(np.log(ratio).mean()))) > 1e-3  # not the log mean
