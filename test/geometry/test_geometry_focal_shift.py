"""recover_focal_shift: MoGe-2 semantics, accuracy on exact synthetic scenes, numpy/torch parity, scipy oracle."""
import math

import numpy as np
import pytest
import torch

from mgeo_ros.geometry import normalized_view_plane_uv, recover_focal_shift, unproject
from mgeo_ros.geometry.focal_shift import _legacy_nearest_index, intrinsics_from_focal


def _rotation(rng, max_angle):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = rng.uniform(-max_angle, max_angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(ang) * k + (1 - math.cos(ang)) * k @ k


def _rays(intr):
    u = (np.arange(intr.width) - intr.cx) / intr.fx
    v = (np.arange(intr.height) - intr.cy) / intr.fy
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)], axis=-1)            # z = 1 rays


def _plane_depth(rng, intr):
    n = _rotation(rng, 0.9) @ np.array([0.0, 0.0, 1.0])            # faces the camera within ~50 degrees
    d = rng.uniform(1.5, 6.0)
    denom = _rays(intr) @ n
    z = np.where(denom > 0.05, d / np.where(denom > 0.05, denom, 1.0), np.nan)
    return np.where(z < 60, z, np.nan)


def _room_depth(rng, intr):
    """The camera inside a randomly rotated box: depth of the first wall hit along each ray."""
    rot = _rotation(rng, 0.6)
    normals = np.concatenate([np.eye(3), -np.eye(3)]) @ rot.T       # outward wall normals
    dist = rng.uniform(1.0, 5.0, 6)
    dist[2] = rng.uniform(3.0, 8.0)                                 # the far wall ahead
    denom = _rays(intr) @ normals.T                                 # [H, W, 6]
    t = np.where(denom > 1e-6, dist / np.where(denom > 1e-6, denom, 1.0), np.inf)
    return t.min(-1)


def _scene(rng, kind, width, height, focal):
    intr = intrinsics_from_focal(focal, width, height)
    depth = _plane_depth(rng, intr) if kind == 'plane' else _room_depth(rng, intr)
    points = unproject(depth, intr).astype(np.float64)
    # recompute in float64 for exact data
    points[..., :2] = _rays(intr)[..., :2] * depth[..., None]
    mask = np.isfinite(depth)
    return points, mask


def _affine_invariant(rng, points, mask):
    """z -= shift with a random shift that keeps z positive (MoGe's exp remap makes predicted z > 0)."""
    zmin = np.nanmin(np.where(mask, points[..., 2], np.nan))
    shift = rng.uniform(-3.0, 0.9 * zmin)
    out = points.copy()
    out[..., 2] -= shift
    return out, shift


def _random_case(rng, kind):
    w, h = int(rng.integers(48, 200)), int(rng.integers(48, 200))
    focal = rng.uniform(0.5, 3.0)
    pts, mask = _scene(rng, kind, w, h, focal)
    if rng.uniform() < 0.5:                                         # random holes in the mask
        mask &= rng.uniform(size=mask.shape) > 0.3
    aff, shift = _affine_invariant(rng, pts, mask)
    aff[~mask] = np.nan
    return aff, mask, focal, shift


def _scipy_oracle(points, mask, focal=None):
    """MoGe's solver, restated: scipy LM (ftol=1e-3, x0=0) on the 64x64 legacy-nearest subsample."""
    from scipy.optimize import least_squares

    h, w = points.shape[:2]
    iy, ix = _legacy_nearest_index(h, 64), _legacy_nearest_index(w, 64)
    uv = normalized_view_plane_uv(w, h).astype(np.float64)[iy][:, ix]
    xyz, m = points[iy][:, ix], mask[iy][:, ix]
    uv, xyz = uv[m], xyz[m]

    def residual(s):
        xy = xyz[:, :2] / (xyz[:, 2:] + s)
        f = (xy * uv).sum() / (xy * xy).sum() if focal is None else focal
        return (f * xy - uv).ravel()

    s = least_squares(residual, x0=0, ftol=1e-3, method='lm').x[0]
    xy = xyz[:, :2] / (xyz[:, 2:] + s)
    return ((xy * uv).sum() / (xy * xy).sum() if focal is None else focal), s


