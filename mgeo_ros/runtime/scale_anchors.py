"""Metric scale from the robot's own sensors: anchor objects, matching them to a frame, and the robust fit.

An anchor is either metric depth at pixels of a registered depth image (`PixelAnchors`), or metric 3-D points in a
sensor's frame with that sensor's pose in the camera's optical frame (`PointAnchors`: a LaserScan, a PointCloud2, a
single Range reading). `match_anchors` pairs anchors with the frame's predicted depth (points are projected with the
frame's intrinsics; points behind the camera, outside the image or on pixels the caller marks invalid are dropped),
and `fit_scale` turns the pairs into one scale: the factor that makes the predicted depth agree with the anchors,
robust to a fifth of the anchors being wrong by a factor of three (glass, multipath): a Tukey biweight in log space
started from the densest half of the ratios picks the inliers, and their AbsRel-optimal scale (a weighted median of
the ratios) is the fit. `fit_ground` does the same from a camera's known mount height and the
floor found in the predicted points. Plain arrays in, plain numbers out: the node and `mgeo eval` share it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.ground_plane import find_ground_plane
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.geometry.robust import TUKEY_C, robust_location

MESSAGE_SOURCES = ('depth', 'scan', 'points', 'range')   # the sources that come as messages
ANCHOR_SOURCES = (*MESSAGE_SOURCES, 'ground')
MODEL = 'model'
RANGE_MIN_POINTS = 1          # one rangefinder reading is one anchor; smoothing carries the scale between readings
MAX_DEPTH_ANCHORS = 10_000    # a dense depth image is thinned to this many evenly spread anchors
MAX_FIT_POINTS = 4096         # the fit's statistics settle long before this many pairs; more are thinned evenly


def parse_scale_sources(text: str | Sequence[str]) -> tuple[str, ...]:
    """'scan,ground' -> ('scan', 'ground', 'model'): the fallback order, always ending with the model's own scale."""
    items = [s.strip() for s in (text.split(',') if isinstance(text, str) else text)]
    out: list[str] = []
    for name in items:
        if not name:
            continue
        if name not in (*ANCHOR_SOURCES, MODEL):
            raise BadInputError(f'scale_source {text!r}: {name!r} is not a source; expected a comma-separated list '
                                f'of {", ".join(ANCHOR_SOURCES)} (tried in order; {MODEL} always comes last)')
        if name == MODEL:
            break
        if name not in out:
            out.append(name)
    return (*out, MODEL)


def required_points(source: str, min_points: int) -> int:
    """Matches a source needs for a usable fit: `min_points` (scale_anchor_min_points), 1 for a rangefinder."""
    return RANGE_MIN_POINTS if source == 'range' else max(1, int(min_points))


# ---- anchor objects ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelAnchors:
    """Metric z-depth at pixel centres (u, v) of a registered depth image of `size` (W, H) with the camera's field
    of view (any resolution: pixels are mapped to the frame by the size ratio)."""

    u: np.ndarray
    v: np.ndarray
    depth: np.ndarray
    size: tuple[int, int]
    stamp: float = 0.0
    source: str = 'depth'
    invalid_reason: str = ''

    def __len__(self) -> int:
        return int(self.depth.size)


@dataclass(frozen=True)
class PointAnchors:
    """N x 3 metric points in the anchor sensor's frame and that sensor's pose in the camera's optical frame
    (identity: the points already are in the optical frame)."""

    points: np.ndarray
    extrinsics: RigidTransform = field(default_factory=RigidTransform.identity)
    stamp: float = 0.0
    source: str = 'points'
    invalid_reason: str = ''

    def __len__(self) -> int:
        return int(self.points.shape[0])


Anchors = PixelAnchors | PointAnchors


def pixel_anchors_from_depth(depth: np.ndarray, stamp: float = 0.0, source: str = 'depth',
                             max_anchors: int = MAX_DEPTH_ANCHORS) -> PixelAnchors:
    """A registered depth image (float metres, or uint16 millimetres as 16UC1) -> its valid pixels as anchors; NaN,
    inf, 0 and negative are no return. More than `max_anchors` valid pixels are thinned evenly."""
    d = np.asarray(depth)
    if d.ndim != 2:
        raise BadInputError(f'anchor depth image has shape {d.shape}: expected H x W (one channel)')
    if d.dtype == np.uint16:
        d = np.multiply(d, np.float32(1e-3), dtype=np.float32)
    flat = d.reshape(-1)
    idx = np.flatnonzero(np.isfinite(flat) & (flat > 0))
    if idx.size > max_anchors:
        idx = idx[np.linspace(0, idx.size - 1, max_anchors).astype(np.int64)]
    v, u = np.divmod(idx, d.shape[1])
    reason = '' if idx.size else 'no valid depth (all NaN, 0 or inf)'
    return PixelAnchors(u.astype(np.float32), v.astype(np.float32), flat[idx].astype(np.float32),
                        (int(d.shape[1]), int(d.shape[0])), float(stamp), source, reason)


