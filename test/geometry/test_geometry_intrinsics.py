"""Intrinsics, (un)projection, focal helpers and the import rules of mgeo_ros.geometry."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry import Intrinsics, normalized_view_plane_uv, pixel_rays, project, unproject
from mgeo_ros.geometry.focal_shift import (
    focal_from_fov_x,
    fov_x_from_focal,
    intrinsics_from_focal,
    normalized_intrinsics_from_focal,
)

REPO = Path(__file__).resolve().parents[2]


def _random_points(rng, n=200):
    return np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(1, 8, n)], axis=-1)


@pytest.fixture
def intr():
    return Intrinsics(fx=520.3, fy=515.8, cx=318.6, cy=241.2, width=640, height=480)


def test_from_K_accepts_3x3_and_camera_info_k(intr):
    k9 = [intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1]
    a = Intrinsics.from_K(np.array(k9).reshape(3, 3), 640, 480)
    b = Intrinsics.from_K(k9, 640, 480)
    assert a == b == intr
    np.testing.assert_allclose(a.K, np.array(k9).reshape(3, 3))
    with pytest.raises(BadInputError, match='K'):
        Intrinsics.from_K([1, 2, 3], 640, 480)
    with pytest.raises(BadInputError, match='fx'):
        Intrinsics(0.0, 1.0, 0.0, 0.0, 10, 10)


@pytest.mark.parametrize('size', [(320, 240), (1280, 960), (517, 389), (96, 64)])
def test_resize_is_exact_by_reprojection(intr, size):
    """A 3-D point lands where the resize maps its original pixel (pixel-centre convention)."""
    rng = np.random.default_rng(1)
    pts = _random_points(rng)
    uv = project(pts, intr)
    small = intr.resized(*size)
    sx, sy = size[0] / intr.width, size[1] / intr.height
    expected = np.stack([(uv[:, 0] + 0.5) * sx - 0.5, (uv[:, 1] + 0.5) * sy - 0.5], axis=-1)
    np.testing.assert_allclose(project(pts, small), expected, atol=1e-9)
    back = small.resized(intr.width, intr.height)
    np.testing.assert_allclose(back.K, intr.K, atol=1e-9)


def test_crop_and_uncrop_are_exact(intr):
    rng = np.random.default_rng(2)
    pts = _random_points(rng)
    uv = project(pts, intr)
    crop = intr.cropped(37, 21, 400, 300)
    np.testing.assert_allclose(project(pts, crop), uv - [37, 21], atol=1e-9)
    assert (crop.width, crop.height) == (400, 300)
    uncrop = crop.cropped(-37, -21, 640, 480)
    np.testing.assert_allclose(uncrop.K, intr.K, atol=1e-12)


def test_horizontal_flip_mirrors_pixels(intr):
    rng = np.random.default_rng(3)
    pts = _random_points(rng)
    mirrored = pts * [-1, 1, 1]
    flipped = intr.flipped_horizontally()
    u = project(pts, intr)
    u_f = project(mirrored, flipped)
    np.testing.assert_allclose(u_f[:, 0], intr.width - 1 - u[:, 0], atol=1e-9)
    np.testing.assert_allclose(u_f[:, 1], u[:, 1], atol=1e-9)


def test_fov_focal_round_trip():
    i = Intrinsics.from_fov(math.radians(70), 640, 480)
    assert i.fov_x == pytest.approx(math.radians(70), abs=1e-12)
    assert i.fx == pytest.approx(i.fy)
    assert (i.cx, i.cy) == (319.5, 239.5)
    j = Intrinsics.from_fov(math.radians(70), 640, 480, fov_y_rad=math.radians(50))
    assert j.fov_y == pytest.approx(math.radians(50), abs=1e-12)


def test_normalized_round_trip_and_pixel_centre(intr):
    k = intr.normalized()
    back = Intrinsics.from_normalized(k, intr.width, intr.height)
    np.testing.assert_allclose(back.K, intr.K, atol=1e-9)
    centred = Intrinsics.from_fov(1.0, 640, 480)
    np.testing.assert_allclose(centred.normalized()[:2, 2], [0.5, 0.5], atol=1e-12)
    # the same camera normalized at two resolutions gives the same normalized matrix
    np.testing.assert_allclose(intr.resized(320, 240).normalized(), k, atol=1e-12)


def test_moge_focal_helpers_agree_with_intrinsics():
    for w, h, fov in [(640, 480, 1.1), (480, 640, 0.8), (1920, 1080, 1.6), (100, 100, 0.5)]:
        a = w / h
        focal = focal_from_fov_x(fov, a)
        assert fov_x_from_focal(focal, a) == pytest.approx(fov, abs=1e-12)
        i = intrinsics_from_focal(focal, w, h)
        assert i.fov_x == pytest.approx(fov, abs=1e-9)
        assert i.fx == pytest.approx(i.fy, rel=1e-12)
        assert i.moge_focal() == pytest.approx(focal, rel=1e-12)
        assert (i.cx, i.cy) == pytest.approx(((w - 1) / 2, (h - 1) / 2))
        k = normalized_intrinsics_from_focal(focal, a)
        np.testing.assert_allclose(k, i.normalized(), atol=1e-12)


def test_moge_focal_matches_view_plane_uv():
    """focal * x / z equals the uv grid value of the pixel the point projects to (the recovery's model)."""
    w, h = 96, 64
    i = intrinsics_from_focal(1.3, w, h)
    depth = np.random.default_rng(4).uniform(1, 5, (h, w))
    p = unproject(depth, i).astype(np.float64)
    uv = normalized_view_plane_uv(w, h).astype(np.float64)
    np.testing.assert_allclose(1.3 * p[..., :2] / p[..., 2:], uv, atol=1e-5)


def test_unproject_project_round_trip(intr):
    rng = np.random.default_rng(5)
    depth = rng.uniform(0.5, 10.0, (intr.height, intr.width)).astype(np.float32)
    depth[3, 4] = np.nan
    pts = unproject(depth, intr)
    assert pts.shape == (480, 640, 3) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts[..., 2], depth)
    assert np.isnan(pts[3, 4]).all()
    uv = project(pts.astype(np.float64), intr)
    jj, ii = np.meshgrid(np.arange(640), np.arange(480))
    ok = np.isfinite(depth)
    np.testing.assert_allclose(uv[..., 0][ok], jj[ok], atol=2e-3)
    np.testing.assert_allclose(uv[..., 1][ok], ii[ok], atol=2e-3)
    buf = np.empty_like(pts)
    assert unproject(depth, intr, out=buf) is buf
    ru, rv = pixel_rays(intr)
    assert ru.shape == (640,) and rv.shape == (480,)
    with pytest.raises(ValueError):
        unproject(depth[:10], intr)


