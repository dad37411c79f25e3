"""What a robot's metric sensors would report in a synthetic frame, made from its ground-truth depth: a sparse
depth image (a LiDAR projected into the camera) and a 2-D laser scan (one image row), for scale-anchor tests and the
demo bag. The scan's beams lie in the plane of the image row through the principal point, so every beam's hit is a
ground-truth pixel; its frame is the usual laser frame (x forward, y left, z up), whose pose in the optical frame
`ScanRow.extrinsics` gives as x y z qx qy qz qw."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.train.data.sample import Sample

# laser frame axes (x forward, y left, z up) as columns in the optical frame (x right, y down, z forward)
LASER_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def sparse_depth(sample: Sample, count: int = 300, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """H x W float32 metres: the ground truth at `count` random valid pixels, each times (1 + noise·N(0, 1)); NaN
    elsewhere."""
    valid = np.flatnonzero(sample.mask.reshape(-1) & np.isfinite(sample.depth.reshape(-1)))
    rng = np.random.default_rng(seed)
    pick = rng.choice(valid, size=min(count, valid.size), replace=False)
    out = np.full(sample.depth.size, np.nan, np.float32)
    out[pick] = sample.depth.reshape(-1)[pick] * (1.0 + noise * rng.standard_normal(pick.size))
    return out.reshape(sample.depth.shape)


@dataclass(frozen=True)
class ScanRow:
    """A LaserScan's fields (ranges in metres, inf = no return) and the scan frame's pose in the optical frame."""

    ranges: np.ndarray
    angle_min: float
    angle_increment: float
    range_min: float
    range_max: float
    extrinsics: tuple[float, ...]


def scan_row(sample: Sample, beams: int | None = None, range_min: float = 0.05, range_max: float = 30.0) -> ScanRow:
    """A scan of `beams` beams (default: one per column) from the first to the last column's centre, in the plane of
    pixel row round(cy): each beam's range comes from the ground truth at the nearest pixel of that row."""
    intr = sample.intrinsics
    h, w = sample.depth.shape
    row = int(min(max(round(intr.cy), 0), h - 1))
    alpha = math.atan2(row - intr.cy, intr.fy)   # the row's rays: y / z = tan(alpha)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(alpha), math.sin(alpha)],
                     [0.0, -math.sin(alpha), math.cos(alpha)]])
    rotation = tilt @ LASER_TO_OPTICAL
    beams = int(beams or w)
    left, right = math.atan2(intr.cx, intr.fx), math.atan2(w - 1 - intr.cx, intr.fx)   # outermost pixel centres
    angles = np.linspace(-right, left, beams)   # counter-clockwise, as LaserScan's angles go: right edge to left
    dirs = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1) @ rotation.T
    col = np.clip(np.rint(intr.cx + intr.fx * dirs[:, 0] / dirs[:, 2]), 0, w - 1).astype(np.int64)
    z = sample.depth[row, col].astype(np.float64)
    ok = sample.mask[row, col] & np.isfinite(z)
    ranges = np.where(ok, z / dirs[:, 2], np.inf)
    ranges = np.where((ranges >= range_min) & (ranges <= range_max), ranges, np.inf).astype(np.float32)
    extrinsics = RigidTransform(rotation, np.zeros(3)).as_xyz_quaternion()
    increment = float(angles[1] - angles[0]) if beams > 1 else 0.0
    return ScanRow(ranges, float(angles[0]), increment, range_min, range_max, extrinsics)



ANCHOR_DEPTH_TOPIC = '/camera/scale_anchor/depth'
ANCHOR_SCAN_TOPIC = '/camera/scale_anchor/scan'
SCAN_FRAME = 'scale_anchor_laser'
ANCHOR_POINTS = 300
ANCHOR_NOISE = 0.02


def anchor_bag_topics(camera_frame: str, depth_topic: str = ANCHOR_DEPTH_TOPIC, scan_topic: str = ANCHOR_SCAN_TOPIC,
                      count: int = ANCHOR_POINTS, noise: float = ANCHOR_NOISE, seed: int = 0):
    """(extra_topics, extra_messages) for `write_bag`: per frame a sparse 32FC1 depth image (`sparse_depth`, in the
    camera's optical frame) and a LaserScan (`scan_row`, in frame SCAN_FRAME), both at the frame's stamp, and once
    a /tf_static message with the scan frame's pose in the optical frame."""
    from mgeo_ros.train.data.bag_writer import IMAGE, SCAN, TF, image_msg, laser_scan_msg, tf_static_msg

    def messages(index: int, sample: Sample | None, stamp_ns: int):
        if sample is None:
            return []
        scan = scan_row(sample)
        out = [(depth_topic, image_msg(sparse_depth(sample, count, noise, seed * 7919 + index), '32FC1', stamp_ns,
                                       camera_frame)),
               (scan_topic, laser_scan_msg(scan.ranges, scan.angle_min, scan.angle_increment, scan.range_min,
                                           scan.range_max, stamp_ns, SCAN_FRAME))]
        if index == 0:
            out.append(('/tf_static', tf_static_msg(camera_frame, SCAN_FRAME, scan.extrinsics, stamp_ns)))
        return out

    return [(depth_topic, IMAGE), (scan_topic, SCAN), ('/tf_static', TF)], messages