def point_anchors_from_scan(ranges: np.ndarray, angle_min: float, angle_increment: float, range_min: float,
                            range_max: float, extrinsics: RigidTransform | None = None, stamp: float = 0.0,
                            ) -> PointAnchors:
    """LaserScan beams -> points in the scan's frame (x forward, y left: beam i at angle_min + i·angle_increment);
    ranges outside [range_min, range_max] and non-finite ones are no return."""
    r = np.asarray(ranges, dtype=np.float32).reshape(-1)
    ok = np.isfinite(r) & (r >= range_min) & (r <= range_max)
    angles = float(angle_min) + float(angle_increment) * np.flatnonzero(ok)
    rr = r[ok].astype(np.float64)
    pts = np.stack([rr * np.cos(angles), rr * np.sin(angles), np.zeros_like(rr)], axis=1)
    reason = '' if ok.any() else (f'empty scan (0 of {r.size} ranges inside [{range_min:g}, {range_max:g}] m)')
    return PointAnchors(pts, extrinsics or RigidTransform.identity(), float(stamp), 'scan', reason)


def point_anchors_from_range(range_m: float, min_range: float, max_range: float,
                             extrinsics: RigidTransform | None = None, stamp: float = 0.0) -> PointAnchors:
    """One rangefinder reading -> its hit point on the sensor's x axis (REP 117: out of [min, max] or non-finite is
    no return)."""
    r = float(range_m)
    ok = math.isfinite(r) and min_range <= r <= max_range
    pts = np.array([[r, 0.0, 0.0]]) if ok else np.zeros((0, 3))
    reason = '' if ok else f'range {r:g} m is outside [{min_range:g}, {max_range:g}] m (no return)'
    return PointAnchors(pts, extrinsics or RigidTransform.identity(), float(stamp), 'range', reason)


