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


@pytest.mark.parametrize('with_rgb', [False, True])
@pytest.mark.parametrize('stride', [1, 3])
def test_organized_cloud_carries_normals_after_xyz_and_rgb(with_rgb, stride):
    depth, normals, rgb = _frame()
    msg = convert.depth_to_pointcloud2(depth, INTR, rgb=rgb if with_rgb else None, stride=stride, normals=normals)
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
    msg = convert.depth_to_pointcloud2(depth, INTR, rgb=rgb, organized=False, normals=normals)
    keep = np.isfinite(depth)
    assert (msg.height, msg.width, msg.is_dense) == (1, keep.sum(), True)
    np.testing.assert_array_equal(convert.pointcloud2_normals(msg)[0], normals[keep])


def test_without_normals_the_layout_is_unchanged_and_reading_says_none():
    depth, _, _ = _frame()
    msg = convert.depth_to_pointcloud2(depth, INTR)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.point_step == 12
    assert convert.pointcloud2_normals(msg) is None


def test_mismatched_normals_are_refused():
    from mgeo_ros.errors import BadInputError

    depth, normals, _ = _frame()
    with pytest.raises(BadInputError, match='normals'):
        convert.depth_to_pointcloud2(depth, INTR, normals=normals[:, :-1])


def test_normals_image_is_32fc3_row_major_xyz():
    _, normals, _ = _frame(2)
    msg = convert.normals_to_image(normals)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('32FC3', H, W, W * 12)
    back = np.frombuffer(bytes(msg.data), '>f4' if msg.is_bigendian else '<f4').reshape(H, W, 3)
    np.testing.assert_array_equal(back, normals)
    from mgeo_ros.errors import BadInputError

    with pytest.raises(BadInputError):
        convert.normals_to_image(normals[..., :2])


def test_node_normals_come_from_depth_when_the_model_has_no_normal_head():
    """The embedded default model has no normal head: the node derives normals from the published depth."""
    from mgeo_ros.geometry.normals import normals_from_points
    from mgeo_ros.geometry.projection import unproject
    from mgeo_ros.ros.pipeline import FramePipeline

    depth, head, _ = _frame(3)
    valid = np.isfinite(depth)
    got = FramePipeline._normals(None, INTR, depth, valid)
    np.testing.assert_allclose(got, normals_from_points(unproject(depth, INTR), valid), atol=1e-4)
    assert np.isnan(got[~valid]).all()
    fewer = valid.copy()
    fewer[10:] = False  # e.g. pixels removed by the flying-pixel filter after the model
    got = FramePipeline._normals(head, INTR, depth, fewer)
    np.testing.assert_array_equal(got[fewer], head[fewer])
    assert np.isnan(got[~fewer]).all()


@pytest.mark.parametrize('with_head', [False, True])
def test_cloud_normals_alone_are_made_on_the_decimated_grid(with_head):
    """points_normals with points_stride 3 and nobody on depth/normals: normals of the cloud's own grid, the same
    points as the plain decimated cloud."""
    from mgeo_ros.geometry.normals import normals_from_points
    from mgeo_ros.geometry.projection import unproject
    from mgeo_ros.ros.pipeline import FramePipeline
    from mgeo_ros.runtime.prediction import Prediction

    depth, head, rgb = _frame(4)
    valid = np.isfinite(depth)
    pred = Prediction(depth=depth, mask=valid, intrinsics=INTR, metric_scale=1.0, normals=head if with_head else None)
    cfg = {'points_stride': 3, 'points_color': True, 'points_organized': True, 'points_normals': True}
    from mgeo_ros.ros.out_buffers import OutputBuffers

    pipeline = FramePipeline.__new__(FramePipeline)  # _cloud needs no node state but its output buffers
    pipeline.buffers = OutputBuffers()
    msg = pipeline._cloud(pred, depth, valid, rgb, None, cfg)
    plain = convert.depth_to_pointcloud2(depth, INTR, rgb=rgb, stride=3)
    np.testing.assert_array_equal(convert.pointcloud2_to_numpy(msg)[0], convert.pointcloud2_to_numpy(plain)[0])
    np.testing.assert_array_equal(convert.pointcloud2_to_numpy(msg)[1], rgb[::3, ::3])
    small = INTR.decimated(3)
    expect = head[::3, ::3] if with_head else normals_from_points(unproject(depth[::3, ::3], small), valid[::3, ::3])
    np.testing.assert_allclose(convert.pointcloud2_normals(msg), expect, atol=1e-4)
