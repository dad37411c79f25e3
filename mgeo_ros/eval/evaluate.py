"""Evaluate a `Predictor` over a map-style dataset of `Sample`s (folder, synthetic split, bag), offline.

Every number comes with two reference points computed in the same run (baselines):
- `constant`: every pixel at one depth `c` (the median of the training depths when the caller knows it; by default
  the median over frames of each frame's GT median depth in the evaluated set). What a model with no image
  understanding at all scores.
- `oracle_median`: every pixel at this frame's own GT median depth. A flat wall at the oracle metric scale: it has
  the scale right by construction and no structure, so a model must beat it on structure, and on metric numbers it
  shows how much of the error is scale.

MoGe reports two protocols: with the GT intrinsics given to the model, and with the camera recovered from the
prediction. `modes` selects them; the results sit side by side under `runs`.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgeo_ros.errors import BadInputError
from mgeo_ros.eval import metrics as M
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.runtime.prediction import Prediction
from mgeo_ros.train.data.sample import Sample

MODES = ('gt_intrinsics', 'recovered_intrinsics')
DEPTH_GROUPS = {'depth_metric': 'none', 'depth_scale': 'scale', 'depth_affine': 'affine',
                'disparity_affine': 'affine_disparity'}
POINT_GROUPS = {'points_raw': 'none', 'points_metric': 'shift', 'points_scale': 'scale', 'points_affine': 'affine'}
METRIC_ONLY_GROUPS = ('depth_metric', 'points_raw', 'points_metric')   # need metric GT (Sample.metric)
ERROR_SAMPLES_PER_FRAME = 4000


log = logging.getLogger(__name__)
NO_GT = ('none of the {count} frame(s) has valid ground-truth depth (every pixel is NaN, zero or negative, or '
         'masked out), so nothing can be scored; check the depth topic/files and their unit (metres, or 16UC1 mm)')


def gt_valid_mask(sample: Sample) -> np.ndarray:
    with np.errstate(invalid='ignore'):
        return np.asarray(sample.mask, dtype=bool) & np.isfinite(sample.depth) & (sample.depth > 0)


def _flatten(prefix: str, values: dict) -> dict[str, float]:
    return {f'{prefix}/{k}': v for k, v in values.items() if isinstance(v, (int, float)) and k != 'num_pixels'}


def frame_metrics(pred_depth: np.ndarray, pred_points: np.ndarray | None, sample: Sample, pred_intrinsics=None,
                  max_anchors: int | None = M.MAX_ALIGN_ANCHORS) -> dict[str, float]:
    """Every per-frame metric of one prediction against one sample, as a flat {'group/metric': value} dict.

    Metric-scale groups are NaN when the sample's depth is only relative (`Sample.metric` False)."""
    mask = gt_valid_mask(sample)
    out: dict[str, float] = {}
    for group, alignment in DEPTH_GROUPS.items():
        out.update(_flatten(group, M.depth_metrics(pred_depth, sample.depth, mask, alignment,
                                                   max_anchors=max_anchors)))
    if pred_points is not None:
        gt_points = unproject(np.where(mask, sample.depth, np.nan), sample.intrinsics)
        for group, alignment in POINT_GROUPS.items():
            out.update(_flatten(group, M.point_metrics(pred_points, gt_points, mask, alignment,
                                                       max_anchors=max_anchors)))
    if not sample.metric:
        out.update({k: math.nan for k in out if k.split('/')[0] in METRIC_ONLY_GROUPS})
    out['boundary_f1'] = M.boundary_f1(pred_depth, sample.depth, mask)
    if pred_intrinsics is not None:
        out['fov_x_error_deg'] = M.fov_error(pred_intrinsics, sample.intrinsics, 'x')
        out['fov_y_error_deg'] = M.fov_error(pred_intrinsics, sample.intrinsics, 'y')
    return out


