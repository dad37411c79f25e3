"""Cloud normal fields and the 32FC3 normals image: layout, strides, unorganized clouds, round trips."""
from __future__ import annotations

import numpy as np
import pytest

from mgeo_ros.geometry import Intrinsics
from mgeo_ros.ros import cloud, convert

pytestmark = pytest.mark.ros_runtime  # torch-free: also runs in the Jazzy venv (make test-jazzy)

W, H = 20, 15
INTR = Intrinsics(fx=18.0, fy=18.0, cx=9.5, cy=7.0, width=W, height=H)


def _frame(seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 3.0, (H, W)).astype(np.float32)
    depth[2:5, 3:7] = np.nan
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[~np.isfinite(depth)] = np.nan
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return depth, normals, rgb


def _cloud(depth, rgb=None, normals=None, stride: int = 1, organized: bool = True):
    """The node's cloud message of a depth map: its points at `stride`, colours and normals at the same pixels."""
    from mgeo_ros.geometry.projection import unproject

    s = slice(None, None, stride)
    small = INTR.decimated(stride)
    return convert.points_to_pointcloud2(unproject(np.ascontiguousarray(depth[s, s]), small),
                                         rgb=None if rgb is None else rgb[s, s],
                                         normals=None if normals is None else normals[s, s], organized=organized)


@pytest.mark.parametrize('with_rgb', [False, True])
@pytest.mark.parametrize('stride', [1, 3])
def test_organized_cloud_carries_normals_after_xyz_and_rgb(with_rgb, stride):
    depth, normals, rgb = _frame()
    msg = _cloud(depth, rgb if with_rgb else None, normals, stride)
    names = [f.name for f in msg.fields]
    assert names == ['x', 'y', 'z'] + (['rgb'] if with_rgb else []) + ['normal_x', 'normal_y', 'normal_z']
    assert [f.offset for f in msg.fields] == [4 * i for i in range(len(names))]
    assert msg.point_step == 4 * len(names) == cloud.point_step(with_rgb, True)
    got = convert.pointcloud2_normals(msg)
    np.testing.assert_array_equal(got, normals[::stride, ::stride])
    points, colour = convert.pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(np.isfinite(points[..., 2]), np.isfinite(depth[::stride, ::stride]))
    if with_rgb:
        np.testing.assert_array_equal(colour, rgb[::stride, ::stride])


def test_unorganized_cloud_keeps_the_normals_of_the_valid_points():
    depth, normals, rgb = _frame(1)
    msg = _cloud(depth, rgb, normals, organized=False)
    keep = np.isfinite(depth)
    assert (msg.height, msg.width, msg.is_dense) == (1, keep.sum(), True)
    np.testing.assert_array_equal(convert.pointcloud2_normals(msg)[0], normals[keep])


def test_without_normals_the_layout_is_unchanged_and_reading_says_none():
    depth, _, _ = _frame()
    msg = _cloud(depth)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.point_step == 12
    assert convert.pointcloud2_normals(msg) is None


def test_mismatched_normals_are_refused():
    from mgeo_ros.errors import BadInputError

    depth, normals, _ = _frame()
    with pytest.raises(BadInputError, match='normals'):
        convert.points_to_pointcloud2(np.zeros((H, W, 3), np.float32), normals=normals[:, :-1])


def test_node_normals_image_is_32fc3_row_major_xyz():
    """The node's normals message: the frame stage's normals wrapped as they lie in its buffer."""
    from mgeo_ros.runtime.backends.base import RawOutput
    from mgeo_ros.runtime.frame_stage import FrameStage

    depth, _, _ = _frame(2)
    raw = RawOutput(np.stack([depth * 0, depth * 0, depth], -1), np.isfinite(depth).astype(np.float32), 1.0)
    res = FrameStage().run(raw, (W, H), INTR, {'normals'})
    msg = convert.image_around(res.data['normals'], H, W, '32FC3')
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('32FC3', H, W, W * 12)
    back = np.frombuffer(bytes(msg.data), '>f4' if msg.is_bigendian else '<f4').reshape(H, W, 3)
    np.testing.assert_array_equal(back, res.normals)
    assert np.isfinite(back).any() and np.isnan(back[~res.valid]).all()


@pytest.mark.parametrize('with_head', [False, True])
@pytest.mark.parametrize('stride', [1, 3])
def test_node_normals_are_the_heads_or_made_from_the_published_depth(with_head, stride):
    """Without a normal head the normals (image and cloud) are those of the published depth (the independent
    reference of test/normals_reference.py); with one, the head's, NaN where the depth is invalid; on a decimated
    cloud, those of the cloud's own grid."""
    from normals_reference import plane_sum_normals

    from mgeo_ros.runtime.backends.base import RawOutput
    from mgeo_ros.runtime.frame_stage import FrameSettings, FrameStage

    depth, head, _ = _frame(3)
    raw = RawOutput(np.stack([depth * 0, depth * 0, depth], -1), np.isfinite(depth).astype(np.float32), 1.0,
                    head if with_head else None)
    stage = FrameStage(FrameSettings(points_stride=stride))
    res = stage.run(raw, (W, H), INTR, {'points', 'points_normals'})
    s = slice(None, None, stride)
    if with_head:
        want = np.where(res.valid[..., None], head, np.nan)[s, s]
    else:
        small = np.ascontiguousarray(res.depth_valid[s, s])
        want = plane_sum_normals(small, INTR.decimated(stride))
    np.testing.assert_allclose(res.points_normals, want, atol=1e-4, equal_nan=True)
    assert np.isfinite(res.points_normals).any()
    msg = convert.points_to_pointcloud2(res.points, normals=res.points_normals)
    np.testing.assert_array_equal(convert.pointcloud2_normals(msg), res.points_normals)
