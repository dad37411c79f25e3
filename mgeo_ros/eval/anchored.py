"""`--scale-anchor` offline: the anchor sources a bag carries, read once, and per frame the scale the node would
use with the same `scale_source` list (runtime/scale_source.py: first usable source, else the model's own scale).
`mgeo eval` and the demo score the anchored depth beside the model's own and the oracle-aligned rows."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgeo_ros.bag_files import open_bag, read_messages
from mgeo_ros.errors import BadInputError
from mgeo_ros.eval.anchor_bag import AnchorSpec, parse_anchor_spec, read_anchor_topic
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.runtime.scale_anchors import Anchors
from mgeo_ros.runtime.scale_source import AnchorBuffer, AnchorSettings, ScaleAnchoring, ScaleChoice
from mgeo_ros.train.data.bag_writer import TYPESTORE


def image_frame_id(bag: str | Path, topic: str) -> str:
    """The frame_id of the first message on the bag's image `topic` (the camera's optical frame)."""
    with open_bag(bag) as reader:
        conns = {c.topic: c for c in reader.connections}
        if topic not in conns:
            raise BadInputError(f'bag {bag}: no image topic {topic!r} (topics: {", ".join(sorted(conns))})')
        for conn, _, raw in read_messages(bag, reader, [conns[topic]]):
            return TYPESTORE.deserialize_cdr(raw, conn.msgtype).header.frame_id
    raise BadInputError(f'bag {bag}: no message on the image topic {topic!r}, so the camera frame is unknown')


def parse_extrinsics(text: str | None) -> RigidTransform | None:
    """--scale-anchor-extrinsics 'x,y,z,qx,qy,qz,qw' -> RigidTransform; None/empty -> None (the bag's /tf_static)."""
    try:
        return RigidTransform.from_text(text or '')
    except BadInputError as exc:
        raise BadInputError(f'--scale-anchor-extrinsics: {exc}') from None


@dataclass
class AnchorSources:
    """The `--scale-anchor` list of one evaluation: its settings and each message source's anchors by stamp."""

    settings: AnchorSettings
    buffers: dict[str, AnchorBuffer[Anchors]] = field(default_factory=dict)

    @classmethod
    def from_specs(cls, specs: Sequence[str | AnchorSpec], bag: str | Path | None = None, camera_frame: str = '',
                   extrinsics: RigidTransform | None = None, min_points: int = 20,
                   max_age: float = 0.1) -> AnchorSources:
        """Parse and read every spec (message sources need `bag`; ground needs nothing but its mount)."""
        parsed = [s if isinstance(s, AnchorSpec) else parse_anchor_spec(s) for s in specs]
        seen = [s.source for s in parsed]
        twice = sorted({s for s in seen if seen.count(s) > 1})
        if twice:
            raise BadInputError(f'--scale-anchor names {", ".join(twice)} twice: give each source once, in the '
                                'fallback order')
        ground = next((s for s in parsed if s.source == 'ground'), AnchorSpec('ground'))
        settings = AnchorSettings.from_text(','.join(seen), min_points=min_points, max_age=max_age,
                                            camera_height=ground.camera_height, camera_pitch=ground.camera_pitch,
                                            camera_roll=ground.camera_roll)
        buffers = {}
        for spec in parsed:
            if spec.source == 'ground':
                continue
            if bag is None:
                raise BadInputError(f'--scale-anchor {spec.source}:{spec.topic} reads a topic: --data must be a bag '
                                    '(ground:HEIGHT[,PITCH[,ROLL]] works on any data)')
            buffers[spec.source] = read_anchor_topic(bag, spec.source, spec.topic, camera_frame, max_age,
                                                     extrinsics)
        return cls(settings, buffers)

    def anchoring(self) -> ScaleAnchoring:
        """A fresh per-run chooser (its own frame counts and transitions) over the shared anchors."""
        anchoring = ScaleAnchoring(self.settings)
        anchoring.buffers.update(self.buffers)
        return anchoring


def anchored_scale(anchoring: ScaleAnchoring, stamp_s: float, depth: np.ndarray, valid: np.ndarray,
                   intrinsics: Intrinsics, points: np.ndarray | None = None) -> tuple[float, ScaleChoice]:
    """(the factor to multiply the model's metric `depth` by, the choice): 1 when no source is usable."""
    choice = anchoring.choose(stamp_s, intrinsics, depth, valid, points, model_scale=1.0)
    scale = choice.fit.scale
    if scale is None or not (math.isfinite(scale) and scale > 0):
        return 1.0, choice
    return float(scale), choice


def choice_row(choice: ScaleChoice, factor: float) -> dict:
    """The per-frame record of a choice (JSON-ready)."""
    f = choice.fit
    return {'scale_source': choice.source, 'anchor_factor': factor, 'anchor_matched': f.matched,
            'anchor_residual': f.residual, 'anchor_reason': f.reason}
