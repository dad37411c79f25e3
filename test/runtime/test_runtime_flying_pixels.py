"""Flying-pixel removal: planes (frontal, slanted, a floor seen from a robot camera) keep their pixels; the blended
pixels of an occlusion edge go. Depth maps are made from exact plane geometry, not from the filter's own rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mgeo_ros.geometry import Intrinsics
from mgeo_ros.geometry.projection import pixel_rays
from mgeo_ros.runtime.flying_pixels import DepthJumpTest, grazing_mask
from mgeo_ros.runtime.postprocess import upsample_valid

W, H = 640, 480
INTR = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=W, height=H)
DEFAULT_JUMP = 0.08  # the node's default (node_params.py); test/ros/test_node_logic.py asserts it


def _plane_depth(normal, distance: float) -> np.ndarray:
    """z-depth of the plane n . X = distance seen through INTR (NaN where the ray misses it)."""
    ru, rv = pixel_rays(INTR, np.float64)
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    denom = n[0] * ru[None, :] + n[1] * rv[:, None] + n[2]
    with np.errstate(divide='ignore', invalid='ignore'):
        z = distance / denom
    return np.where(z > 0, z, np.nan).astype(np.float32)


def test_a_frontal_wall_keeps_every_pixel():
    depth = np.full((H, W), 2.5, np.float32)
    assert not DepthJumpTest()(depth, DEFAULT_JUMP).any()


@pytest.mark.parametrize('slant_deg', [30.0, 60.0, 75.0, 85.0])
@pytest.mark.parametrize('axis', ['yaw', 'pitch'])
def test_a_slanted_wall_keeps_every_pixel_away_from_its_vanishing_line(slant_deg, axis):
    """A plane's inverse depth is affine in the pixel coordinates, so its relative depth change per pixel is
    1 / (distance to its vanishing line): it keeps every pixel further than 2r / max_rel_jump (25 px) from that
    line, whatever its slant. Only the far, grazing band next to the vanishing line may go."""
    s, c = math.sin(math.radians(slant_deg)), math.cos(math.radians(slant_deg))
    normal = (s, 0.0, -c) if axis == 'yaw' else (0.0, s, -c)
    depth = _plane_depth(normal, -2.0)  # the plane passes 2 m in front of the camera along the axis
    valid = np.isfinite(depth)
    assert valid.mean() > 0.3
    flagged = DepthJumpTest()(depth, DEFAULT_JUMP)
    # vanishing line: n . (u', v', 1) = 0
    coord = np.arange(W) - INTR.cx if axis == 'yaw' else np.arange(H) - INTR.cy
    vanish = INTR.fx * c / s
    distance = np.abs(coord - vanish)
    far_from_line = (distance > 2 / DEFAULT_JUMP + 1)[None, :] if axis == 'yaw' else \
        (distance > 2 / DEFAULT_JUMP + 1)[:, None]
    assert not (flagged & far_from_line).any(), f'wall pixels removed away from the vanishing line ({slant_deg} deg)'
    band = (2 / DEFAULT_JUMP + 1) * (H if axis == 'yaw' else W)
    assert flagged.sum() <= band  # at most the band next to the vanishing line
    if vanish > (W if axis == 'yaw' else H):
        assert not flagged.any()  # the vanishing line is outside the image: nothing goes


@pytest.mark.parametrize('camera_height', [0.3, 1.0])
def test_a_floor_seen_from_a_robot_camera_keeps_its_pixels_out_to_the_documented_range(camera_height):
    """A level camera `camera_height` above the floor (y down: the floor is y = h): every floor pixel nearer than
    the range of the module docstring, z = max_rel_jump * h * f / (2 r), survives (6.3 m at 0.3 m height), and the
    whole floor of a 10 m room does for the 1 m camera."""
    depth = _plane_depth((0.0, 1.0, 0.0), camera_height)
    kept_to = DEFAULT_JUMP * camera_height * INTR.fy / 2
    flagged = DepthJumpTest()(depth, DEFAULT_JUMP)
    near = np.isfinite(depth) & (depth < 0.95 * kept_to)
    assert near.sum() > 10000
    assert not (flagged & near).any(), f'floor pixels nearer than {kept_to:.1f} m removed'
    room = np.isfinite(depth) & (depth < 10.0)
    if kept_to > 10.0:
        assert not (flagged & room).any()
    assert not (flagged & (depth < 0.95 * kept_to)).any()


def _step_edge(near: float, far: float, factor: int = 4) -> np.ndarray:
    """A vertical occlusion edge as the node makes it: exact at the network resolution, upsampled by `factor`
    with postprocess's normalized bilinear resize."""
    nw, nh = W // factor, H // factor
    low = np.full((nh, nw), far, np.float32)
    low[:, : nw // 2] = near
    depth, _ = upsample_valid(low, np.ones_like(low, bool), W, H)
    return depth


@pytest.mark.parametrize('factor', [2, 4])  # the node upsamples 280x210 (300 tokens) by 2.3 to 640x480
@pytest.mark.parametrize('near,far', [(1.0, 3.0), (2.0, 2.5), (0.5, 20.0)])
def test_the_midpoints_of_a_step_edge_are_removed(near, far, factor):
    depth = _step_edge(near, far, factor)
    flying = (depth > near * 1.05) & (depth < far / 1.05)  # more than 5 % from both sides
    assert flying.sum() >= H  # the upsampling really made flying pixels
    flagged = DepthJumpTest()(depth, DEFAULT_JUMP)
    assert flagged[flying].all(), f'{(~flagged[flying]).sum()} of {flying.sum()} midpoints kept'
    # and it stays local: nothing further than the window from the blended band goes
    cols = np.nonzero(flagged.any(0))[0]
    band = np.nonzero(flying.any(0))[0]
    assert cols.min() >= band.min() - 2 and cols.max() <= band.max() + 2


def test_invalid_neighbours_are_not_an_edge_and_invalid_pixels_are_never_flagged():
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, 300:] = np.nan  # e.g. sky or beyond the mask
    depth[100:110, 100:110] = np.nan
    flagged = DepthJumpTest()(depth, DEFAULT_JUMP)
    assert not flagged.any()


