"""The evaluator with a stand-in predictor: per-frame/mean metrics, baselines, temporal metrics, report PNGs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mgeo_ros.eval.evaluate import evaluate, summary_table
from mgeo_ros.eval.metrics import depth_metrics
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.runtime.prediction import Prediction
from mgeo_ros.train.data.sample import Sample

H, W = 36, 48
ANCHORS = 16


def make_samples(n: int = 4, metric: bool = True) -> list[Sample]:
    rng = np.random.default_rng(3)
    intr = Intrinsics.from_fov(1.1, W, H)
    samples = []
    for i in range(n):
        depth = np.tile(np.linspace(2.0, 5.0, H, dtype=np.float32)[:, None], (1, W)) + 0.5 * i
        depth[8:20, 10 + i:26 + i] = 1.5
        depth[0, :5] = np.nan                                    # some invalid GT
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        samples.append(Sample(rgb=rgb, depth=depth, intrinsics=intr, mask=np.isfinite(depth), metric=metric,
                              source=f'frame{i}'))
    return samples


class ScaledGT:
    """Predicts the GT times `scale` (with a per-frame wobble), and a camera 10 % wider when not given one."""

    def __init__(self, samples, scale=1.0, wobble=0.0):
        self.by_image = {id(s.rgb): (i, s) for i, s in enumerate(samples)}
        self.scale, self.wobble, self.calls = scale, wobble, []

    def predict(self, rgb, intrinsics=None):
        i, s = self.by_image[id(rgb)]
        self.calls.append(intrinsics)
        k = self.scale * (1.0 + self.wobble * (-1) ** i)
        intr = intrinsics if intrinsics is not None else Intrinsics(
            s.intrinsics.fx * 1.1, s.intrinsics.fy * 1.1, s.intrinsics.cx, s.intrinsics.cy, W, H)
        depth = np.where(s.mask, s.depth * k, np.nan).astype(np.float32)
        return Prediction(depth=depth, mask=s.mask.copy(), intrinsics=intr,
                          metric_scale=k, intrinsics_recovered=intrinsics is None)


def test_perfect_model_scores_perfectly_and_beats_the_baselines(tmp_path):
    samples = make_samples()
    predictor = ScaledGT(samples)
    result = evaluate(predictor, samples, report_dir=tmp_path / 'report', progress=False, max_anchors=ANCHORS)
    assert result['num_frames'] == 4 and len(predictor.calls) == 8
    assert sum(c is None for c in predictor.calls) == 4             # both protocols ran
    gt_run = result['runs']['gt_intrinsics']['mean']
    assert gt_run['depth_metric/abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert gt_run['depth_metric/delta1'] == 1.0
    assert gt_run['points_metric/rel'] == pytest.approx(0.0, abs=1e-6)
    assert gt_run['boundary_f1'] == pytest.approx(1.0)
    assert gt_run['fov_x_error_deg'] == 0.0
    recovered = result['runs']['recovered_intrinsics']['mean']
    assert recovered['fov_x_error_deg'] > 1.0                        # a 10 % longer focal is a few degrees
    assert recovered['points_raw/rel'] > 0.01                        # wrong camera bends the points, not the depth
    assert recovered['depth_metric/abs_rel'] == pytest.approx(0.0, abs=1e-6)
    for name in ('constant', 'oracle_median'):
        base = result['baselines'][name]['mean']
        assert base['depth_metric/abs_rel'] > 0.1 and base['boundary_f1'] == 0.0
    assert len(result['runs']['gt_intrinsics']['frames']) == 4
    json.dumps(result)                                               # JSON-ready as returned (NaN allowed)
    table = summary_table(result)
    assert 'baseline oracle_median' in table and 'model (gt_intrinsics)' in table
    pngs = {p.name for p in (tmp_path / 'report').glob('*.png')}
    assert 'error_histogram.png' in pngs and 'metric_scale.png' not in pngs
    for panel in ('input', 'pred_depth', 'gt_depth', 'error', 'boundary'):
        assert f'frame_0000_gt_intrinsics_{panel}.png' in pngs


def test_baselines_are_the_documented_constants():
    samples = make_samples()
    result = evaluate(ScaledGT(samples), samples, modes=('gt_intrinsics',), progress=False, max_anchors=ANCHORS)
    medians = [float(np.nanmedian(s.depth)) for s in samples]
    assert result['constant_depth_m'] == pytest.approx(float(np.median(medians)))
    for s, row, med in zip(samples, result['baselines']['oracle_median']['frames'], medians):
        expected = depth_metrics(np.full_like(s.depth, med), s.depth, s.mask)
        assert row['depth_m'] == pytest.approx(med)
        assert row['depth_metric/abs_rel'] == pytest.approx(expected['abs_rel'])
    given = evaluate(ScaledGT(samples), samples, modes=('gt_intrinsics',), constant_depth=10.0, progress=False,
                     max_anchors=ANCHORS)
    assert given['constant_depth_m'] == 10.0 and given['constant_depth_source'] == 'given'
    # 10 m everywhere against 1.5–6.5 m: AbsRel is far worse than the oracle-median plane
    assert given['baselines']['constant']['mean']['depth_metric/abs_rel'] > \
        given['baselines']['oracle_median']['mean']['depth_metric/abs_rel']


def test_scaled_model_and_relative_gt():
    samples = make_samples(3, metric=False)
    result = evaluate(ScaledGT(samples, scale=2.0), samples, modes=('gt_intrinsics',), progress=False,
                      max_anchors=ANCHORS, limit=2)
    assert result['num_frames'] == 2
    mean = result['runs']['gt_intrinsics']['mean']
    assert math.isnan(mean['depth_metric/abs_rel'])                 # GT not metric: no metric numbers
    assert mean['depth_scale/abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert mean['depth_scale/scale'] == pytest.approx(0.5)


def test_sequence_temporal_metrics_and_scale_plot(tmp_path):
    samples = make_samples(5)
    result = evaluate(ScaledGT(samples, wobble=0.05), samples, modes=('gt_intrinsics',), sequence=True,
                      report_dir=tmp_path, report_frames=2, progress=False, max_anchors=ANCHORS)
    temporal = result['temporal']['gt_intrinsics']
    assert temporal['scale_jitter'] == pytest.approx(0.05, rel=0.2)
    assert temporal['depth_flicker'] > temporal['gt_depth_flicker']  # the wobble adds flicker the GT does not have
    assert (tmp_path / 'metric_scale.png').stat().st_size > 1000
    assert len(list(tmp_path.glob('frame_*_boundary.png'))) == 2


def test_frames_without_valid_gt_are_named_not_scored_and_all_of_them_is_an_error(caplog):
    from dataclasses import replace

    from mgeo_ros.errors import BadInputError

    samples = make_samples(3)
    samples[1] = replace(samples[1], depth=np.full((H, W), np.nan, np.float32))         # all NaN
    samples[2] = replace(samples[2], depth=np.full((H, W), -2.0, np.float32))           # negative everywhere
    predictor = ScaledGT(samples[:1])
    predictor.by_image.update({id(s.rgb): (i, s) for i, s in enumerate(samples)})
    with caplog.at_level('WARNING'):
        result = evaluate(predictor, samples, modes=('gt_intrinsics',), progress=False, max_anchors=ANCHORS)
    assert result['num_frames'] == 1 and result['frames_without_gt'] == [1, 2]
    assert len(result['runs']['gt_intrinsics']['frames']) == 1 and len(predictor.calls) == 1  # nothing run for them
    assert '2 of 3 frame(s) have no valid ground-truth depth' in caplog.text
    for constant in (None, 3.0):  # found in the median pass, or after the frames when the constant is given
        with pytest.raises(BadInputError, match='none of the 2 frame'):
            evaluate(predictor, samples[1:], constant_depth=constant, progress=False, max_anchors=ANCHORS)
