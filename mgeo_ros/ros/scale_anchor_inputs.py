"""One camera's scale-anchor subscriptions: the sources listed in `scale_source` that come as messages (depth,
scan, points, range) are subscribed in the camera's namespace (scale_anchor/<source>), each message is turned into
plain anchor arrays (runtime/anchor_messages.py) and handed to the camera's `ScaleAnchoring`, which the frame's
stage 2 asks by stamp. Point sensors are moved into the camera's optical frame by `scale_anchor_extrinsics`, else
by TF (tf2_ros, where it imports) when their frame_id differs from the image's, else taken as already in it.

A message that cannot be read (wrong encoding, malformed cloud, no pose for its frame) is stored as an empty anchor
set with the reason, so the frame falls back to the next source and the diagnostics say why; nothing here raises
into the executor.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, LaserScan, PointCloud2, Range

from mgeo_ros.depth_codec import decode_depth_metres
from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.node_params import anchor_extrinsics
from mgeo_ros.ros.qos import make_qos
from mgeo_ros.runtime.anchor_messages import anchors_from_message, stamp_seconds
from mgeo_ros.runtime.scale_anchors import (
    MESSAGE_SOURCES,
    Anchors,
    PixelAnchors,
    PointAnchors,
    pixel_anchors_from_depth,
)
from mgeo_ros.runtime.scale_source import AnchorSettings, ScaleAnchoring

MESSAGE_CLASSES = {'depth': Image, 'scan': LaserScan, 'points': PointCloud2, 'range': Range}
TF_UNAVAILABLE = ('tf2_ros is not importable (install ros-<distro>-tf2-ros), so the pose of frame {frame!r} in '
                  '{camera!r} is unknown; set scale_anchor_extrinsics')


def anchor_settings(cfg: dict) -> AnchorSettings:
    """The scale-anchor parameters of the node as the runtime's settings."""
    return AnchorSettings.from_text(cfg['scale_source'], min_points=cfg['scale_anchor_min_points'],
                                    max_age=cfg['scale_anchor_max_age'], camera_height=cfg['camera_height'],
                                    camera_pitch=cfg['camera_pitch'], camera_roll=cfg['camera_roll'],
                                    ground_max_tilt=cfg['ground_max_tilt'])


def unusable(source: str, stamp: float, reason: str) -> Anchors:
    """An empty anchor set that carries why a message gave none (the fit reports the reason)."""
    if source == 'depth':
        empty = np.zeros(0, np.float32)
        return PixelAnchors(empty, empty, empty, (1, 1), stamp, 'depth', reason)
    return PointAnchors(np.zeros((0, 3)), RigidTransform.identity(), stamp, source, reason)


def _why(exc: Exception) -> str:
    """The error's own message; its type where it is not one of ours (a fault the message caused in numpy)."""
    return str(exc) if isinstance(exc, BadInputError) else f'{type(exc).__name__}: {exc}'


class TfPoses:
    """Anchor frames' poses in the camera's optical frame from TF (tf2_ros), or a reason when TF is not there."""

    def __init__(self, node, log_once: Callable[[str, str], None]) -> None:
        self.node = node
        self.log_once = log_once
        self.buffer = None
        try:
            import tf2_ros  # apt ROS has it; pip-installed rclpy setups may not
        except ImportError:
            self.available = False
            return
        self.available = True
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def pose(self, camera_frame: str, sensor_frame: str, stamp) -> tuple[RigidTransform | None, str]:
        """(the sensor frame's pose in the camera frame, '') or (None, why)."""
        if not self.available:
            reason = TF_UNAVAILABLE.format(frame=sensor_frame, camera=camera_frame)
            self.log_once('tf', f'scale anchors: {reason}')
            return None, reason
        try:
            from rclpy.time import Time

            t = self.buffer.lookup_transform(camera_frame, sensor_frame, Time.from_msg(stamp))
        except Exception as exc:  # tf2 raises its own lookup/extrapolation/connectivity errors
            return None, f'no TF from {sensor_frame!r} to {camera_frame!r} ({type(exc).__name__}: {exc})'
        tr, q = t.transform.translation, t.transform.rotation
        return RigidTransform.from_xyz_quaternion((tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w)), ''


