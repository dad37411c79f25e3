"""Output size and camera matrices at an output scale, as image_proc's resize node makes them."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.output_scale import check_output_scale, output_size, scale_camera_matrices


@pytest.mark.parametrize('scale', [1.0, 0.5, 0.25, 1 / 3, 0.3, 0.77])
@pytest.mark.parametrize('size', [(1920, 1080), (640, 480), (643, 481), (641, 479), (1281, 721), (7, 5)])
def test_the_output_size_is_the_size_cv_resize_gives_image_procs_image(size, scale):
    """image_proc's resize (use_scale) sizes its image with cv::resize(Size(0, 0), s, s): compared with OpenCV
    itself, including the ties (643 x 1/2 = 321.5 -> 322, 641 x 1/2 = 320.5 -> 320)."""
    shrunk = cv2.resize(np.zeros((size[1], size[0]), np.uint8), None, fx=scale, fy=scale)
    assert output_size(*size, scale) == (shrunk.shape[1], shrunk.shape[0])


def test_ties_round_to_even():
    assert output_size(643, 641, 0.5) == (322, 320)


@pytest.mark.parametrize('bad', [0.0, -0.5, 1.01, float('nan'), float('inf')])
def test_scales_outside_zero_to_one_are_refused(bad):
    with pytest.raises(BadInputError, match=r'output_scale must be in \(0, 1\]'):
        check_output_scale(bad)


def test_k_and_p_are_scaled_like_image_proc_and_the_rest_is_kept():
    k = [600.0, 0.0, 319.5, 0.0, 610.0, 239.5, 0.0, 0.0, 1.0]
    p = [590.0, 0.0, 321.0, -35.4, 0.0, 595.0, 238.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    k2, p2 = scale_camera_matrices(k, p, 0.5, 0.25)
    np.testing.assert_array_equal(k2, [300.0, 0.0, 159.75, 0.0, 152.5, 59.875, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(p2, [295.0, 0.0, 160.5, -17.7, 0.0, 148.75, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert k[0] == 600.0  # the caller's lists are not changed


def test_scaled_p_projects_a_point_to_the_scaled_pixel():
    """A 3-D point through the scaled P lands at s times its full-size pixel (image_proc's corner-origin rule)."""
    p = np.array([590.0, 0.0, 321.0, -35.4, 0.0, 595.0, 238.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    point = np.array([0.4, -0.3, 2.5, 1.0])
    _, p2 = scale_camera_matrices(np.eye(3).ravel(), p, 0.5, 0.5)
    full = p.reshape(3, 4) @ point
    half = p2.reshape(3, 4) @ point
    np.testing.assert_allclose(half[:2] / half[2], 0.5 * full[:2] / full[2], rtol=1e-12)


def test_wrong_lengths_are_refused():
    with pytest.raises(BadInputError, match='K must have 9 and P 12'):
        scale_camera_matrices(np.zeros(9), np.zeros(9), 0.5, 0.5)


@pytest.mark.parametrize('scale', [0.5, 0.25, 0.3])
def test_the_outputs_camera_is_image_procs_scaled_k_and_p(scale):
    """scaled_intrinsics (what the node publishes and unprojects with) carries exactly the K and P that
    scale_camera_matrices (image_proc's resize) makes of the frame's, at output_size."""
    from mgeo_ros.geometry.intrinsics import Intrinsics
    from mgeo_ros.geometry.output_scale import scaled_intrinsics

    intr = Intrinsics(1050.0, 1046.0, 961.3, 538.2, 1920, 1080)
    p = np.hstack([intr.K, np.zeros((3, 1))]).reshape(-1)
    k_out, p_out = scale_camera_matrices(intr.K.reshape(-1), p, scale, scale)
    out = scaled_intrinsics(intr, scale)
    assert (out.width, out.height) == output_size(1920, 1080, scale)
    np.testing.assert_array_equal(out.K.reshape(-1), k_out)
    np.testing.assert_array_equal(np.hstack([out.K, np.zeros((3, 1))]).reshape(-1), p_out)


def test_the_outputs_camera_at_scale_one_is_the_frames_own():
    from mgeo_ros.geometry.intrinsics import Intrinsics
    from mgeo_ros.geometry.output_scale import scaled_intrinsics

    intr = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    assert scaled_intrinsics(intr, 1.0) is intr