def test_a_lone_pixel_in_front_of_a_wall_goes_with_its_neighbours():
    depth = np.full((60, 80), 4.0, np.float32)
    depth[30, 40] = 2.0
    flagged = DepthJumpTest()(depth, DEFAULT_JUMP)
    assert flagged[30, 40] and flagged[29:32, 39:42].sum() == 9 and flagged.sum() == 9


def test_a_wider_window_flags_more():
    depth = _step_edge(1.0, 3.0)
    assert DepthJumpTest()(depth, DEFAULT_JUMP, radius=2).sum() > DepthJumpTest()(depth, DEFAULT_JUMP).sum()


def test_reused_buffers_give_the_same_answer_for_a_new_size():
    test = DepthJumpTest()
    a = _step_edge(1.0, 3.0)
    first = test(a, DEFAULT_JUMP).copy()
    small = np.full((10, 12), 1.0, np.float32)
    small[:, 6:] = 2.0
    assert test(small, DEFAULT_JUMP)[:, 5:7].all()
    np.testing.assert_array_equal(test(a, DEFAULT_JUMP), first)


def test_grazing_angle_test_flags_surfaces_seen_edge_on_only():
    from mgeo_ros.geometry.normals import normals_from_depth

    def normals_of(slant_deg):
        s, c = math.sin(math.radians(slant_deg)), math.cos(math.radians(slant_deg))
        depth = _plane_depth((s, 0.0, -c), -2.0)
        return depth, normals_from_depth(depth, INTR)

    depth, normals = normals_of(40.0)
    assert not grazing_mask(normals, INTR, 85.0)[np.isfinite(depth)].any()
    depth, normals = normals_of(89.0)
    centre = np.isfinite(depth)
    centre[:, : W // 2 - 40] = False
    centre[:, W // 2 + 40:] = False  # rays near the optical axis meet the 89 deg plane at ~89 deg
    assert grazing_mask(normals, INTR, 85.0)[centre].mean() > 0.95
