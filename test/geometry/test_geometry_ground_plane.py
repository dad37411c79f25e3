"""The floor in a point map: noisy planes with clutter, tilted cameras, no floor at all; and rigid transforms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.ground_plane import find_ground_plane, up_in_optical
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.rigid import RigidTransform, quaternion_from_rotation, rotation_from_quaternion

W, H = 96, 72
INTR = Intrinsics.from_fov(math.radians(80), W, H)


def _rays() -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones_like(u)], -1)


def _room(height: float, pitch: float, roll: float, seed: int = 0, noise: float = 0.01, floor: bool = True):
    """Points seen by a camera `height` m above a floor: the floor (with relative depth noise), a wall 4 m ahead
    and a box of clutter; everything else at the wall."""
    rng = np.random.default_rng(seed)
    rays = _rays()
    up = up_in_optical(pitch, roll)
    t_floor = np.where(rays @ up < -1e-6, height / -(rays @ up), np.inf) if floor else np.full(rays.shape[:2], np.inf)
    t_wall = np.full(rays.shape[:2], 4.0)
    t = np.minimum(t_floor, t_wall)
    t[H // 2:H // 2 + 12, W // 3:W // 3 + 20] = 1.2  # a box in front of the camera
    t = t * np.exp(rng.normal(0.0, noise, t.shape))
    return (rays * t[..., None]).astype(np.float32)


def test_up_matches_the_renderers_camera_rotation():
    from mgeo_ros.train.data.synth.scene import camera_rotation

    for pitch, roll in ((0, 0), (20, 0), (-10, 5), (35, -12)):
        rot = camera_rotation(0.7, math.radians(pitch), math.radians(roll))   # world from optical
        np.testing.assert_allclose(up_in_optical(pitch, roll), rot.T @ [0.0, 0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize('height,pitch,roll', [(0.3, 15, 0), (1.2, 30, 8), (0.5, 0, -10), (2.0, 45, 0)])
def test_noisy_floor_with_clutter(height, pitch, roll):
    pts = _room(height, pitch, roll)
    found = find_ground_plane(pts * 0.37, None, pitch, roll)   # any scale: the distance scales with it
    assert found.plane is not None, found.reason
    # 1 % depth noise on the floor points: the least-squares distance lands well within 2 %
    assert found.plane.distance == pytest.approx(0.37 * height, rel=0.02)
    assert found.plane.spread < 0.02  # the floor's own 1 % noise, not a slab through the walls


def test_wrong_mount_angles_beyond_the_tilt_find_no_floor():
    pts = _room(0.5, 30, 0)
    assert find_ground_plane(pts, None, 30, 0).plane is not None
    assert find_ground_plane(pts, None, -30, 0, max_tilt_deg=10).plane is None  # told it looks up 30 deg


def test_no_floor_in_view():
    found = find_ground_plane(_room(0.5, 0, 0, floor=False), None, 0, 0)
    assert found.plane is None and 'plane not found' in found.reason


def test_invalid_pixels_are_not_used():
    pts = _room(0.5, 20, 0)
    valid = np.zeros((H, W), bool)
    found = find_ground_plane(pts, valid, 20, 0)
    assert found.plane is None and found.candidates == 0 and 'plane not found' in found.reason


def test_same_seed_same_plane():
    pts = _room(0.6, 10, 3, noise=0.03)
    a, b = find_ground_plane(pts, None, 10, 3), find_ground_plane(pts, None, 10, 3)
    assert a.plane.distance == b.plane.distance


def test_rigid_transform_round_trip_and_errors():
    q = np.array([0.1, -0.4, 0.3, 0.85])
    rot = rotation_from_quaternion(*q)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(quaternion_from_rotation(rot), q / np.linalg.norm(q), atol=1e-12)
    # the laser convention (x forward, y left, z up) in the optical frame
    laser = RigidTransform.from_xyz_quaternion([0.1, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5])
    np.testing.assert_allclose(laser.apply([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                               [[0.1, 0.0, 1.0], [-0.9, 0.0, 0.0], [0.1, -1.0, 0.0]], atol=1e-12)
    assert RigidTransform.from_xyz_quaternion(laser.as_xyz_quaternion()).apply([[1, 2, 3]]) == pytest.approx(
        laser.apply([[1, 2, 3]]))
    with pytest.raises(BadInputError, match='7 finite numbers'):
        RigidTransform.from_xyz_quaternion([0, 0, 0, 0, 0, 1])
    with pytest.raises(BadInputError, match='non-zero quaternion'):
        RigidTransform.from_xyz_quaternion([0, 0, 0, 0, 0, 0, 0])


def test_bent_tilted_floor_like_a_networks_is_still_found_by_its_depth_below_the_camera():
    """A predicted floor that tilts 8 deg and bends by 10 % of its distance (as a network's does), a wall filling
    the upper half and a box: a plane with a free normal would follow the tilt; the depth along up stays put."""
    pitch, height = 15.0, 0.4
    rays = _rays()
    up = up_in_optical(pitch, 0.0)
    down = rays @ up
    t_floor = np.where(down < -1e-6, height / -down, np.inf)
    t = np.minimum(t_floor, 2.5)
    t[H // 2:H // 2 + 12, W // 3:W // 3 + 20] = 1.0
    v = np.mgrid[0:H, 0:W][0] / H
    bend = 1.0 + 0.1 * np.sin(3.0 * np.pi * v) + 0.14 * (v - 0.75)  # slow bend plus a tilt with image row
    t = np.where(np.isfinite(t_floor) & (t == t_floor), t * bend, t)
    pts = (rays * t[..., None] * np.exp(np.random.default_rng(1).normal(0.0, 0.01, t.shape))[..., None])
    found = find_ground_plane(pts.astype(np.float32), None, pitch, 0.0)
    assert found.plane is not None, found.reason
    floor = np.isfinite(t_floor) & (t == t_floor * bend)
    low, high = np.percentile(-(pts[floor] @ up), [25, 75])
    # the floor's own depth below the camera varies by ±10 %: its robust centre lies in the floor's middle half
    assert low <= found.plane.distance <= high
    assert found.plane.distance == pytest.approx(height, rel=0.1)