def point_anchors(points: np.ndarray, extrinsics: RigidTransform | None = None, stamp: float = 0.0,
                  source: str = 'points') -> PointAnchors:
    """N x 3 (or H x W x 3, organized) points in the sensor's frame; non-finite ones are dropped."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    reason = '' if len(p) else 'no finite points'
    return PointAnchors(p, extrinsics or RigidTransform.identity(), float(stamp), source, reason)


# ---- matching ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnchorMatch:
    """Anchor depth and predicted depth (metres, z) at the frame pixels they share; `reason` when none."""

    anchor: np.ndarray
    predicted: np.ndarray
    reason: str = ''


def _empty(reason: str) -> AnchorMatch:
    return AnchorMatch(np.zeros(0, np.float32), np.zeros(0, np.float32), reason)


def match_anchors(anchors: Anchors, intrinsics: Intrinsics, depth: np.ndarray,
                  valid: np.ndarray | None = None) -> AnchorMatch:
    """Pair anchors with the H x W predicted z-depth (any positive scale) at the pixels they fall on.

    Pixel anchors map by the size ratio of their image to the frame; point anchors are moved into the optical frame
    by their extrinsics and projected with `intrinsics` (at the frame's size). Dropped: points behind the camera,
    outside the image, on pixels where `valid` (H x W bool: mask, flying pixels, confidence) is False or the
    predicted depth is not positive and finite."""
    h, w = depth.shape
    if (intrinsics.width, intrinsics.height) != (w, h):
        intrinsics = intrinsics.resized(w, h)
    if len(anchors) == 0:
        return _empty(anchors.invalid_reason or 'no anchors')
    if isinstance(anchors, PixelAnchors):
        aw, ah = anchors.size
        col = np.rint((anchors.u + 0.5) * (w / aw) - 0.5).astype(np.int64)
        row = np.rint((anchors.v + 0.5) * (h / ah) - 0.5).astype(np.int64)
        z = anchors.depth
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    else:
        cam = anchors.extrinsics.apply(anchors.points)
        z = cam[:, 2]
        front = z > 1e-6
        if not front.any():
            return _empty('all behind the camera')
        cam, z = cam[front], z[front]
        col = np.rint(cam[:, 0] / z * intrinsics.fx + intrinsics.cx)
        row = np.rint(cam[:, 1] / z * intrinsics.fy + intrinsics.cy)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        col, row = col.astype(np.int64), row.astype(np.int64)
    if not inside.any():
        return _empty('all outside the image')
    flat = row[inside] * w + col[inside]
    z = np.asarray(z, dtype=np.float32)[inside]
    pred = depth.reshape(-1)[flat]
    ok = np.isfinite(pred) & (pred > 0)
    if valid is not None:
        ok &= valid.reshape(-1)[flat]
    if not ok.any():
        return _empty('all on invalid pixels')
    return AnchorMatch(z[ok], pred[ok].astype(np.float32))


# ---- the fit ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScaleFit:
    """One source's verdict for one frame.

    scale: multiply the predicted depth by it (None when the source is unusable, with `reason`); matched: anchor
    pixels used; inliers: those the robust fit kept; residual: median |anchor - scale·predicted| / anchor over the
    matched pixels; ratio: scale / the model's own scale for the same depth."""

    source: str
    scale: float | None = None
    matched: int = 0
    inliers: int = 0
    residual: float = math.nan
    ratio: float = math.nan
    reason: str = ''

    @property
    def usable(self) -> bool:
        return self.scale is not None


def robust_log_scale(log_ratio: np.ndarray, c: float = TUKEY_C) -> tuple[float, np.ndarray]:
    """(log scale, inlier mask) of log(anchor / predicted): `robust_location` of the log ratios (measured: a median
    and one k·MAD cut is 5-15 % off in scale on the demo's frames with a fifth of the anchors off by 3x; this stays
    within 2 % in AbsRel)."""
    return robust_location(log_ratio, c)


def absrel_optimal_scale(ratio: np.ndarray) -> float:
    """The s minimizing Σ|s·predicted − anchor| / anchor over the pairs with anchor / predicted = `ratio`: the
    median of the ratios weighted by 1 / ratio. The biweight's own centre (a mean of log ratios) sits off this
    optimum when the prediction's errors are skewed (measured on the demo bag: 6 % worse AbsRel than the oracle's
    scale, against 0.2 % for this one)."""
    r = np.sort(np.asarray(ratio, dtype=np.float64))
    cum = np.cumsum(1.0 / r)
    return float(r[min(int(np.searchsorted(cum, 0.5 * cum[-1])), r.size - 1)])


def fit_scale(anchor: np.ndarray, predicted: np.ndarray, min_points: int, source: str = 'depth',
              model_scale: float = 1.0) -> ScaleFit:
    """The robust scale that maps `predicted` depth onto `anchor` depth (both metres-like, same pixels)."""
    a = np.asarray(anchor, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    n = int(a.size)
    if n < min_points:
        return ScaleFit(source, matched=n, reason=f'too few points ({n} matched, need {min_points})')
    if n > MAX_FIT_POINTS:
        pick = np.linspace(0, n - 1, MAX_FIT_POINTS).astype(np.int64)
        a, p = a[pick], p[pick]
    log_ratio = np.log(a) - np.log(p)
    _, inl = robust_log_scale(log_ratio)
    inliers = int(inl.sum()) if n <= MAX_FIT_POINTS else round(inl.mean() * n)
    scale = absrel_optimal_scale(np.exp(log_ratio[inl])) if inl.any() else math.nan
    if not (math.isfinite(scale) and scale > 0):
        return ScaleFit(source, matched=n, reason='the fit gave no finite positive scale')
    residual = float(np.median(np.abs(a - scale * p) / a))
    return ScaleFit(source, scale, n, inliers, residual, scale / model_scale)


def fit_anchors(anchors: Anchors, intrinsics: Intrinsics, depth: np.ndarray, valid: np.ndarray | None,
                min_points: int, model_scale: float = 1.0) -> ScaleFit:
    """match_anchors + fit_scale: one source's fit for one frame (min_points is raised to 1 for 'range')."""
    match = match_anchors(anchors, intrinsics, depth, valid)
    if match.reason:
        return ScaleFit(anchors.source, reason=match.reason)
    return fit_scale(match.anchor, match.predicted, required_points(anchors.source, min_points), anchors.source,
                     model_scale)


def fit_ground(points: np.ndarray | Callable[[], np.ndarray], valid: np.ndarray | None, camera_height: float,
               pitch_deg: float = 0.0, roll_deg: float = 0.0, max_tilt_deg: float = 20.0, min_points: int = 20,
               model_scale: float = 1.0) -> ScaleFit:
    """Scale from a camera `camera_height` metres above a flat floor: height / the floor's distance in the
    predicted H x W x 3 points (optical frame, any positive scale; or a function making them, called only when
    the source is on). camera_height <= 0 means off."""
    if not camera_height > 0:
        return ScaleFit('ground', reason='camera_height is 0 (off)')
    if callable(points):
        points = points()
    found = find_ground_plane(points, valid, pitch_deg, roll_deg, max_tilt_deg, min_inliers=max(3, min_points))
    if found.plane is None:
        return ScaleFit('ground', matched=found.candidates, reason=found.reason)
    plane = found.plane
    scale = float(camera_height) / plane.distance
    return ScaleFit('ground', scale, found.candidates, plane.inliers, plane.spread, scale / model_scale)
