"""Rigid transforms between sensor frames: a sensor's pose in the camera's optical frame, given as the 7 numbers
x y z qx qy qz qw that tf2 and `static_transform_publisher` use (translation in metres, unit quaternion)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mgeo_ros.errors import BadInputError


def rotation_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """3x3 rotation of a quaternion (normalized here; a zero or non-finite one is refused)."""
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (math.isfinite(norm) and norm > 1e-9):
        raise BadInputError(f'quaternion (qx qy qz qw) = {tuple(q)}: expected a finite non-zero quaternion '
                            '(identity is 0 0 0 1)')
    x, y, z, w = q / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quaternion_from_rotation(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(qx, qy, qz, qw) of a 3x3 rotation matrix, qw >= 0."""
    r = np.asarray(rotation, dtype=np.float64)
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0, r[1, 0] - r[0, 1])
    return x, y, z, w


@dataclass(frozen=True)
class RigidTransform:
    """p_target = rotation @ p_source + translation (e.g. source = a LiDAR frame, target = the camera's optical
    frame: the LiDAR's pose in the optical frame)."""

    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls) -> RigidTransform:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_xyz_quaternion(cls, values: Sequence[float]) -> RigidTransform:
        """From x y z qx qy qz qw (tf2's order)."""
        v = [float(x) for x in values]
        if len(v) != 7 or not all(math.isfinite(x) for x in v):
            raise BadInputError(f'extrinsics {list(values)!r}: expected 7 finite numbers x y z qx qy qz qw (the '
                                "sensor's pose in the camera's optical frame, as `ros2 run tf2_ros tf2_echo "
                                "<camera_optical_frame> <sensor_frame>` prints it)")
        return cls(rotation_from_quaternion(*v[3:]), np.array(v[:3]))

    @classmethod
    def from_text(cls, text: str) -> RigidTransform | None:
        """'x y z qx qy qz qw' (spaces or commas) -> the transform; None when `text` is empty."""
        words = text.replace(',', ' ').split()
        if not words:
            return None
        try:
            values = [float(w) for w in words]
        except ValueError:
            raise BadInputError(f'extrinsics {text!r}: expected 7 finite numbers x y z qx qy qz qw (the sensor\'s '
                                'pose in the camera\'s optical frame)') from None
        return cls.from_xyz_quaternion(values)

    def as_xyz_quaternion(self) -> tuple[float, ...]:
        return (*(float(t) for t in self.translation), *quaternion_from_rotation(self.rotation))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """N x 3 points in the source frame -> N x 3 float64 points in the target frame."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        r, t = self.rotation, self.translation
        # elementwise, not BLAS: a 3-long inner dimension gains nothing from BLAS threads, which only contend
        out = np.empty_like(p)
        for i in range(3):
            out[:, i] = p[:, 0] * r[i, 0] + p[:, 1] * r[i, 1] + p[:, 2] * r[i, 2] + t[i]
        return out
