"""`Prediction`: the contract between runtime, node, evaluator and benchmarks (docs/architecture.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.runtime.postprocess import upsample_confidence


@dataclass
class Prediction:
    """One frame's output, at the input image's resolution, in SI units and the ROS optical frame.

    depth: H×W float32 z-depth in metres, NaN where invalid (REP 117).
    points: H×W×3 float32 metres, NaN where invalid; unprojected from depth with `intrinsics` on first use (the
        node writes its cloud straight into the message instead, so a frame nobody asks points of pays nothing).
    mask: H×W bool, True where the model says the geometry is valid.
    normals: H×W×3 float32 unit vectors (NaN invalid) or None when the model has no normal head.
    intrinsics: the camera actually used, in pixels for H×W (given by CameraInfo or recovered from the point map).
    intrinsics_recovered: True when intrinsics came from the model rather than the caller.
    metric_scale: the scale-head output that turned the affine-invariant map into metres.
    timings_ms: per-stage wall times ('preprocess', 'forward', 'postprocess', ...).
    mask_probability, network_valid: the mask head's probability and the validity at the network resolution, from
        which `confidence` is made on first use; coverage: the bilinear coverage of `network_valid` at H×W that
        the depth's upsampling computed (None at the network's own size), reused by `confidence`.
    confidence: H×W float32 in [0, 1], the mask head's probability at the frame size (see `upsample_confidence`):
        how sure the network is that the pixel shows measurable geometry (not sky, not a void). It is not a depth
        error bar: a confident pixel can still be metres off when the metric scale is wrong.
    """

    depth: np.ndarray
    mask: np.ndarray
    intrinsics: Intrinsics
    metric_scale: float
    normals: np.ndarray | None = None
    intrinsics_recovered: bool = False
    shift: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)
    mask_probability: np.ndarray | None = field(default=None, repr=False)
    network_valid: np.ndarray | None = field(default=None, repr=False)
    coverage: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def points(self) -> np.ndarray:
        return unproject(self.depth, self.intrinsics)

    @cached_property
    def confidence(self) -> np.ndarray:
        height, width = self.depth.shape
        if self.mask_probability is None:  # built by hand without the network's outputs: the mask is all we know
            return self.mask.astype(np.float32)
        valid = self.network_valid if self.network_valid is not None else self.mask_probability > 0.5
        return upsample_confidence(self.mask_probability, valid, width, height, self.coverage)