@pytest.mark.parametrize('kind', ['plane', 'room'])
def test_recovers_focal_and_shift_on_exact_scenes(kind):
    rng = np.random.default_rng(10 if kind == 'plane' else 11)
    worst = 0.0
    for _ in range(25):
        pts, mask, focal, shift = _random_case(rng, kind)
        f, s = recover_focal_shift(pts, mask)
        assert isinstance(f, float) and isinstance(s, float)
        err = max(abs(f - focal) / focal, abs(s - shift) / max(abs(shift), 1.0))
        worst = max(worst, err)
    assert worst < 1e-3, worst


def test_known_focal_solves_only_the_shift():
    rng = np.random.default_rng(12)
    for _ in range(10):
        pts, mask, focal, shift = _random_case(rng, 'room')
        f, s = recover_focal_shift(pts, mask, focal=focal)
        assert f == focal
        assert s == pytest.approx(shift, rel=1e-3, abs=1e-3)
    # a wrong known focal comes back unchanged and shifts the solution instead
    f, s_wrong = recover_focal_shift(pts, mask, focal=focal * 1.3)
    assert f == focal * 1.3 and abs(s_wrong - shift) > 1e-2


def test_fewer_than_two_valid_samples():
    rng = np.random.default_rng(13)
    pts, mask, focal, _ = _random_case(rng, 'plane')
    mask = np.zeros_like(mask)
    assert recover_focal_shift(pts, mask) == (1.0, 0.0)
    h, w = mask.shape
    mask[_legacy_nearest_index(h, 64)[5], _legacy_nearest_index(w, 64)[7]] = True   # exactly one sampled pixel
    assert recover_focal_shift(pts, mask) == (1.0, 0.0)
    assert recover_focal_shift(pts, mask, focal=2.5) == (2.5, 0.0)
    f, s = recover_focal_shift(torch.as_tensor(pts)[None], torch.as_tensor(mask)[None])
    assert f.item() == 1.0 and s.item() == 0.0


def test_uses_exactly_the_legacy_nearest_64x64_samples():
    """Garbage in pixels the 64x64 subsample never reads changes nothing; in one it reads, it does."""
    rng = np.random.default_rng(14)
    pts, mask, _, _ = _random_case(rng, 'room')
    pts = np.where(mask[..., None], pts, 1.0)
    mask = np.ones_like(mask)
    h, w = mask.shape
    sampled = np.zeros_like(mask)
    sampled[np.ix_(_legacy_nearest_index(h, 64), _legacy_nearest_index(w, 64))] = True
    ref = recover_focal_shift(pts, mask)
    junk = pts.copy()
    junk[~sampled] = rng.normal(size=(int((~sampled).sum()), 3)) * 100
    if (~sampled).any():  # the same samples in other buffers: equal up to the order a BLAS kernel sums them in
        assert recover_focal_shift(junk, mask) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    junk2 = pts.copy()
    junk2[sampled] += rng.normal(size=(int(sampled.sum()), 3)) * 0.05
    assert recover_focal_shift(junk2, mask) != pytest.approx(ref, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize('size', [(240, 320), (47, 61), (64, 64), (30, 200), (1080, 1920)])
def test_legacy_nearest_index_matches_torch(size):
    h, w = size
    grid = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w)
    small = torch.nn.functional.interpolate(grid, (64, 64), mode='nearest')[0, 0].long()
    iy, ix = _legacy_nearest_index(h, 64), _legacy_nearest_index(w, 64)
    np.testing.assert_array_equal(small.numpy(), iy[:, None] * w + ix[None, :])