def test_geometry_imports_without_rclpy_or_torch():
    """`from mgeo_ros.geometry import ...` works where rclpy cannot be imported, and loads no torch; the recovery runs
    there and finds the camera of a slanted plane (a scene whose focal and shift are determined: on a plane facing
    the camera every focal/shift pair on a line fits equally well)."""
    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "from mgeo_ros.geometry import recover_focal_shift, Intrinsics, unproject, normals_from_points\n"
        "import numpy as np\n"
        "i = Intrinsics.from_fov(1.0, 64, 48)\n"
        "yy, xx = np.mgrid[0:48, 0:64] / 48.0\n"
        "p = unproject((1.0 / (0.5 + 0.15 * xx + 0.2 * yy)).astype(np.float32), i)\n"  # inverse depth affine: a plane
        "f, s = recover_focal_shift(p)\n"
        # float32 points (relative rounding 6e-8) move the exact fit by ~1e-8; kernels and summation order by ~1e-14
        "assert abs(f / i.moge_focal() - 1) < 1e-6 and abs(s) < 1e-6, (f, s)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "try:\n    import rclpy\nexcept ImportError:\n    print('blocked')\n"
    )
    r = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'blocked' in r.stdout


@pytest.mark.parametrize('stride', [1, 2, 3, 7])
def test_decimated_intrinsics_project_sampled_pixels_where_they_were(stride):
    intr = Intrinsics(fx=300.0, fy=310.0, cx=159.3, cy=121.7, width=320, height=241)
    sub = intr.decimated(stride)
    assert (sub.width, sub.height) == (len(range(0, 320, stride)), len(range(0, 241, stride)))
    depth = np.random.default_rng(stride).uniform(1.0, 5.0, (241, 320)).astype(np.float32)
    np.testing.assert_allclose(unproject(depth[::stride, ::stride], sub), unproject(depth, intr)[::stride, ::stride],
                               rtol=1e-6)
    with pytest.raises(ValueError, match='stride'):
        intr.decimated(0)

