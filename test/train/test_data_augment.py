"""Augmentation keeps intrinsics exact: depth reprojected before and after gives the same 3-D points."""
import numpy as np
import pytest

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import project, unproject
from mgeo_ros.train.augment import (
    AugmentConfig,
    AugmentParams,
    apply,
    augment,
    resize_sample,
    sample_batch_shape,
    sample_params,
)
from mgeo_ros.train.data import Sample


def _scene_sample(w=60, h=45, seed=0):
    """A piecewise surface (steps + slope) with sharp depth edges, so resampling mistakes show up."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 2.0 + 0.03 * xx + 0.5 * (xx > w / 2) + 1.0 * ((yy > h / 3) & (xx < w / 4)) + rng.uniform(0, 0.01, (h, w))
    depth = depth.astype(np.float32)
    depth[5:8, 10:14] = np.nan
    intr = Intrinsics(52.0, 50.5, w / 2 + 3.3, h / 2 - 1.7, w, h)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Sample(rgb, depth, intr, np.isfinite(depth), True, 'test')


def _src_points(s):
    return unproject(np.where(s.mask, s.depth, np.nan), s.intrinsics)


@pytest.mark.parametrize('flip', [False, True])
@pytest.mark.parametrize('window,out,k', [((-6, 3, 66, 48), (22, 16), 3),     # uncrop, then 3x down
                                          ((9, 6, 30, 24), (30, 24), 1),      # crop only
                                          ((4, 2, 10, 8), (30, 24), -3)])     # crop, then 3x up
def test_corresponding_pixels_give_identical_points(flip, window, out, k):
    s = _scene_sample()
    a = apply(s, AugmentParams(flip=flip, window=window, out_size=out))
    assert (a.intrinsics.width, a.intrinsics.height) == out and a.depth.shape == out[::-1]
    pa, ps = unproject(a.depth, a.intrinsics), _src_points(s)
    x0, y0 = window[0], window[1]
    h, w = s.depth.shape
    checked = 0
    for v in range(out[1]):
        for u in range(out[0]):
            if k > 0:
                wx, wy = k * u + (k - 1) // 2, k * v + (k - 1) // 2
            else:
                m = -k
                if u % m != m // 2 or v % m != m // 2:
                    continue
                wx, wy = u // m, v // m
            xf, ys = x0 + wx, y0 + wy                        # pixel in the (possibly flipped) source
            if not (0 <= xf < w and 0 <= ys < h):
                assert not a.mask[v, u]                      # the uncropped border is invalid
                continue
            xs = w - 1 - xf if flip else xf
            ref = ps[ys, xs].copy()
            if flip:
                ref[0] = -ref[0]                             # a mirrored image sees the mirrored world
            if np.isfinite(ref).all():
                np.testing.assert_allclose(pa[v, u], ref, rtol=1e-5, atol=1e-6)
                checked += 1
            else:
                assert not a.mask[v, u]
    assert checked > 20


def test_random_augmentations_reproject_onto_source_depth():
    s = _scene_sample()
    rng = np.random.default_rng(1)
    cfg = AugmentConfig(num_tokens=(20, 40), pixels_per_token=49)
    for _ in range(12):
        w, h, tokens = sample_batch_shape(rng, cfg)
        p = sample_params(rng, (60, 45), (w, h), cfg)
        a = apply(s, p)
        assert 20 <= tokens <= 40 and (a.intrinsics.width, a.intrinsics.height) == (w, h)
        pts = unproject(a.depth, a.intrinsics)[a.mask].astype(np.float64)
        if p.flip:
            pts[:, 0] = -pts[:, 0]
        # each valid point, projected into the source camera, lands on (the centre of, or the tie between) source
        # pixels one of which holds exactly that depth
        uv = project(pts, s.intrinsics)
        ok = np.zeros(len(pts), bool)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                xi, yi = np.rint(uv[:, 0]).astype(int) + dx, np.rint(uv[:, 1]).astype(int) + dy
                near = (np.abs(uv[:, 0] - xi) <= 0.5 + 1e-4) & (np.abs(uv[:, 1] - yi) <= 0.5 + 1e-4)
                near &= (xi >= 0) & (xi < 60) & (yi >= 0) & (yi < 45)
                d = s.depth[yi.clip(0, 44), xi.clip(0, 59)]
                ok |= near & np.isclose(d, pts[:, 2], rtol=1e-6)
        assert ok.all(), f'{(~ok).sum()} of {len(ok)} points off the source depth with {p}'
        assert a.mask.sum() > 0
        assert augment(s, rng, (w, h), cfg).depth.shape == (h, w)


def test_uncrop_border_is_invalid_and_noise_filled():
    s = _scene_sample()
    a = apply(s, AugmentParams(flip=False, window=(-30, -20, 120, 85), out_size=(120, 85)))
    border = np.zeros((85, 120), bool)
    border[:20], border[:, :30], border[65:], border[:, 90:] = True, True, True, True
    assert not a.mask[border].any() and np.isnan(a.depth[border]).all()
    assert a.rgb[border].std() > 20                      # noise, not a flat colour the net could key on
    assert a.mask[~border].sum() == s.mask.sum()


def test_batch_shape_ranges():
    rng = np.random.default_rng(0)
    cfg = AugmentConfig()
    shapes = [sample_batch_shape(rng, cfg) for _ in range(200)]
    aspects = [w / h for w, h, _ in shapes]
    assert 0.47 < min(aspects) < 0.7 and 1.5 < max(aspects) < 2.1
    for w, h, t in shapes:
        assert 1200 <= t <= 2500 and abs(w * h / (t * 196) - 1) < 0.05 and w % 2 == 0 and h % 2 == 0


def test_colour_and_blur_leave_geometry_alone():
    s = _scene_sample()
    p = AugmentParams(flip=False, window=(0, 0, 60, 45), out_size=(60, 45), brightness=1.2, contrast=0.8,
                      saturation=1.3, hue_deg=5.0, blur_sigma=1.0)
    a = apply(s, p)
    assert a.intrinsics == s.intrinsics and np.array_equal(a.depth, s.depth, equal_nan=True)
    assert not np.array_equal(a.rgb, s.rgb)


def test_resize_sample_never_blends_depth():
    s = _scene_sample()
    r = resize_sample(s, (37, 23))
    assert r.intrinsics == s.intrinsics.resized(37, 23)
    values = set(np.unique(s.depth[s.mask]).tolist())
    assert set(np.unique(r.depth[r.mask]).tolist()) <= values
