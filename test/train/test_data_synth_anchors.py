"""The robot-camera sequence (fixed height, pitch and roll, the floor in view) and the anchors a robot's sensors
would give in a synthetic frame (sparse depth, one scan row), as written into bags."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mgeo_ros.geometry.ground_plane import up_in_optical
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.geometry.rigid import RigidTransform
from mgeo_ros.runtime.scale_anchors import fit_anchors, fit_ground, pixel_anchors_from_depth, point_anchors_from_scan
from mgeo_ros.train.data import render_sequence
from mgeo_ros.train.data.synth import CameraMount, sample_setup
from mgeo_ros.train.data.synth.anchors import scan_row, sparse_depth
from mgeo_ros.train.data.synth.robot import MOUNT_FILE, read_camera_mount, write_robot_bag

SEED = 11
MOUNT = CameraMount(0.35, 15.0, 3.0)


@pytest.fixture(scope='module')
def robot_frames():
    return render_sequence(SEED, 4, (80, 60), kinds=('indoor',), step_m=0.1, mount=MOUNT)


def test_a_mount_keeps_height_and_angles_and_the_scene():
    free = sample_setup(SEED, 80, 60, ('indoor',), n_frames=5, step_m=0.1)
    robot = sample_setup(SEED, 80, 60, ('indoor',), n_frames=5, step_m=0.1, mount=MOUNT)
    assert robot[0].materials == free[0].materials  # the same room and objects (the path's xy is the same)
    assert robot[0].boxes == free[0].boxes and robot[2] == free[2]
    for pose in robot[1]:
        assert pose.position[2] == MOUNT.height
        # world up seen from the camera is what the ground source derives from the mount's angles
        np.testing.assert_allclose(pose.rotation.T @ [0.0, 0.0, 1.0], up_in_optical(MOUNT.pitch_deg, MOUNT.roll_deg),
                                   atol=1e-12)
    moved = np.linalg.norm(robot[1][-1].position - robot[1][0].position)
    assert moved > 0.2  # it drives


def test_the_floor_gives_the_scale(robot_frames):
    for s in robot_frames:
        pts = unproject(np.where(s.mask, s.depth, np.nan), s.intrinsics)
        fit = fit_ground(pts * 0.5, s.mask, MOUNT.height, MOUNT.pitch_deg, MOUNT.roll_deg)
        assert fit.usable, fit.reason
        # exact rendered floor: the plane fit is limited by float32 points and the slab band only
        assert fit.scale == pytest.approx(2.0, rel=0.01)


def test_sparse_depth_and_scan_row_are_the_ground_truth(robot_frames):
    s = robot_frames[0]
    sparse = sparse_depth(s, 200, 0.02, seed=3)
    hit = np.isfinite(sparse)
    assert hit.sum() == 200 and s.mask[hit].all()
    rel = sparse[hit] / s.depth[hit] - 1
    assert abs(rel.std() - 0.02) < 0.005 and abs(rel.mean()) < 0.005   # 200 draws of 2 % noise
    fit = fit_anchors(pixel_anchors_from_depth(sparse), s.intrinsics, s.depth / 1.5, s.mask, 20)
    assert fit.scale == pytest.approx(1.5, rel=0.01)
    scan = scan_row(s)
    assert scan.ranges.size == 80 and scan.angle_increment > 0
    assert scan.angle_min == pytest.approx(-math.atan2(80 - 1 - s.intrinsics.cx, s.intrinsics.fx))
    anchors = point_anchors_from_scan(scan.ranges, scan.angle_min, scan.angle_increment, scan.range_min,
                                      scan.range_max, RigidTransform.from_xyz_quaternion(scan.extrinsics))
    fit = fit_anchors(anchors, s.intrinsics, s.depth / 1.5, s.mask, 20)
    assert fit.matched == np.isfinite(scan.ranges).sum() > 40
    assert fit.scale == pytest.approx(1.5, rel=1e-5) and fit.residual < 1e-5   # every beam hits a GT pixel


def test_robot_bag_has_the_mount_beside_it(tmp_path):
    from mgeo_ros.train.data.bag import BagDataset, bag_topics

    bag = write_robot_bag(tmp_path / 'robot', SEED, 2, size=(48, 36), mount=MOUNT)
    assert json.loads((bag / MOUNT_FILE).read_text())['camera_height'] == MOUNT.height
    assert read_camera_mount(bag) == MOUNT
    topics = bag_topics(bag)
    assert topics['/camera/scale_anchor/scan'] == 'sensor_msgs/msg/LaserScan'
    assert topics['/tf_static'] == 'tf2_msgs/msg/TFMessage'
    ds = BagDataset(bag, '/camera/image_raw', '/camera/depth_gt/image', '/camera/camera_info')
    assert len(ds) == 2
    with pytest.raises(Exception, match='camera_mount.json'):
        read_camera_mount(tmp_path)
