"""normals_from_points: planes give their normal, oriented toward the camera; invalid pixels are NaN; torch twin."""
import numpy as np
import pytest
import torch

from mgeo_ros.geometry import Intrinsics, normals_from_points, unproject


def _plane_points(normal, offset, intr):
    """Points of the plane n . p = -offset (n facing the camera) seen by `intr`."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    u = (np.arange(intr.width) - intr.cx) / intr.fx
    v = (np.arange(intr.height) - intr.cy) / intr.fy
    z = -offset / (n[0] * u[None, :] + n[1] * v[:, None] + n[2])
    return unproject(z, intr).astype(np.float64), n


@pytest.mark.parametrize('normal', [(0, 0, -1), (0.3, -0.2, -1.0), (-0.5, 0.4, -0.8), (0.0, -1.0, -0.6)])
def test_plane_normal_is_recovered_and_faces_the_camera(normal):
    intr = Intrinsics.from_fov(1.2, 64, 48)
    pts, n = _plane_points(normal, 3.0, intr)
    out = normals_from_points(pts)
    assert out.shape == (48, 64, 3) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.broadcast_to(n, out.shape), atol=1e-5)
    assert ((out * pts).sum(-1) < 0).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)


def test_orientation_does_not_depend_on_pixel_order():
    """A mirrored image (reversed winding) still yields normals toward the camera."""
    intr = Intrinsics.from_fov(1.0, 40, 30)
    pts, n = _plane_points((0.2, 0.1, -1.0), 2.0, intr)
    flipped = normals_from_points(pts[:, ::-1])
    np.testing.assert_allclose(flipped, np.broadcast_to(n, flipped.shape), atol=1e-5)


def test_invalid_pixels_are_nan_and_edges_use_remaining_triangles():
    intr = Intrinsics.from_fov(1.0, 32, 24)
    pts, n = _plane_points((0, 0, -1), 2.0, intr)
    pts[5, 5] = np.nan
    mask = np.ones((24, 32), dtype=bool)
    mask[10, 10] = False
    out = normals_from_points(pts, mask)
    assert np.isnan(out[5, 5]).all() and np.isnan(out[10, 10]).all()
    # neighbours of holes and border pixels still have a valid triangle and the right normal
    for ij in [(5, 6), (4, 5), (10, 11), (0, 0), (23, 31)]:
        np.testing.assert_allclose(out[ij], n, atol=1e-6)
    lonely = np.zeros((24, 32), dtype=bool)
    lonely[3, 3] = lonely[3, 4] = True                              # no triangle possible
    assert np.isnan(normals_from_points(pts, lonely)).all()


def test_torch_twin_matches_and_has_gradients():
    intr = Intrinsics.from_fov(1.1, 24, 20)
    rng = np.random.default_rng(0)
    depth = 2.0 + 0.3 * rng.uniform(size=(20, 24))
    pts = unproject(depth, intr).astype(np.float64)
    mask = rng.uniform(size=(20, 24)) > 0.1
    ref = normals_from_points(pts, mask)
    p = torch.tensor(np.stack([pts, pts]), requires_grad=True)
    out = normals_from_points(p, torch.tensor(np.stack([mask, mask])))
    assert out.shape == (2, 20, 24, 3)
    np.testing.assert_allclose(out[0].detach().numpy(), ref, atol=1e-5, equal_nan=True)
    valid = torch.isfinite(out).all(-1)
    loss = (out[valid] * torch.tensor([0.1, 0.2, 0.3], dtype=out.dtype)).sum()
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_maps_larger_than_a_chunk_match_the_torch_twin_and_fill_out():
    """The numpy path works chunk by chunk on the flattened padded map: a map spanning several chunks (with holes,
    a step edge and rows crossing chunk boundaries) gives what the independent torch twin gives, into `out`."""
    from mgeo_ros.geometry import normals as mod

    h, w = 190, 3 * mod._CHUNK // 190  # > 2 chunks of padded pixels
    intr = Intrinsics.from_fov(1.1, w, h)
    rng = np.random.default_rng(3)
    depth = (2.0 + 0.2 * np.sin(np.arange(w) / 9.0)[None, :] + (np.arange(h) > h // 2)[:, None]
             + 0.01 * rng.uniform(size=(h, w))).astype(np.float32)
    depth[rng.uniform(size=(h, w)) < 0.05] = np.nan
    pts = unproject(depth, intr)
    mask = rng.uniform(size=(h, w)) > 0.02
    out = np.full((h, w, 3), 7.0, np.float32)
    got = normals_from_points(pts, mask, out=out)
    ref = mod._normals_torch(torch.from_numpy(pts), torch.from_numpy(mask)).numpy()
    assert got is out
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, atol=2e-5, equal_nan=True)
    with pytest.raises(ValueError, match='out must be'):
        normals_from_points(pts, mask, out=np.empty((h, w, 3), np.float64))


NORMALS_FROM_DEPTH_ATOL = 2e-4  # per component: float32 rounding of the inverse-depth slopes against float64 3-D
# The tolerance against the mean of the triangles' unit normals (normals_from_points): the two weightings agree on
# planes (up to float32 rounding) and within SMOOTH_DEG on >= SMOOTH_SHARE of the pixels of a smooth curved surface
# with holes that are not next to a depth jump (a 4-neighbour more than JUMP relatively nearer or farther).
SMOOTH_DEG, SMOOTH_SHARE, JUMP = 1.0, 0.99, 0.05


@pytest.mark.parametrize('roughness', [3.0, 0.01])
def test_normals_from_depth_equal_the_plane_sum_reference(roughness):
    """The node's path (inverse-depth slopes, no point map) gives what the independent float64 reference on the 3-D
    points gives (test/normals_reference.py), on a rough (each pixel at its own depth) and a near-smooth map, with
    holes and a mask: same NaN pixels, each component within NORMALS_FROM_DEPTH_ATOL."""
    from normals_reference import plane_sum_normals

    from mgeo_ros.geometry.normals import normals_from_depth

    intr = Intrinsics(fx=61.0, fy=59.5, cx=40.2, cy=29.7, width=83, height=61)
    rng = np.random.default_rng(11)
    depth = (1.0 + roughness * rng.uniform(size=(61, 83))).astype(np.float32)
    depth[rng.uniform(size=depth.shape) < 0.1] = np.nan
    mask = rng.uniform(size=depth.shape) > 0.05
    want = plane_sum_normals(depth, intr, mask)
    out = np.empty((61, 83, 3), np.float32)
    got = normals_from_depth(depth, intr, mask, out=out)
    assert got is out
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(got).mean() > 0.5
    np.testing.assert_allclose(got, want, atol=NORMALS_FROM_DEPTH_ATOL, equal_nan=True)
    # the same normals from a mask in another layout and type; fresh buffers at other addresses, where OpenCV's SIMD
    # and IPP loops may round the first unaligned elements differently (measured 2.4e-7, float32's last bits)
    np.testing.assert_allclose(normals_from_depth(depth, intr, np.asfortranarray(mask).astype(np.uint8)), got,
                               rtol=0, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match='float32'):
        normals_from_depth(depth.astype(np.float64), intr)


def test_normals_from_depth_agree_with_the_mean_of_unit_normals_where_the_surface_is_smooth():
    """Against normals_from_points on unproject(depth): exact on a plane (with holes: the one-sided differences),
    within SMOOTH_DEG on >= SMOOTH_SHARE of the pixels of a curved surface with holes away from its step; same NaN
    pixels everywhere."""
    from normals_reference import angles_deg

    from mgeo_ros.geometry.normals import normals_from_depth

    h, w = 120, 160
    intr = Intrinsics(fx=130.0, fy=128.0, cx=79.3, cy=60.2, width=w, height=h)
    rng = np.random.default_rng(5)
    holes = rng.uniform(size=(h, w)) < 0.02
    plane, n = _plane_points((0.3, -0.2, -1.0), 2.5, intr)
    flat = np.where(holes, np.nan, plane[..., 2]).astype(np.float32)
    got = normals_from_depth(flat, intr)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(normals_from_points(unproject(flat, intr))))
    finite = np.isfinite(got).all(-1)
    np.testing.assert_allclose(got[finite], np.broadcast_to(n, got.shape)[finite], atol=5e-5)  # float32 slopes
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    curved = (2.0 + 0.4 * np.sin(u / 17.0) * np.cos(v / 23.0) + 0.6 * (u > w // 2)).astype(np.float32)
    curved[holes] = np.nan
    got = normals_from_depth(curved, intr)
    want = normals_from_points(unproject(curved, intr))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    pad = np.pad(curved, 1, constant_values=np.nan)
    with np.errstate(invalid='ignore'):
        jump = np.zeros((h, w), bool)
        for nb in (pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]):
            jump |= np.abs(nb / curved - 1.0) > JUMP
    assert 100 < jump.sum() < 0.05 * h * w
    angles = angles_deg(np.where(jump[..., None], np.nan, got), want)
    assert angles.size > 0.9 * h * w
    assert (angles <= SMOOTH_DEG).mean() >= SMOOTH_SHARE
    assert np.median(angles) < 0.05 * SMOOTH_DEG


def test_depth_normals_reuse_buffers_across_frames_and_sizes():
    """One DepthNormals over frames of two sizes gives what a fresh one gives each time; depth <= 0 and +inf have
    no normal (no surface point in front of the camera), and nor do their neighbours' triangles through them."""
    from normals_reference import plane_sum_normals

    from mgeo_ros.geometry.normals import DepthNormals, normals_from_depth

    keep = DepthNormals()
    rng = np.random.default_rng(3)
    for h, w in ((40, 50), (21, 33), (40, 50), (700, 90)):  # the last: several blocks of rows
        intr = Intrinsics(fx=max(45.0, h), fy=max(44.0, h), cx=w / 2, cy=h / 2, width=w, height=h)
        depth = (2.0 + 0.005 * rng.standard_normal((h, w))).astype(np.float32)
        depth[5, 7], depth[9, 3], depth[2, 2] = 0.0, -1.0, np.inf
        got = keep(depth, intr)
        np.testing.assert_allclose(got, normals_from_depth(depth, intr), atol=2e-6)  # OpenCV: rounding by alignment
        assert np.isnan(got[5, 7]).all() and np.isnan(got[9, 3]).all() and np.isnan(got[2, 2]).all()
        np.testing.assert_allclose(got, plane_sum_normals(depth, intr), atol=NORMALS_FROM_DEPTH_ATOL, equal_nan=True)
