"""Scale anchors from a bag, offline (rosbags, no ROS): `--scale-anchor` specs, every anchor message of a topic in a
stamp-keyed buffer, and the anchor sensor's pose from the bag's /tf_static."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgeo_ros.bag_files import open_bag, read_messages, require_topic
from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.rigid import RigidTransform, rotation_from_quaternion
from mgeo_ros.runtime.anchor_messages import MESSAGE_TYPES, anchors_from_message
from mgeo_ros.runtime.scale_anchors import ANCHOR_SOURCES, Anchors
from mgeo_ros.runtime.scale_source import AnchorBuffer
from mgeo_ros.train.data.bag_writer import TF, TYPESTORE

TF_TOPICS = ('/tf_static',)


@dataclass(frozen=True)
class AnchorSpec:
    """One `--scale-anchor`: source and topic (depth, scan, points, range) or the mount (ground)."""

    source: str
    topic: str = ''
    camera_height: float = 0.0
    camera_pitch: float = 0.0
    camera_roll: float = 0.0


def parse_anchor_spec(text: str) -> AnchorSpec:
    """'scan:/robot/scan' or 'ground:0.35,15[,ROLL]' -> AnchorSpec."""
    source, sep, rest = text.partition(':')
    source = source.strip()
    if not sep or source not in ANCHOR_SOURCES or not rest.strip():
        raise BadInputError(f'--scale-anchor {text!r}: expected SOURCE:TOPIC with SOURCE one of depth, scan, points, '
                            'range (e.g. scan:/scan), or ground:HEIGHT[,PITCH[,ROLL]] (metres, degrees)')
    if source != 'ground':
        return AnchorSpec(source, rest.strip())
    try:
        values = [float(v) for v in rest.split(',')]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) for v in values) or values[0] <= 0:
        raise BadInputError(f'--scale-anchor {text!r}: ground wants HEIGHT[,PITCH[,ROLL]] with a height > 0 m and '
                            'angles in degrees (pitch down positive), e.g. ground:0.35,15')
    values += [0.0] * (3 - len(values))
    return AnchorSpec('ground', '', *values)


def _transform_of(msg) -> RigidTransform:
    t, q = msg.transform.translation, msg.transform.rotation
    return RigidTransform(rotation_from_quaternion(q.x, q.y, q.z, q.w), np.array([t.x, t.y, t.z]))


def _inverse(tf: RigidTransform) -> RigidTransform:
    return RigidTransform(tf.rotation.T, -tf.rotation.T @ tf.translation)


def _compose(a: RigidTransform, b: RigidTransform) -> RigidTransform:
    """a after b: p_a_target = a(b(p))."""
    return RigidTransform(a.rotation @ b.rotation, a.rotation @ b.translation + a.translation)


def static_transform(bag, target_frame: str, source_frame: str) -> RigidTransform | None:
    """The pose of `source_frame` in `target_frame` from the bag's /tf_static (chains of parent/child transforms
    walked in either direction), or None when the bag does not connect them."""
    if target_frame == source_frame:
        return RigidTransform.identity()
    edges: dict[str, list[tuple[str, RigidTransform]]] = {}
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic in TF_TOPICS and c.msgtype == TF]
        for _, _, raw in read_messages(bag, reader, conns):
            for ts in TYPESTORE.deserialize_cdr(raw, TF).transforms:
                parent, child = ts.header.frame_id.lstrip('/'), ts.child_frame_id.lstrip('/')
                child_in_parent = _transform_of(ts)
                edges.setdefault(parent, []).append((child, child_in_parent))
                edges.setdefault(child, []).append((parent, _inverse(child_in_parent)))
    # breadth first from the target: pose of each reached frame in the target frame
    target, source = target_frame.lstrip('/'), source_frame.lstrip('/')
    found = {target: RigidTransform.identity()}
    queue = deque([target])
    while queue:
        frame = queue.popleft()
        for nxt, nxt_in_frame in edges.get(frame, []):
            if nxt not in found:
                found[nxt] = _compose(found[frame], nxt_in_frame)
                queue.append(nxt)
    return found.get(source)


def read_anchor_topic(bag, source: str, topic: str, camera_frame: str, max_age: float = 0.1,
                      extrinsics: RigidTransform | None = None) -> AnchorBuffer[Anchors]:
    """Every anchor message on `topic`, converted, in a buffer that gives each frame the nearest one by stamp within
    `max_age` s. Point sources are moved into `camera_frame` by `extrinsics` when given, else by the bag's
    /tf_static from the message's frame_id (identity when the frame is the camera's)."""
    path = Path(bag)
    items: list[Anchors] = []
    poses: dict[str, RigidTransform] = {}
    with open_bag(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        require_topic(path, conns, topic, f'--scale-anchor {source}', (MESSAGE_TYPES[source],))
        for conn, _, raw in read_messages(path, reader, [conns[topic]]):
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            ext = extrinsics
            if ext is None and source != 'depth':
                frame = msg.header.frame_id
                if frame not in poses:
                    pose = static_transform(path, camera_frame, frame)
                    if pose is None:
                        raise BadInputError(f'--scale-anchor {source}:{topic}: the bag\'s /tf_static does not connect '
                                            f'{frame!r} to the camera frame {camera_frame!r}; give the sensor\'s pose '
                                            'in the optical frame as --scale-anchor-extrinsics X Y Z QX QY QZ QW')
                    poses[frame] = pose
                ext = poses[frame]
            items.append(anchors_from_message(source, msg, ext))
    buffer: AnchorBuffer[Anchors] = AnchorBuffer(max_age, capacity=max(1, len(items)))
    for a in items:
        buffer.add(a.stamp, a)
    return buffer
