"""The frame stage at an output scale: outputs made at the reduced size straight from the network's outputs equal a
full-size run's outputs shrunk by area (INTER_AREA), and the cloud is the published depth unprojected with the
scaled camera."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from stage_frames import raw_frame

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.output_scale import output_size, scaled_intrinsics
from mgeo_ros.runtime.frame_stage import FrameSettings, FrameStage

W, H = 320, 240
CAMERA = Intrinsics(260.0, 258.0, 161.3, 118.9, W, H)


def _run(size, intrinsics, wanted=('depth',), stride: int = 1):
    stage = FrameStage(FrameSettings(flying_pixel_max_jump=0.0, points_stride=stride))
    return stage.run(raw_frame(0, False), size, intrinsics, wanted)


@pytest.mark.parametrize('given', [True, False], ids=['camera_info', 'recovered'])
@pytest.mark.parametrize('scale, tolerance', [(0.5, 0.015), (0.25, 0.06)])
def test_reduced_outputs_equal_the_full_size_outputs_shrunk_by_area(given, scale, tolerance):
    """Both are the network's depth upsampled bilinearly, which is linear between network samples: the area mean of a
    block of full-size pixels equals the bilinear value at the block's centre, except where a network sample (a kink
    of the interpolant) falls inside the block. There the difference is at most the change of slope times a quarter
    of the block: the box's 0.7 m step over a 15 px network cell, sampled by a 2 px (4 px) block, is <= 1.2 % (4.7 %)
    of the depth; everywhere else they agree to float32 rounding."""
    full = _run((W, H), CAMERA if given else None)
    depth_full, valid_full = full.depth.copy(), full.valid.copy()
    size = output_size(W, H, scale)
    small = _run(size, scaled_intrinsics(CAMERA, scale) if given else None)
    assert small.size == size and small.depth.shape == (size[1], size[0])
    assert small.shift == pytest.approx(full.shift, rel=1e-6) and small.scale.raw == full.scale.raw
    area = cv2.resize(np.where(valid_full, depth_full, 0.0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(valid_full.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    both = (coverage == 1.0) & small.valid
    assert both.sum() > 0.9 * small.valid.sum()  # the comparison covers nearly every published pixel
    rel = np.abs(small.depth[both] - area[both]) / area[both]
    assert rel.max() < tolerance
    assert np.median(rel) < 1e-6  # float32 rounding of the same bilinear values


def test_the_reduced_cloud_is_the_reduced_depth_unprojected_with_the_published_camera():
    """depth_image_proc's point_cloud_xyz: x = (u - cx) z / fx, y = (v - cy) z / fy with the published camera_info,
    at every points_stride-th pixel of the published depth."""
    camera = scaled_intrinsics(CAMERA, 0.5)
    out = _run(output_size(W, H, 0.5), camera, ('depth', 'points'), stride=4)
    z = out.depth[::4, ::4]
    v, u = np.mgrid[0:out.depth.shape[0]:4, 0:out.depth.shape[1]:4].astype(np.float64)
    expected = np.stack([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z], -1)
    np.testing.assert_allclose(out.points, expected, rtol=1e-6, atol=1e-6)  # float32 unprojection vs float64
    assert out.intrinsics is camera


def test_the_post_graph_makes_the_reduced_outputs_as_numpy_does():
    """Where the network runs on a GPU the per-pixel work is the post graph (here on ONNX Runtime's CPU provider): at
    the output size it gives the numpy path's arrays (float32 rounding of the same operations in another order: the
    frame stage's graph test holds 2e-6; 1e-5 leaves room for other CPUs' kernels)."""
    pytest.importorskip('onnxruntime')
    from mgeo_ros.runtime.post_graph import PostGraph

    size, camera = output_size(W, H, 0.5), scaled_intrinsics(CAMERA, 0.5)
    wanted = ('depth', 'valid', 'confidence', 'points')
    settings = FrameSettings(flying_pixel_max_jump=0.05, points_stride=2)
    want = FrameStage(settings).run(raw_frame(1, False), size, camera, wanted)
    graph = FrameStage(settings, post=PostGraph())
    got = graph.run(raw_frame(1, False), size, camera, wanted)
    assert got.depth.shape == (size[1], size[0]) and got.points.shape == (size[1] // 2, size[0] // 2, 3)
    np.testing.assert_array_equal(got.valid, want.valid)
    for name in ('depth', 'confidence', 'points'):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, equal_nan=True)
