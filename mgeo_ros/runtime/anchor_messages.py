"""Anchor messages -> anchor objects, read by field name so that deserialized bag messages (rosbags) and rclpy
messages both work: sensor_msgs/Image (32FC1 m, 16UC1 mm), LaserScan, PointCloud2 (x, y, z fields) and Range.
No ROS import here: the node and `mgeo eval` both call these."""
from __future__ import annotations

from typing import Any

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.image_codec import depth_image_to_metres
from mgeo_ros.runtime.scale_anchors import (
    Anchors,
    PixelAnchors,
    PointAnchors,
    pixel_anchors_from_depth,
    point_anchors,
    point_anchors_from_range,
    point_anchors_from_scan,
)

# sensor_msgs/PointField datatypes that can hold a coordinate
_FLOAT_FIELDS = {7: np.dtype('<f4'), 8: np.dtype('<f8')}
MESSAGE_TYPES = {'depth': 'sensor_msgs/msg/Image', 'scan': 'sensor_msgs/msg/LaserScan',
                 'points': 'sensor_msgs/msg/PointCloud2', 'range': 'sensor_msgs/msg/Range'}


def stamp_seconds(msg: Any) -> float:
    """A message header's stamp in float seconds."""
    return int(msg.header.stamp.sec) + int(msg.header.stamp.nanosec) * 1e-9


def depth_image_anchors(msg: Any) -> PixelAnchors:
    """A registered depth Image (same optical frame as the camera, any resolution with its field of view)."""
    return pixel_anchors_from_depth(depth_image_to_metres(msg), stamp_seconds(msg))


def scan_anchors(msg: Any, extrinsics: RigidTransform | None = None) -> PointAnchors:
    """A LaserScan; `extrinsics`: the scan frame's pose in the camera's optical frame."""
    return point_anchors_from_scan(np.asarray(msg.ranges, dtype=np.float32), float(msg.angle_min),
                                   float(msg.angle_increment), float(msg.range_min), float(msg.range_max),
                                   extrinsics, stamp_seconds(msg))


def range_anchors(msg: Any, extrinsics: RigidTransform | None = None) -> PointAnchors:
    """A Range reading: its hit on the sensor's x axis."""
    return point_anchors_from_range(float(msg.range), float(msg.min_range), float(msg.max_range), extrinsics,
                                    stamp_seconds(msg))


def cloud_xyz(msg: Any) -> np.ndarray:
    """The x, y, z fields of a PointCloud2 (organized or not, any point_step/row_step padding) as N x 3 float32."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in 'xyz' if n not in fields]
    if missing:
        raise BadInputError(f'PointCloud2 fields {sorted(fields)} lack {missing}: expected float32 x, y, z')
    height, width, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if height * width == 0:
        return np.zeros((0, 3), np.float32)
    buffer = np.frombuffer(msg.data, np.uint8)
    if step <= 0 or row_step < width * step or buffer.size < row_step * (height - 1) + width * step:
        raise BadInputError(f'PointCloud2 {height}x{width}, point_step {step}, row_step {row_step}: data has '
                            f'{buffer.size} bytes, not enough for its points')
    out = np.empty((height, width, 3), np.float32)
    for i, name in enumerate('xyz'):
        f = fields[name]
        dtype = _FLOAT_FIELDS.get(int(f.datatype))
        if dtype is None or int(f.offset) + dtype.itemsize > step:
            raise BadInputError(f'PointCloud2 field {name}: datatype {f.datatype} at offset {f.offset} in a '
                                f'{step}-byte point; expected FLOAT32 (7) or FLOAT64 (8) inside the point')
        if msg.is_bigendian:
            dtype = dtype.newbyteorder('>')
        out[..., i] = np.ndarray((height, width), dtype, buffer=buffer, offset=int(f.offset),
                                 strides=(row_step, step))
    return out.reshape(-1, 3)


def cloud_anchors(msg: Any, extrinsics: RigidTransform | None = None) -> PointAnchors:
    """A PointCloud2's finite points; `extrinsics`: the cloud frame's pose in the camera's optical frame."""
    return point_anchors(cloud_xyz(msg), extrinsics, stamp_seconds(msg))


def anchors_from_message(source: str, msg: Any, extrinsics: RigidTransform | None = None) -> Anchors:
    """One anchor message of `source` (depth, scan, points, range) -> its anchors (depth ignores extrinsics: the
    image is registered to the camera)."""
    if source == 'depth':
        return depth_image_anchors(msg)
    if source == 'scan':
        return scan_anchors(msg, extrinsics)
    if source == 'points':
        return cloud_anchors(msg, extrinsics)
    if source == 'range':
        return range_anchors(msg, extrinsics)
    raise BadInputError(f'anchor source {source!r}: expected one of {", ".join(MESSAGE_TYPES)}')