class ScaleAnchorInputs:
    """The anchor subscriptions of one camera channel and its `ScaleAnchoring` (None when scale_source is model).

    `camera_frame()` gives the frame_id of the camera's latest image (the frame anchors are moved into)."""

    def __init__(self, channel, cfg: dict) -> None:
        self.channel = channel
        self.node = channel.node
        self.log = channel.log
        settings = anchor_settings(cfg)
        self.anchoring = ScaleAnchoring(settings) if len(settings.sources) > 1 else None
        self.extrinsics = anchor_extrinsics(cfg['scale_anchor_extrinsics'])
        self.transport = cfg['scale_anchor_transport']
        self.subscriptions: list = []
        self._logged: set[str] = set()
        self._tf: TfPoses | None = None

    def _log_once(self, key: str, text: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            self.log.warning(text)

    def create(self, qos_name: str, qos_depth: int) -> None:
        """Subscribe the listed message sources in the camera's namespace."""
        if self.anchoring is None:
            return
        qos = make_qos(qos_name, qos_depth)
        for source in self.anchoring.settings.sources:
            if source not in MESSAGE_SOURCES:
                continue
            topic = self.channel.topic(f'scale_anchor/{source}')
            if source == 'depth' and self.transport == 'compressedDepth':
                topic = self.node.resolve_topic_name(topic) + '/compressedDepth'
                callback = self._on_compressed_depth
                msg_type = CompressedImage
            else:
                callback = self._callback(source)
                msg_type = MESSAGE_CLASSES[source]
            self.subscriptions.append(self.node.create_subscription(msg_type, topic, callback, qos))
        if self.subscriptions:
            names = ', '.join(s.topic_name for s in self.subscriptions)
            self.log.info(f'scale sources {", ".join(self.anchoring.settings.sources)}; anchors from {names}')

    def destroy(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions = []

    # ---- callbacks (executor thread): convert and store, never raise
    def _callback(self, source: str):
        def on_message(msg) -> None:
            self.add(source, msg)
        return on_message

    def _on_compressed_depth(self, msg: CompressedImage) -> None:
        stamp = stamp_seconds(msg)
        try:
            anchors = pixel_anchors_from_depth(decode_depth_metres(msg.format, msg.data), stamp)
        except Exception as exc:  # noqa: BLE001 (any malformed message: the executor must keep spinning)
            anchors = unusable('depth', stamp, f'compressedDepth anchor not decoded: {_why(exc)}')
        self._store('depth', anchors)

    def add(self, source: str, msg) -> None:
        """One anchor message -> its anchors (or an empty set with the reason) in the camera's buffer."""
        stamp = stamp_seconds(msg)
        extrinsics, reason = self._pose(source, msg)
        if reason:
            self._store(source, unusable(source, stamp, reason))
            return
        try:
            anchors = anchors_from_message(source, msg, extrinsics)
        except Exception as exc:  # noqa: BLE001 (any malformed message: the executor must keep spinning)
            anchors = unusable(source, stamp, f'{MESSAGE_CLASSES[source].__name__} anchor not read: {_why(exc)}')
        self._store(source, anchors)

    def _store(self, source: str, anchors: Anchors) -> None:
        self.anchoring.add(source, anchors)

    def _pose(self, source: str, msg) -> tuple[RigidTransform | None, str]:
        """The anchor sensor's pose in the camera's optical frame: the parameter, else TF when the frames differ,
        else identity."""
        if source == 'depth' or self.extrinsics is not None:
            return self.extrinsics, ''
        sensor = msg.header.frame_id.lstrip('/')
        camera = self.channel.camera_frame().lstrip('/')
        if not camera:
            return None, 'no image yet: the camera frame the anchors go into is not known'
        if not sensor or sensor == camera:
            return None, ''
        if self._tf is None:
            self._tf = TfPoses(self.node, self._log_once)
        return self._tf.pose(camera, sensor, msg.header.stamp)
