"""Frames scored as the node publishes them: each frame goes through a `runtime.CameraSession` with the node's
parameters (the same preprocessing, per-pixel filters, depth range and scale smoothing as `mgeo_depth_node`), and
comes back as a `Prediction` of the published depth and validity."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.runtime.camera_session import CameraSession, LoadedModel
from mgeo_ros.runtime.prediction import Prediction

log = logging.getLogger(__name__)
WANTED = ('depth', 'valid')  # the stage arrays a score needs: the cloud is the depth unprojected (Prediction.points)


class NodeFrames:
    """One camera's frames in order through its own session: `predict` has `Predictor.predict`'s signature, and the
    depth it returns is the node's depth image with every invalid pixel NaN (beyond `max_depth` too)."""

    def __init__(self, model: LoadedModel, cfg: Mapping, camera: str = '') -> None:
        self.cfg = dict(cfg)
        self.session = CameraSession(self.cfg, log)
        self.session.attach(model, camera)

    def predict(self, rgb: np.ndarray, intrinsics: Intrinsics | None = None) -> Prediction:
        """The frame's published depth: `intrinsics` plays the camera_info (None: the model recovers them)."""
        raw = self.session.forward(rgb)
        height, width = rgb.shape[:2]
        given = intrinsics if self.cfg['use_camera_info'] else None
        out = self.session.outputs(raw, (width, height), given, WANTED, self.cfg, self.session.take_reset())
        return Prediction(depth=out.depth_valid.copy(), mask=out.valid.copy(), intrinsics=out.intrinsics,
                          metric_scale=float(out.scale.smoothed), intrinsics_recovered=out.intrinsics_recovered,
                          shift=float(out.shift), timings_ms={**raw.timings_ms, **out.timings_ms})


def node_model(predictor, path: str | Path) -> LoadedModel:
    """A loaded `Predictor` as the model a node's cameras share."""
    return LoadedModel(predictor, Path(path), str(predictor.backend_name))
