"""The frame-outputs stage: one frame's network outputs -> the finished frame-size arrays every consumer publishes
or scores (the ROS node, `mgeo eval`, bag replay through the node).

Steps, in order: focal/shift recovery on the network's small grid (CPU); the metric scale, smoothed over frames
(`ScaleFilter`); depth (z + shift) * smoothed scale upsampled to the frame (normalized bilinear, see postprocess)
with its validity; pixels past `max_depth` set apart (published as +Inf when asked); the flying-pixel test
(relative depth jump, and the view angle against the normals); `min_confidence`; then the wanted outputs: depth
(NaN invalid), validity, confidence, unit normals (the normal head's, or from the published depth), the organized
cloud's xyz. Normals are computed once per frame: when the view-angle test needs them (no normal head) the same
normals, NaN where the frame ends up invalid, are the published ones (they were made before the filters removed
pixels, so next to a removed pixel they still lean on it).

Buffer contract: the arrays of a `FrameOutputs` are the stage's own and are overwritten by its next `run`. Use or
copy them (publish them: rclpy serializes before `publish` returns) before running the next frame through the same
stage, from one thread. Unwanted outputs cost nothing: what no wanted output needs is not computed.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.normals import DepthNormals
from mgeo_ros.geometry.projection import decimated_shape, pixel_rays, unproject
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.flying_pixels import DepthJumpTest, grazing_mask
from mgeo_ros.runtime.frame_buffers import FrameBuffers
from mgeo_ros.runtime.post_graph import GraphShape, PostGraph, cos_view_angle
from mgeo_ros.runtime.postprocess import (
    Recovery,
    _upsample_valid,
    network_depth,
    recover,
    unit_normals_at,
    upsample_confidence,
)
from mgeo_ros.runtime.scale_filter import ScaleFilter, ScaleUpdate

# The arrays run() can be asked for (each output of the node's table names the ones it needs): depth, valid (the
# validity mask), confidence, normals, points (the organized cloud's xyz at points_stride), points_normals (the
# cloud's normals at points_stride).
STAGE_ARRAYS = frozenset({'depth', 'valid', 'confidence', 'normals', 'points', 'points_normals'})


@dataclass
class FrameSettings:
    """The per-pixel parameters (the node's parameters of the same names; units in mgeo_ros/node_params.py)."""

    mask_threshold: float = 0.5
    max_depth: float = 0.0  # metres; 0 = no limit
    inf_beyond_max_depth: bool = False  # the depth output shows +Inf past max_depth (else NaN)
    flying_pixel_max_jump: float = 0.0  # relative depth jump; 0 = off
    flying_pixel_radius: int = 1
    flying_pixel_max_view_angle: float = 0.0  # degrees; 0 = off
    min_confidence: float = 0.0
    points_stride: int = 1

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> FrameSettings:
        """The settings found in `cfg` (e.g. the node's parameters), defaults for the rest."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


@dataclass
class FrameOutputs:
    """One frame's finished arrays at the frame size (H×W), owned by the stage until its next run.

    depth: float32 metres, NaN invalid (+Inf past max_depth with inf_beyond_max_depth); None if not wanted.
    depth_valid: float32, the same with NaN also past max_depth: what points and normals are made from.
    valid: bool, the published validity. confidence: float32 [0, 1] or None. normals: float32 H×W×3 unit, NaN
    invalid, or None. points: float32 h×w×3 organized cloud xyz at `points_stride` (NaN invalid) or None;
    points_normals: its normals or None. intrinsics: the camera used (given or recovered).
    scale: the metric scale's update (raw, smoothed, reset); shift: the recovered z shift.
    """

    intrinsics: Intrinsics
    intrinsics_recovered: bool
    scale: ScaleUpdate
    shift: float
    valid: np.ndarray
    depth_valid: np.ndarray
    depth: np.ndarray | None = None
    confidence: np.ndarray | None = None
    normals: np.ndarray | None = None
    points: np.ndarray | None = None
    points_normals: np.ndarray | None = None
    network_valid: np.ndarray | None = field(default=None, repr=False)  # the validity on the network's grid
    coverage: np.ndarray | None = field(default=None, repr=False)  # its bilinear coverage at H×W (None: same size)
    data: dict = field(default_factory=dict, repr=False)  # output name -> the array('B') its array lives in
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.valid.shape[1], self.valid.shape[0]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


@dataclass(frozen=True)
class _Plan:
    """What one frame computes, decided once from the wanted arrays and the settings (both kernels follow it)."""

    stride: int  # the cloud's points_stride (0: no cloud)
    full_normals: bool  # frame-size normals are made (wanted, or what the cloud's normals are taken from)
    head_normals: bool  # the normal head's normals are upsampled (wanted, or for the view-angle test)


class FrameStage:
    """Stage 2 of a frame: RawOutput (+ the frame's intrinsics) -> FrameOutputs, with the state kept across frames
    (the scale filter, the buffers). One per camera; see the module docstring for the buffer contract.

    The per-pixel work is one of two kernels, numpy/OpenCV (`_numpy`) or the post graph (`_graph`, where the network
    runs): both write the same named arrays (depth, valid, beyond, confidence, normals, points) into the stage's
    buffers, and one assembly step (`_assemble`) makes the frame's outputs of them."""

    def __init__(self, settings: FrameSettings | None = None, scale: ScaleFilter | None = None,
                 post: PostGraph | None = None) -> None:
        self.settings = settings or FrameSettings()
        self.scale = scale or ScaleFilter()
        self.post = post  # run the per-pixel work as the post graph (runtime/post_graph.py) instead of numpy
        self.buffers = FrameBuffers()
        self._jump_test = DepthJumpTest()
        self._normals = DepthNormals()
        self._cloud_normals = DepthNormals()

    def run(self, raw: RawOutput, frame_size: tuple[int, int], intrinsics: Intrinsics | None = None,
            wanted: Iterable[str] = STAGE_ARRAYS,
            scale_source: Callable[[RawOutput, Recovery], float | None] | None = None) -> FrameOutputs:
        """One frame: `raw` at the network size, `frame_size` = (W, H) of the camera image, `intrinsics` for it
        (None: recovered from the model), `wanted` a subset of STAGE_ARRAYS (other names are ignored).
        `scale_source(raw, recovery)`: a metric scale for this frame from outside the network (None: the model's),
        used in place of the model's before the scale filter and the per-pixel work."""
        s, wanted = self.settings, frozenset(wanted)
        width, height = frame_size
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        rec = recover(raw, frame_size, intrinsics, s.mask_threshold)
        metric = rec.metric_scale
        if scale_source is not None:
            fitted = scale_source(raw, rec)
            if fitted is not None:
                metric = float(fitted)
        update = self.scale.update(metric)
        timings['recover'] = _ms(t0)
        stride = max(1, int(s.points_stride))
        angle = s.flying_pixel_max_view_angle > 0
        head = raw.normal is not None
        cloud = bool(wanted & {'points', 'points_normals'})
        plan = _Plan(stride if cloud else 0,
                     'normals' in wanted or ('points_normals' in wanted and (stride == 1 or angle or head)),
                     head and (bool(wanted & {'normals', 'points_normals'}) or angle))
        kernel = self._numpy if self.post is None else self._graph
        arrays = kernel(raw, rec, update.smoothed, width, height, plan, wanted, timings)
        return self._assemble(arrays, rec, update, plan, wanted, timings)

    # ---- the two kernels: the same named arrays, in the stage's buffers ---------------------------------------------
    def _numpy(self, raw: RawOutput, rec: Recovery, scale: float, width: int, height: int, plan: _Plan,
               wanted: frozenset, timings: dict) -> dict:
        s = self.settings
        t0 = time.perf_counter()
        depth, valid, coverage, valid_n = self._depth_at_frame(raw, rec, scale, width, height)
        head = None
        if plan.head_normals:
            head = unit_normals_at(raw.normal, valid, width, height,
                                   out=self._array('head_normals', (height, width, 3)))
        confidence = None
        if 'confidence' in wanted or s.min_confidence > 0:
            confidence = self._confidence(raw.mask, valid_n, width, height, coverage, valid)
        timings['upsample'] = _ms(t0)

        t0 = time.perf_counter()
        beyond = None  # pixels past max_depth (None: no limit set)
        if s.max_depth > 0:
            beyond = self._array('beyond', (height, width), bool)
            with np.errstate(invalid='ignore'):
                np.greater(depth, np.float32(s.max_depth), out=beyond)  # NaN: False
        normals = None  # full-size normals once made (from depth: of the depth before the filters)
        removed = None
        if s.flying_pixel_max_jump > 0:
            removed = self._jump_test(depth, s.flying_pixel_max_jump, int(s.flying_pixel_radius))
        if s.flying_pixel_max_view_angle > 0:
            if head is not None:
                normals = head
            else:  # every model-valid pixel (also past max_depth): a flying pixel is not kept for lack of its far side
                normals = self._normals(depth, rec.intrinsics, valid, out=self._array('normals', (height, width, 3)))
            grazing = grazing_mask(normals, rec.intrinsics, s.flying_pixel_max_view_angle)
            removed = grazing if removed is None else np.logical_or(removed, grazing, out=removed)
        if removed is not None:
            valid &= ~removed
        if confidence is not None and s.min_confidence > 0:
            valid &= confidence >= np.float32(s.min_confidence)
        if beyond is not None:
            beyond &= valid  # still valid past max_depth: +Inf when shown
            valid &= ~beyond
        np.copyto(depth, np.float32(np.nan), where=~valid)  # in place: the stage's own buffer
        timings['filter'] = _ms(t0)

        t0 = time.perf_counter()
        if plan.full_normals:
            normals = self._finished_normals(head, normals, depth, valid, rec.intrinsics, height, width)
        timings['normals'] = _ms(t0)
        t0 = time.perf_counter()
        points = self._points(depth, rec.intrinsics, plan.stride) if plan.stride else None
        timings['points'] = _ms(t0)
        return {'depth': depth, 'valid': valid, 'beyond': beyond, 'confidence': confidence,
                'normals': normals if plan.full_normals else None, 'points': points, 'network_valid': valid_n,
                'coverage': coverage}

    def _graph(self, raw: RawOutput, rec: Recovery, scale: float, width: int, height: int, plan: _Plan,
               wanted: frozenset, timings: dict) -> dict:
        """The per-pixel work as the post graph, its outputs written into the stage's buffers."""
        s = self.settings
        t0 = time.perf_counter()
        nh, nw = raw.mask.shape
        shape = GraphShape((nw, nh), (width, height), raw.normal is not None, int(s.flying_pixel_radius),
                           s.flying_pixel_max_jump > 0, s.flying_pixel_max_view_angle > 0, plan.full_normals,
                           plan.stride)
        intr = rec.intrinsics
        ray_x, ray_y = pixel_rays(intr)
        params = np.array([rec.shift, scale, intr.fx, intr.fy, s.max_depth if s.max_depth > 0 else np.inf,
                           s.flying_pixel_max_jump, cos_view_angle(s.flying_pixel_max_view_angle), s.min_confidence],
                          np.float32)
        inputs = {'z': raw.points[..., 2], 'probability': raw.mask, 'mask': rec.mask, 'params': params,
                  'ray_x': ray_x, 'ray_y': ray_y[:, None]}
        if shape.head:
            inputs['normal'] = raw.normal
        if shape.stride:
            cloud_x, cloud_y = pixel_rays(intr.decimated(plan.stride))
            inputs.update(cloud_ray_x=cloud_x, cloud_ray_y=cloud_y[:, None])
        arrays = {'depth': self._array('depth', (height, width)), 'valid': self._array('valid', (height, width), bool),
                  'beyond': self._array('beyond', (height, width), bool)}
        if 'confidence' in wanted:
            arrays['confidence'] = self._array('confidence', (height, width))
        if plan.full_normals:
            arrays['normals'] = self._array('normals', (height, width, 3))
        if shape.stride:
            arrays['points'] = self._array('points', (*decimated_shape(height, width, plan.stride), 3))
        self.post.run(shape, inputs, arrays)
        timings['post_graph'] = _ms(t0)
        return arrays

    # ---- one assembly for both kernels ------------------------------------------------------------------------------
    def _assemble(self, arrays: dict, rec: Recovery, update: ScaleUpdate, plan: _Plan, wanted: frozenset,
                  timings: dict) -> FrameOutputs:
        """The frame's outputs of the kernel's arrays: depth shown +Inf past max_depth when asked, the published
        buffers' bytes, the cloud's normals (the full-size ones decimated, else made on the cloud's own grid)."""
        s = self.settings
        t0 = time.perf_counter()
        depth, valid = arrays['depth'], arrays['valid']
        height, width = depth.shape
        out = FrameOutputs(rec.intrinsics, rec.recovered, update, rec.shift, valid, depth,
                           network_valid=arrays.get('network_valid'), coverage=arrays.get('coverage'))
        if 'depth' in wanted:
            out.depth, out.data['depth'] = depth, self.buffers.take('depth', (height, width))[0]
            beyond = arrays.get('beyond')
            if s.inf_beyond_max_depth and s.max_depth > 0 and beyond is not None and beyond.any():
                data, shown = self.buffers.take('depth_shown', (height, width))
                np.copyto(shown, depth)
                shown[beyond] = np.inf
                out.depth, out.data['depth'] = shown, data
        if 'confidence' in wanted:
            out.confidence, out.data['confidence'] = (arrays['confidence'],
                                                      self.buffers.take('confidence', (height, width))[0])
        normals = arrays.get('normals')
        if 'normals' in wanted:
            out.normals, out.data['normals'] = normals, self.buffers.take('normals', (height, width, 3))[0]
        if plan.stride:
            out.points = arrays['points']
            if 'points_normals' in wanted:
                out.points_normals = self._points_normals(depth, valid, normals, rec.intrinsics, plan.stride)
        timings['assemble'] = _ms(t0)
        out.timings_ms = timings
        return out

    # ---- pieces ---------------------------------------------------------------------------------------------------
    def _array(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        return self.buffers.array(name, shape, dtype)

    def _depth_at_frame(self, raw: RawOutput, rec, scale: float, width: int, height: int):
        """(depth NaN outside the mask, mask, bilinear coverage or None, network-grid validity), in the stage's
        buffers: the depth buffer is the published depth's."""
        depth_n, valid_n = network_depth(raw, rec, scale)
        depth = self._array('depth', (height, width))
        valid = self._array('valid', (height, width), bool)
        nh, nw = depth_n.shape
        if (nw, nh) == (width, height):
            np.copyto(valid, valid_n)
            np.copyto(depth, depth_n)
            np.copyto(depth, np.float32(np.nan), where=~valid)
            return depth, valid, None, valid_n
        coverage = self._array('coverage', (height, width))
        _upsample_valid(depth_n, valid_n, width, height, out=(depth, valid, coverage))
        return depth, valid, coverage, valid_n

    def _confidence(self, probability, valid_n, width, height, coverage, mask) -> np.ndarray:
        conf = self._array('confidence', (height, width))
        scratch = self._array('confidence_scratch', (height, width))
        got = upsample_confidence(probability, valid_n, width, height, coverage, mask, out=(conf, scratch))
        if got is not conf:  # at the network's own size, or OpenCV did not write into conf
            np.copyto(conf, got)
        return conf

    def _finished_normals(self, head, made, depth, valid, intr, height, width) -> np.ndarray:
        """The published normals (NaN where invalid), in the 'normals' buffer: the head's, those the view-angle
        test made, or made now from the finished depth."""
        out = self._array('normals', (height, width, 3))
        if head is not None:
            np.copyto(out, head)
        elif made is None:
            return self._normals(depth, intr, valid, out=out)
        np.copyto(out, np.float32(np.nan), where=~valid[..., None])
        return out

    def _points(self, depth: np.ndarray, intr: Intrinsics, stride: int) -> np.ndarray:
        """The organized cloud's xyz at `stride` (NaN invalid), written channel by channel into its buffer."""
        d = depth[::stride, ::stride] if stride > 1 else depth
        points = self._array('points', (*d.shape, 3))
        unproject(d, intr.decimated(stride) if stride > 1 else intr, out=points)
        return points

    def _points_normals(self, depth, valid, normals, intr: Intrinsics, stride: int) -> np.ndarray:
        """The cloud's normals: the full-size normals at `stride`, or made on the cloud's own decimated grid when
        there are none (stride² fewer pixels)."""
        if normals is not None:
            return normals[::stride, ::stride]
        rows, cols = decimated_shape(*depth.shape, stride)
        d = self._array('cloud_depth', (rows, cols))
        v = self._array('cloud_valid', (rows, cols), bool)
        np.copyto(d, depth[::stride, ::stride])
        np.copyto(v, valid[::stride, ::stride])
        return self._cloud_normals(d, intr.decimated(stride), v, out=self._array('points_normals', (rows, cols, 3)))


def postprocess(raw: RawOutput, frame_size: tuple[int, int], intrinsics: Intrinsics | None = None,
                mask_threshold: float = 0.5) -> dict:
    """RawOutput at the network resolution -> the fields of a `Prediction` at frame_size = (W, H): one frame through
    a `FrameStage` of its own (no smoothing, no filters), so the arrays are the caller's to keep."""
    wanted = {'depth'} if raw.normal is None else {'depth', 'normals'}  # a Prediction's normals are the head's
    out = FrameStage(FrameSettings(mask_threshold=mask_threshold)).run(raw, frame_size, intrinsics, wanted)
    return {'depth': out.depth, 'mask': out.valid, 'intrinsics': out.intrinsics, 'metric_scale': out.scale.raw,
            'normals': out.normals, 'intrinsics_recovered': out.intrinsics_recovered, 'shift': out.shift,
            'mask_probability': raw.mask, 'network_valid': out.network_valid, 'coverage': out.coverage}


def fov_degrees(intr: Intrinsics) -> tuple[float, float]:
    """(horizontal, vertical) field of view in degrees."""
    return math.degrees(intr.fov_x), math.degrees(intr.fov_y)