def baseline_metrics(depth_value: float, sample: Sample) -> dict[str, float]:
    """Metrics of a constant-depth prediction (unprojected with the GT camera). Alignments that a constant makes
    degenerate (affine in depth or disparity) are left out."""
    mask = gt_valid_mask(sample)
    depth = np.full(sample.depth.shape, depth_value, dtype=np.float32)
    out = _flatten('depth_metric', M.depth_metrics(depth, sample.depth, mask, 'none'))
    out.update(_flatten('depth_scale', M.depth_metrics(depth, sample.depth, mask, 'scale')))
    gt_points = unproject(np.where(mask, sample.depth, np.nan), sample.intrinsics)
    points = unproject(depth, sample.intrinsics)
    out.update(_flatten('points_raw', M.point_metrics(points, gt_points, mask, 'none')))
    out.update(_flatten('points_metric', M.point_metrics(points, gt_points, mask, 'shift')))
    if not sample.metric:
        out.update({k: math.nan for k in out if k.split('/')[0] in METRIC_ONLY_GROUPS})
    out['boundary_f1'] = M.boundary_f1(depth, sample.depth, mask)
    return out


def gt_median(sample: Sample) -> float:
    values = sample.depth[gt_valid_mask(sample)]
    return float(np.median(values)) if values.size else math.nan


