"""Evaluation metrics: MoGe's depth/point set, the KITTI/NYU depth set, Depth Pro's boundary F1, FOV error and
temporal stability. numpy in, Python floats out.

Conventions (the same for every function here):
- depths are H×W metres, points H×W×3 metres in the camera frame; NaN/inf/≤0 means "no value";
- `mask` is the bool map of valid ground truth; a pixel is scored only where the GT is valid AND the prediction
  has a finite positive value there. `coverage` reports the share of valid-GT pixels that the prediction covered,
  so a model cannot look good by predicting only the easy pixels;
- alignments are MoGe's: solved on a 64×64 mask-aware nearest downsample with the exact truncated-L1 (ROE)
  solvers of `mgeo_ros.geometry.alignment`, weights 1/depth (1/‖point‖), then applied at full resolution.
  The affine disparity alignment is a plain least-squares fit in disparity on all valid pixels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics

ALIGN_RESOLUTION = 64                      # MoGe evaluates every alignment on a 64×64 downsample
DEPTH_ALIGNMENTS = ('none', 'scale', 'affine', 'affine_disparity')
POINT_ALIGNMENTS = ('none', 'shift', 'scale', 'affine')
BOUNDARY_THRESHOLDS = np.linspace(1.05, 1.25, 10)   # Depth Pro: neighbour depth ratios, weighted by t
MIN_ALIGNED_DEPTH = 1e-6                   # floor for depths after an affine alignment (which may go ≤ 0)
# The affine ROE solvers pin the shift at an anchor sample and solve the scale exactly. MoGe tries every sample as
# the anchor (≈4096: O(N² log N), 10-25 s of CPU per 640×480 frame). An even subset of 256 anchors is ~25x faster,
# solves exactly-affine data exactly, and moved AbsRel/Rel by < 1e-4 relative on noisy 640×480 maps; pass
# max_anchors=None for MoGe's full search.
MAX_ALIGN_ANCHORS: int | None = 256


# ---- helpers ----------------------------------------------------------------------------------------------------

class _LazyAlignment:
    """`mgeo_ros.geometry.alignment`, imported on first use: the unaligned metrics need no solver."""

    def __getattr__(self, name: str):
        import mgeo_ros.geometry.alignment as module
        return getattr(module, name)


_align = _LazyAlignment()


def _as_mask(mask: np.ndarray | None, shape: tuple[int, ...], name: str = 'mask') -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise BadInputError(f'{name} has shape {mask.shape}, expected {shape}')
    return mask.astype(bool, copy=False)


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise BadInputError(f'{name_a} has shape {a.shape} but {name_b} has shape {b.shape}')


def _low_res_samples(arrays: Sequence[np.ndarray], valid: np.ndarray) -> list[np.ndarray]:
    """The masked samples of each H×W(×C) array on MoGe's 64×64 mask-aware nearest downsample.

    Falls back to all valid full-resolution pixels when the downsample keeps fewer than 2 samples (tiny masks)."""
    smalls, small_mask = _align.masked_nearest_resize(tuple(arrays), valid, (ALIGN_RESOLUTION, ALIGN_RESOLUTION))
    small_mask = np.asarray(small_mask).astype(bool)
    out = [np.asarray(small)[small_mask] for small in smalls]
    if out and out[0].shape[0] < 2:
        out = [np.asarray(a)[valid] for a in arrays]
    return out


def _nan_depth_result(coverage: float) -> dict:
    keys = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog', 'delta1', 'delta2', 'delta3')
    out = {k: math.nan for k in keys}
    out.update(coverage=coverage, num_pixels=0, scale=math.nan, shift=math.nan)
    return out


# ---- depth ------------------------------------------------------------------------------------------------------

def align_depth(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, alignment: str,
                max_anchors: int | None = MAX_ALIGN_ANCHORS) -> tuple[np.ndarray, float, float]:
    """pred mapped onto gt by `alignment`; returns (aligned depth H×W float64, scale, shift).

    For 'affine_disparity' scale/shift act on disparity (1/depth); otherwise on depth."""
    pred = np.asarray(pred, dtype=np.float64)
    if alignment == 'none':
        return pred, 1.0, 0.0
    if alignment in ('scale', 'affine'):
        p, g = _low_res_samples([pred, np.asarray(gt, dtype=np.float64)], valid)
        w = 1.0 / g
        if alignment == 'scale':
            s = float(_align.align_depth_scale(p, g, w))
            return pred * s, s, 0.0
        s, t = _align.align_depth_affine(p, g, w, max_anchors=max_anchors)
        s, t = float(s), float(t)
        return np.maximum(pred * s + t, MIN_ALIGNED_DEPTH), s, t
    if alignment == 'affine_disparity':
        g = np.asarray(gt, dtype=np.float64)[valid]
        x = 1.0 / pred[valid]
        s, t = _align.align_affine_lstsq(x, 1.0 / g, np.ones_like(x))
        s, t = float(s), float(t)
        # a least-squares fit can push far disparities through zero: floor at the smallest GT disparity (MoGe)
        disparity = np.maximum((1.0 / pred) * s + t, 1.0 / g.max())
        return 1.0 / disparity, s, t
    raise BadInputError(f'alignment must be one of {DEPTH_ALIGNMENTS}, got {alignment!r}')


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
                  alignment: str = 'none', *, max_anchors: int | None = MAX_ALIGN_ANCHORS) -> dict:
    """MoGe's depth AbsRel/δ1 plus the KITTI/NYU set, after `alignment` ('none' = metric).

    Keys: abs_rel, sq_rel, rmse (m), rmse_log, log10, silog (×100), delta1..3, coverage, num_pixels, scale, shift.
    """
    if alignment not in DEPTH_ALIGNMENTS:
        raise BadInputError(f'alignment must be one of {DEPTH_ALIGNMENTS}, got {alignment!r}')
    pred, gt = np.asarray(pred), np.asarray(gt)
    if gt.ndim != 2:
        raise BadInputError(f'gt depth must be H×W, got shape {gt.shape}')
    _check_same_shape(pred, gt, 'pred', 'gt')
    gt_valid = _as_mask(mask, gt.shape) & np.isfinite(gt) & (gt > 0)
    with np.errstate(invalid='ignore'):
        valid = gt_valid & np.isfinite(pred) & (pred > 0)
    n_gt = int(gt_valid.sum())
    coverage = float(valid.sum()) / n_gt if n_gt else math.nan
    if valid.sum() < (3 if alignment != 'none' else 1):
        return _nan_depth_result(coverage)

    aligned, scale, shift = align_depth(pred, gt, valid, alignment, max_anchors)
    p = aligned[valid]
    g = gt[valid].astype(np.float64)
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return {
        'abs_rel': float(np.mean(np.abs(diff) / g)),
        'sq_rel': float(np.mean(diff ** 2 / g)),
        'rmse': float(np.sqrt(np.mean(diff ** 2))),
        'rmse_log': float(np.sqrt(np.mean(log_diff ** 2))),
        'log10': float(np.mean(np.abs(log_diff)) / math.log(10.0)),
        'silog': float(100.0 * np.sqrt(max(np.mean(log_diff ** 2) - np.mean(log_diff) ** 2, 0.0))),
        'delta1': float(np.mean(ratio < 1.25)),
        'delta2': float(np.mean(ratio < 1.25 ** 2)),
        'delta3': float(np.mean(ratio < 1.25 ** 3)),
        'coverage': coverage,
        'num_pixels': int(valid.sum()),
        'scale': scale,
        'shift': shift,
    }


# ---- points -----------------------------------------------------------------------------------------------------

def align_points(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, alignment: str,
                 max_anchors: int | None = MAX_ALIGN_ANCHORS) -> tuple[np.ndarray, float, np.ndarray]:
    """pred points mapped onto gt by `alignment`; returns (aligned H×W×3, scale, xyz shift [3])."""
    pred = np.asarray(pred, dtype=np.float64)
    zero = np.zeros(3)
    if alignment == 'none':
        return pred, 1.0, zero
    if alignment not in POINT_ALIGNMENTS:
        raise BadInputError(f'alignment must be one of {POINT_ALIGNMENTS}, got {alignment!r}')
    p, g = _low_res_samples([pred, np.asarray(gt, dtype=np.float64)], valid)
    w = 1.0 / np.linalg.norm(g, axis=-1)
    if alignment == 'shift':
        t = np.asarray(_align.align_points_xyz_shift(p, g, w), dtype=np.float64).reshape(3)
        return pred + t, 1.0, t
    if alignment == 'scale':
        s = float(_align.align_points_scale(p, g, w))
        return pred * s, s, zero
    s, t = _align.align_points_scale_xyz_shift(p, g, w, max_anchors=max_anchors)
    s, t = float(s), np.asarray(t, dtype=np.float64).reshape(3)
    return pred * s + t, s, t


def point_metrics(pred_points: np.ndarray, gt_points: np.ndarray, mask: np.ndarray | None = None,
                  alignment: str = 'none', *, max_anchors: int | None = MAX_ALIGN_ANCHORS) -> dict:
    """MoGe's point Rel and δ1 after `alignment` ('none'; 'shift' = MoGe's metric points, xyz translation only;
    'scale' = scale-invariant; 'affine' = scale + xyz shift). Keys: rel, delta1, coverage, num_pixels, scale, shift.
    """
    if alignment not in POINT_ALIGNMENTS:
        raise BadInputError(f'alignment must be one of {POINT_ALIGNMENTS}, got {alignment!r}')
    pred, gt = np.asarray(pred_points), np.asarray(gt_points)
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise BadInputError(f'gt_points must be H×W×3, got shape {gt.shape}')
    _check_same_shape(pred, gt, 'pred_points', 'gt_points')
    gt_norm = np.linalg.norm(gt, axis=-1)
    gt_valid = _as_mask(mask, gt.shape[:2]) & np.isfinite(gt).all(-1) & (gt_norm > 0)
    valid = gt_valid & np.isfinite(pred).all(-1)
    n_gt = int(gt_valid.sum())
    coverage = float(valid.sum()) / n_gt if n_gt else math.nan
    if valid.sum() < (3 if alignment != 'none' else 1):
        return {'rel': math.nan, 'delta1': math.nan, 'coverage': coverage, 'num_pixels': 0,
                'scale': math.nan, 'shift': [math.nan] * 3}

    aligned, scale, shift = align_points(pred, gt, valid, alignment, max_anchors)
    p, g = aligned[valid], gt[valid].astype(np.float64)
    err = np.linalg.norm(p - g, axis=-1)
    g_norm, p_norm = np.linalg.norm(g, axis=-1), np.linalg.norm(p, axis=-1)
    return {
        'rel': float(np.mean(err / g_norm)),
        'delta1': float(np.mean(err < 0.25 * np.minimum(g_norm, p_norm))),
        'coverage': coverage,
        'num_pixels': int(valid.sum()),
        'scale': scale,
        'shift': [float(v) for v in shift],
    }


# ---- boundaries (Depth Pro) -------------------------------------------------------------------------------------

def _occlusion_relations(depth: np.ndarray, ratio: float) -> tuple[np.ndarray, ...]:
    """Four neighbour-pair maps: True where one pixel of the pair is nearer than the other by more than `ratio`
    (inverse-depth ratio, as Depth Pro). Order: left-of-pair nearer, right nearer, top nearer, bottom nearer."""
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / np.clip(depth, 1e-6, None)
        horizontal = inv[:, :-1] / inv[:, 1:]
        vertical = inv[:-1, :] / inv[1:, :]
        return horizontal > ratio, 1.0 / horizontal > ratio, vertical > ratio, 1.0 / vertical > ratio


def _pair_masks(valid: np.ndarray) -> tuple[np.ndarray, ...]:
    horizontal = valid[:, :-1] & valid[:, 1:]
    vertical = valid[:-1, :] & valid[1:, :]
    return horizontal, horizontal, vertical, vertical


def boundary_precision_recall(pred_depth: np.ndarray, gt_depth: np.ndarray, ratio: float,
                              mask: np.ndarray | None = None) -> tuple[float, float, bool]:
    """Depth Pro's per-threshold precision and recall of occlusion relations, averaged over neighbour directions.

    Only pairs with both pixels valid count. Returns (precision, recall, gt_has_edges). Depth Pro averages all four
    directions with a denominator of max(count, 1), which scores a perfect copy of a one-sided edge 0.25; here
    recall averages the directions where the GT has edges and precision those where the prediction has edges.
    Identical to Depth Pro whenever every direction has an edge (any natural image)."""
    pred_depth, gt_depth = np.asarray(pred_depth, dtype=np.float64), np.asarray(gt_depth, dtype=np.float64)
    valid = _as_mask(mask, gt_depth.shape) & np.isfinite(gt_depth) & (gt_depth > 0)
    precisions, recalls = [], []
    for p, g, v in zip(_occlusion_relations(pred_depth, ratio), _occlusion_relations(gt_depth, ratio),
                       _pair_masks(valid)):
        p, g = p & v, g & v
        n_pred, n_gt = np.count_nonzero(p), np.count_nonzero(g)
        tp = np.count_nonzero(p & g)
        if n_pred:
            precisions.append(tp / n_pred)
        if n_gt:
            recalls.append(tp / n_gt)
    precision = float(np.mean(precisions)) if precisions else 0.0
    recall = float(np.mean(recalls)) if recalls else 0.0
    return precision, recall, bool(recalls)


def boundary_f1(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Depth Pro's scale-invariant boundary F1 (radius 1: 4-neighbour pairs): F1 of occlusion-boundary relations
    (neighbour inverse-depth ratio > t) at t = 1.05…1.25 (10 steps), averaged with weights t / Σt.

    NaN when the GT has no boundary at any threshold (the metric is undefined there, not perfect)."""
    pred_depth, gt_depth = np.asarray(pred_depth), np.asarray(gt_depth)
    if gt_depth.ndim != 2:
        raise BadInputError(f'gt_depth must be H×W, got shape {gt_depth.shape}')
    _check_same_shape(pred_depth, gt_depth, 'pred_depth', 'gt_depth')
    weights = BOUNDARY_THRESHOLDS / BOUNDARY_THRESHOLDS.sum()
    total, any_gt_edge = 0.0, False
    for t, w in zip(BOUNDARY_THRESHOLDS, weights):
        p, r, has_edges = boundary_precision_recall(pred_depth, gt_depth, float(t), mask)
        any_gt_edge |= has_edges
        total += w * (2.0 * p * r / (p + r) if p + r > 0 else 0.0)
    return float(total) if any_gt_edge else math.nan