def test_numpy_and_torch_agree_batched_with_masks():
    rng = np.random.default_rng(15)
    cases = []
    h, w = 72, 96
    for _ in range(3):
        focal = rng.uniform(0.6, 2.5)
        pts, mask = _scene(rng, 'room', w, h, focal)
        mask &= rng.uniform(size=mask.shape) > 0.2
        aff, shift = _affine_invariant(rng, pts, mask)
        cases.append((aff, mask))
    p = torch.as_tensor(np.stack([c[0] for c in cases]), dtype=torch.float32)
    m = torch.as_tensor(np.stack([c[1] for c in cases]))
    f_t, s_t = recover_focal_shift(p, m)
    assert f_t.shape == (3,) and f_t.dtype == torch.float32 and f_t.device == p.device
    for i, (aff, mask) in enumerate(cases):
        f_n, s_n = recover_focal_shift(aff.astype(np.float32), mask)
        assert f_t[i].item() == pytest.approx(f_n, rel=1e-5)
        assert s_t[i].item() == pytest.approx(s_n, rel=1e-5, abs=1e-5)
    # un-batched torch input gives 0-d tensors; a known focal tensor comes back as given
    f0, s0 = recover_focal_shift(p[0], m[0])
    assert f0.ndim == 0 and f0.item() == pytest.approx(f_t[0].item())
    known = torch.tensor([1.0, 1.5, 2.0])
    f_k, s_k = recover_focal_shift(p, m, focal=known)
    assert torch.equal(f_k, known) and s_k.shape == (3,)
    # numpy batch gives arrays
    f_b, s_b = recover_focal_shift(p.numpy(), m.numpy())
    np.testing.assert_allclose(f_b, f_t.numpy(), rtol=1e-5)
    # one [H, W] mask shared by the batch
    f_sh, _ = recover_focal_shift(p, m[1])
    f_1, _ = recover_focal_shift(p[1].numpy(), m[1].numpy())
    assert f_sh[1].item() == pytest.approx(f_1, rel=1e-5)
    np.testing.assert_allclose(recover_focal_shift(p.numpy(), m[1].numpy())[0], f_sh.numpy(), rtol=1e-5)


def test_agrees_with_scipy_lm_oracle_on_noisy_maps():
    rng = np.random.default_rng(16)
    for k in range(12):
        pts, mask, focal, shift = _random_case(rng, 'room' if k % 2 else 'plane')
        noisy = pts * (1 + 0.005 * rng.normal(size=pts.shape))
        f, s = recover_focal_shift(noisy, mask)
        f_o, s_o = _scipy_oracle(noisy, mask)
        assert f == pytest.approx(f_o, rel=1e-3)
        assert s == pytest.approx(s_o, rel=1e-3, abs=1e-3)
        s_k = recover_focal_shift(noisy, mask, focal=focal)[1]
        assert s_k == pytest.approx(_scipy_oracle(noisy, mask, focal=focal)[1], rel=1e-3, abs=1e-3)


def test_single_map_path_equals_the_batched_one():
    """One map is solved with scalar bookkeeping on its valid samples, a batch with masked arrays: the same
    iterations, so the same optimum up to where each stops converging (well below float32 resolution)."""
    rng = np.random.default_rng(7)
    for k in range(8):
        pts, mask, focal, _ = _random_case(rng, 'room' if k % 2 else 'plane')
        noisy = (pts * (1 + 0.01 * rng.normal(size=pts.shape))).astype(np.float32)
        for known in (None, focal):
            f1, s1 = recover_focal_shift(noisy, mask, focal=known)
            fb, sb = recover_focal_shift(np.stack([noisy, noisy[::-1]]), np.stack([mask, mask[::-1]]), focal=known)
            assert f1 == pytest.approx(fb[0], rel=1e-7) and s1 == pytest.approx(sb[0], rel=1e-7, abs=1e-9)


def test_bad_shape_raises():
    from mgeo_ros.errors import BadInputError

    with pytest.raises(BadInputError, match='points'):
        recover_focal_shift(np.zeros((10, 10)))