def mean_metrics(frames: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-key mean over frames of the finite numeric values (NaN where no frame has one)."""
    keys = sorted({k for f in frames for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out = {}
    for k in keys:
        values = np.array([f[k] for f in frames if isinstance(f.get(k), (int, float))], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[k] = float(values.mean()) if values.size else math.nan
    return out


def _error_samples(pred: np.ndarray, sample: Sample, rng: np.random.Generator) -> np.ndarray:
    mask = gt_valid_mask(sample) & np.isfinite(pred)
    err = np.abs(pred[mask] - sample.depth[mask]) / sample.depth[mask]
    if err.size > ERROR_SAMPLES_PER_FRAME:
        err = rng.choice(err, ERROR_SAMPLES_PER_FRAME, replace=False)
    return err.astype(np.float32)


class _FlickerAccumulator:
    """Running mean of `metrics.depth_flicker` over consecutive frame pairs, without keeping the sequence."""

    def __init__(self) -> None:
        self.previous: tuple[np.ndarray, np.ndarray] | None = None
        self.values: list[float] = []

    def add(self, depth: np.ndarray, mask: np.ndarray) -> None:
        if self.previous is not None and self.previous[0].shape == depth.shape:
            value = M.depth_flicker([self.previous[0], depth], [self.previous[1], mask])
            if math.isfinite(value):
                self.values.append(value)
        self.previous = (depth, mask)

    def result(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan


def evaluate(predictor, dataset, *, modes: Sequence[str] = MODES, constant_depth: float | None = None,
             limit: int | None = None, sequence: bool = False, report_dir: str | Path | None = None,
             report_frames: int = 4, progress: bool = True,
             max_anchors: int | None = M.MAX_ALIGN_ANCHORS, scale_anchors=None,
             stamp_s: Callable[[int], float] | None = None) -> dict:
    """Run `predictor.predict(rgb, intrinsics=...)` on every sample (the first `limit`) and score it.

    predictor: one object for every mode, or {mode: object} (`node_frames.NodeFrames`, one per mode: a session
      carries its scale smoothing from frame to frame, so the two protocols must not share one).

    modes: any of 'gt_intrinsics' (pass `sample.intrinsics`) and 'recovered_intrinsics' (pass None).
    constant_depth: the constant baseline's depth in metres (median of the training depths); None = median of the
      per-frame GT medians over the evaluated frames (a second, cheap pass over the data).
    sequence: the frames are a video (a bag): add temporal metrics and the metric-scale-over-time plot.
    report_dir: where to write PNGs (frame panels for `report_frames` evenly spaced frames, error histogram,
      metric scale over time); None = no pictures.
    max_anchors: anchors tried by the affine ROE alignments (None = all samples, MoGe-exact; see metrics.py).
    scale_anchors: an `eval.anchored.AnchorSources`: each run is also scored with the scale its sources give
      (rows `anchored (<mode>)`), frame i paired with the anchors by `stamp_s(i)` (seconds).
    Returns the JSON-ready result: per-frame and mean metrics for every mode and baseline.
    """
    for mode in modes:
        if mode not in MODES:
            raise BadInputError(f'unknown mode {mode!r}; expected some of {MODES}')
    predictors = predictor if isinstance(predictor, Mapping) else {mode: predictor for mode in modes}
    count = len(dataset) if limit is None else min(len(dataset), int(limit))
    if count == 0:
        raise BadInputError('the dataset has no frames to evaluate')
    constant_source = 'given'
    if constant_depth is None:
        medians = [gt_median(dataset[i]) for i in tqdm(range(count), desc='GT medians', disable=not progress)]
        medians = [m for m in medians if math.isfinite(m)]
        if not medians:
            raise BadInputError(NO_GT.format(count=count))
        constant_depth = float(np.median(medians))
        constant_source = 'median of the per-frame GT median depths over the evaluated frames'

    report_path = Path(report_dir) if report_dir is not None else None
    panel_frames = set(np.linspace(0, count - 1, min(report_frames, count)).round().astype(int).tolist())
    rng = np.random.default_rng(0)
    runs = {mode: [] for mode in modes}
    baselines = {'constant': [], 'oracle_median': []}
    errors: dict[str, list[np.ndarray]] = {f'model ({mode})': [] for mode in modes}
    errors.update({'constant': [], 'oracle_median': []})
    flicker = {mode: _FlickerAccumulator() for mode in modes}
    gt_flicker = _FlickerAccumulator()
    median_ratio = {mode: [] for mode in modes}
    anchored_runs = {mode: [] for mode in modes} if scale_anchors is not None else {}
    anchorings = {mode: scale_anchors.anchoring() for mode in anchored_runs}

    without_gt = []
    for i in tqdm(range(count), desc='evaluating', disable=not progress):
        sample = dataset[i]
        mask = gt_valid_mask(sample)
        if not mask.any():  # nothing to score against: counted and named, never a row of NaN metrics
            without_gt.append(i)
            continue
        for mode in modes:
            start = time.perf_counter()
            pred: Prediction = predictors[mode].predict(sample.rgb, intrinsics=sample.intrinsics
                                                        if mode == 'gt_intrinsics' else None)
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if pred.depth.shape != sample.depth.shape:
                raise ValueError(f'prediction is {pred.depth.shape} but the GT of frame {i} is {sample.depth.shape}')
            depth = np.where(pred.mask, pred.depth, np.nan).astype(np.float32)
            row: dict[str, Any] = {'index': i, 'source': sample.source}
            row.update(frame_metrics(depth, np.where(pred.mask[..., None], pred.points, np.nan),
                                     sample, pred.intrinsics, max_anchors))
            row.update(metric_scale=float(pred.metric_scale), time_ms=elapsed_ms,
                       intrinsics_recovered=bool(pred.intrinsics_recovered))
            runs[mode].append(row)
            errors[f'model ({mode})'].append(_error_samples(depth, sample, rng))
            if mode in anchorings:
                anchored_runs[mode].append(_anchored_row(anchorings[mode], i, stamp_s, pred, depth, sample,
                                                         max_anchors))
            if sequence:
                flicker[mode].add(depth, pred.mask & mask)
                valid = mask & np.isfinite(depth)
                median_ratio[mode].append(float(np.median(sample.depth[valid]) / np.median(depth[valid]))
                                          if valid.any() else math.nan)
            if report_path is not None and i in panel_frames:
                from mgeo_ros.eval.report import save_frame_panels
                save_frame_panels(report_path, f'frame_{i:04d}_{mode}', sample.rgb, depth, sample.depth, mask)
        if sequence:
            gt_flicker.add(sample.depth, mask)
        median = gt_median(sample)
        for name, value in (('constant', constant_depth), ('oracle_median', median)):
            if not math.isfinite(value):
                continue
            row = {'index': i, 'source': sample.source, 'depth_m': float(value)}
            row.update(baseline_metrics(value, sample))
            baselines[name].append(row)
            errors[name].append(_error_samples(np.full(sample.depth.shape, value, np.float32), sample, rng))

    if len(without_gt) == count:
        raise BadInputError(NO_GT.format(count=count))
    if without_gt:
        log.warning('%d of %d frame(s) have no valid ground-truth depth (NaN, zero or negative everywhere) and are '
                    'not scored: %s', len(without_gt), count, without_gt[:20])
    result: dict[str, Any] = {
        'num_frames': count - len(without_gt),
        'frames_without_gt': without_gt,
        'modes': list(modes),
        'constant_depth_m': constant_depth,
        'constant_depth_source': constant_source,
        'align_anchors': max_anchors,
        'runs': {mode: {'mean': mean_metrics(rows), 'frames': rows} for mode, rows in runs.items()},
        'baselines': {name: {'mean': mean_metrics(rows), 'frames': rows} for name, rows in baselines.items()},
    }
    if anchored_runs:
        result['anchored'] = {mode: {'mean': mean_metrics(rows), 'frames': rows,
                                     'frames_per_source': dict(anchorings[mode].chooser.frames),
                                     'last_reasons': dict(anchorings[mode].chooser.reasons),
                                     'sources': list(anchorings[mode].settings.sources)}
                              for mode, rows in anchored_runs.items()}
    if sequence:
        result['temporal'] = {
            mode: {
                'scale_jitter': M.scale_jitter([r['metric_scale'] for r in runs[mode]]),
                'scale_step': M.scale_step([r['metric_scale'] for r in runs[mode]]),
                'depth_flicker': flicker[mode].result(),
                'gt_depth_flicker': gt_flicker.result(),
                'gt_over_pred_median_jitter': M.scale_jitter(median_ratio[mode]),
            } for mode in modes}
    if report_path is not None:
        from mgeo_ros.eval.report import save_error_histogram, save_scale_over_time
        report_path.mkdir(parents=True, exist_ok=True)
        save_error_histogram(report_path / 'error_histogram.png',
                             {k: np.concatenate(v) for k, v in errors.items() if v})
        if sequence:
            first = modes[0]
            save_scale_over_time(report_path / 'metric_scale.png',
                                 {m: np.array([r['metric_scale'] for r in runs[m]]) for m in modes},
                                 np.array(median_ratio[first]))
        result['report_dir'] = str(report_path)
    return result


def _anchored_row(anchoring, index: int, stamp_s: Callable[[int], float] | None, pred: Prediction,
                  depth: np.ndarray, sample: Sample, max_anchors: int | None) -> dict[str, Any]:
    """One frame scored with the scale its anchors give (the model's own when none is usable)."""
    from mgeo_ros.eval.anchored import anchored_scale, choice_row

    points = np.where(pred.mask[..., None], pred.points, np.nan)
    stamp = stamp_s(index) if stamp_s is not None else math.nan
    factor, choice = anchored_scale(anchoring, stamp, depth, pred.mask, pred.intrinsics, points)
    row: dict[str, Any] = {'index': index, 'source': sample.source}
    row.update(frame_metrics(depth * np.float32(factor), points * np.float32(factor), sample, pred.intrinsics,
                             max_anchors))
    row.update(choice_row(choice, factor), metric_scale=float(pred.metric_scale) * factor)
    return row


SUMMARY_COLUMNS = (('depth_metric/abs_rel', 'AbsRel'), ('depth_metric/delta1', 'δ1'),
                   ('depth_scale/abs_rel', 'AbsRel(s)'), ('depth_scale/delta1', 'δ1(s)'),
                   ('depth_affine/abs_rel', 'AbsRel(a)'), ('points_metric/rel', 'PtRel'),
                   ('boundary_f1', 'F1'), ('fov_x_error_deg', 'FOVx°'), ('depth_scale/coverage', 'Cover'))


def summary_table(result: dict) -> str:
    """Model runs vs baselines, one row each: metric AbsRel/δ1, scale-/affine-invariant, points, boundary, FOV, and
    the share of valid-GT pixels the prediction covered."""
    rows = [(f'model ({m})', r['mean']) for m, r in result['runs'].items()]
    rows += [(f'anchored ({m})', r['mean']) for m, r in result.get('anchored', {}).items()]
    rows += [(f'baseline {n}', r['mean']) for n, r in result['baselines'].items()]
    width = max(len(name) for name, _ in rows)
    lines = [' '.join([f'{"":{width}}'] + [f'{title:>9}' for _, title in SUMMARY_COLUMNS])]
    for name, mean in rows:
        cells = []
        for key, _ in SUMMARY_COLUMNS:
            value = mean.get(key, math.nan)
            if not math.isfinite(value):
                cells.append(f'{"-":>9}')
            else:
                cells.append(f'{value:9.3f}' if abs(value) < 1e4 else f'{value:9.2e}')
        lines.append(' '.join([f'{name:{width}}'] + cells))
    return '\n'.join(lines)