def boundary_map(depth: np.ndarray, ratio: float = 1.15, mask: np.ndarray | None = None) -> np.ndarray:
    """H×W bool: pixels on the near side of an occlusion boundary at `ratio` (for overlays in reports)."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = _as_mask(mask, depth.shape) & np.isfinite(depth) & (depth > 0)
    left, right, top, bottom = (r & v for r, v in zip(_occlusion_relations(depth, ratio), _pair_masks(valid)))
    out = np.zeros(depth.shape, dtype=bool)
    out[:, :-1] |= left
    out[:, 1:] |= right
    out[:-1, :] |= top
    out[1:, :] |= bottom
    return out


# ---- camera -----------------------------------------------------------------------------------------------------

def fov_error(pred_intr: Intrinsics, gt_intr: Intrinsics, axis: str = 'x') -> float:
    """|FOV_pred − FOV_gt| in degrees along `axis` ('x' horizontal, as MoGe reports, or 'y')."""
    if axis not in ('x', 'y'):
        raise BadInputError(f"axis must be 'x' or 'y', got {axis!r}")
    a, b = (pred_intr.fov_x, gt_intr.fov_x) if axis == 'x' else (pred_intr.fov_y, gt_intr.fov_y)
    return float(abs(math.degrees(a - b)))


# ---- temporal ---------------------------------------------------------------------------------------------------

def scale_jitter(metric_scales: Sequence[float], detrend: str = 'linear') -> float:
    """Std of log metric scale over a sequence after removing its trend ('linear' least-squares line, or 'none').

    A slowly drifting scale (the scene really gets nearer) is not jitter; frame-to-frame wobble is.
    NaN for fewer than 2 finite scales."""
    s = np.asarray(metric_scales, dtype=np.float64).reshape(-1)
    keep = np.isfinite(s) & (s > 0)
    if keep.sum() < 2:
        return math.nan
    t, log_s = np.nonzero(keep)[0].astype(np.float64), np.log(s[keep])
    if detrend == 'linear':
        if keep.sum() < 3:
            return 0.0
        slope, intercept = np.polyfit(t, log_s, 1)
        log_s = log_s - (slope * t + intercept)
    elif detrend != 'none':
        raise BadInputError(f"detrend must be 'linear' or 'none', got {detrend!r}")
    return float(np.std(log_s))


def scale_step(metric_scales: Sequence[float]) -> float:
    """RMS of the frame-to-frame change of log metric scale (jitter that no trend explains). NaN for < 2 frames."""
    s = np.asarray(metric_scales, dtype=np.float64).reshape(-1)
    if s.size < 2:
        return math.nan
    with np.errstate(divide='ignore', invalid='ignore'):
        steps = np.diff(np.log(s))
    steps = steps[np.isfinite(steps)]
    return float(np.sqrt(np.mean(steps ** 2))) if steps.size else math.nan


def depth_flicker(depths: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None,
                  static_mask: np.ndarray | None = None) -> float:
    """Mean frame-to-frame relative depth change |d_t − d_{t−1}| / ((d_t + d_{t−1}) / 2) on static pixels.

    Pixels count where both frames are valid (finite, > 0, in their masks) and in `static_mask` (H×W, or T×H×W per
    frame; None = every pixel, i.e. a static camera looking at a static scene). Averaged over pixels per frame pair,
    then over pairs. NaN for fewer than 2 frames."""
    d = np.asarray(depths, dtype=np.float64)
    if d.ndim != 3:
        raise BadInputError(f'depths must be a T×H×W sequence, got shape {d.shape}')
    if d.shape[0] < 2:
        return math.nan
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(d) & (d > 0)
    if masks is not None:
        m = np.asarray(masks, dtype=bool)
        if m.shape != d.shape:
            raise BadInputError(f'masks has shape {m.shape}, expected {d.shape}')
        valid &= m
    pair = valid[1:] & valid[:-1]
    if static_mask is not None:
        sm = np.asarray(static_mask, dtype=bool)
        if sm.shape == d.shape:
            sm = sm[1:] & sm[:-1]
        elif sm.shape != d.shape[1:]:
            raise BadInputError(f'static_mask has shape {sm.shape}, expected {d.shape[1:]} or {d.shape}')
        pair &= sm
    with np.errstate(invalid='ignore', divide='ignore'):
        rel = np.abs(d[1:] - d[:-1]) / (0.5 * (d[1:] + d[:-1]))
    rel = np.where(pair, rel, 0.0)
    counts = pair.sum(axis=(1, 2))
    per_pair = rel.sum(axis=(1, 2))[counts > 0] / counts[counts > 0]
    return float(per_pair.mean()) if per_pair.size else math.nan
