"""Exact truncated-L1 (ROE) alignment: brute-force optimality, known answers, outliers, weights, batches, gradients.

Known answers and optima are compared at rel 1e-9 (1e-12 for exact data): the fits are float64 closed forms through
one or two samples and the objectives sums of positive terms, so kernels and summation order move them by ~1e-15."""
import numpy as np
import pytest
import torch

from mgeo_ros.geometry.alignment import (
    align_affine_lstsq,
    align_depth_affine,
    align_depth_scale,
    align_points_scale,
    align_points_scale_xyz_shift,
    align_points_scale_z_shift,
    align_points_xyz_shift,
    align_points_z_shift,
    align_scale,
    masked_nearest_resize,
    roe_solve,
)


def _objective(residual, w, trunc):
    e = w * np.abs(residual)
    return (e if trunc is None else np.minimum(trunc, e)).sum(-1)


def _brute_scale(x, y, w, trunc):
    ok = (x != 0) & (w > 0)
    cands = y[ok] / x[ok]
    vals = [_objective(a * x - y, w, trunc) for a in cands]
    return min(vals)


def test_roe_solve_is_globally_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for it in range(200):
        n = int(rng.integers(1, 25))
        x = rng.normal(size=n)
        y = rng.normal(size=n) * rng.choice([0.5, 3.0])
        w = rng.uniform(0, 2, n) * (rng.uniform(size=n) > 0.2)
        if rng.uniform() < 0.3:
            x[rng.integers(n)] = 0.0
        if not ((x != 0) & (w > 0)).any():
            continue
        if it % 3 == 0:
            trunc = None
        elif it % 3 == 1:
            trunc = float(rng.uniform(0.05, 2.0))
        else:
            trunc = rng.uniform(0.05, 2.0, n)
        a, loss, index, found = roe_solve(torch.tensor(x), torch.tensor(y), torch.tensor(w),
                                          None if trunc is None else (trunc if np.isscalar(trunc) else
                                                                      torch.tensor(trunc)))
        assert bool(found)
        best = _brute_scale(x, y, w, trunc)
        assert float(loss) == pytest.approx(best, rel=1e-9, abs=1e-12)
        assert _objective(float(a) * x - y, w, trunc) == pytest.approx(best, rel=1e-9, abs=1e-12)
        assert float(a) == pytest.approx(y[int(index)] / x[int(index)])


def test_scale_exact_fit_and_outliers_beyond_trunc_are_ignored():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 5, 300)
    y = 2.37 * x
    y[:100] = rng.uniform(-50, 50, 100)                            # a third gross outliers
    assert align_scale(x, y, np.ones_like(x), trunc=0.5) == pytest.approx(2.37, rel=1e-12)
    # without truncation the outliers pull the weighted median only if they carry weight
    w = np.ones_like(x)
    w[:100] = 0.0
    assert align_scale(x, y, w) == pytest.approx(2.37, rel=1e-12)
    assert align_depth_scale(x, y, w) == pytest.approx(2.37, rel=1e-12)


def test_weighted_median_without_trunc():
    x = np.ones(4)
    y = np.array([1.0, 2.0, 3.0, 10.0])
    a = align_scale(x, y, np.ones(4))
    assert 2.0 <= a <= 3.0
    assert align_scale(x, y, np.array([1.0, 1.0, 1.0, 5.0])) == 10.0
    assert align_scale(x, y, np.array([4.0, 1.0, 1.0, 1.0])) == 1.0
    # negative x flips sign consistently
    assert align_scale(-x, -y, np.array([4.0, 1.0, 1.0, 1.0])) == 1.0


def test_no_usable_sample_gives_zero():
    s = align_scale(torch.zeros(2, 5), torch.ones(2, 5), torch.ones(2, 5))
    assert torch.equal(s, torch.zeros(2))
    s, t = align_depth_affine(torch.ones(1, 4), torch.ones(1, 4), torch.zeros(1, 4))
    assert s.item() == 0.0 and t.item() == 0.0


def _points_case(rng, n, s, t, outliers, z_only):
    gt = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1, 1, n), rng.uniform(1, 6, n)], -1)
    shift = np.array([0.0, 0.0, t[2]]) if z_only else np.asarray(t)
    pred = (gt - shift) / s
    pred[:outliers] += rng.normal(size=(outliers, 3)) * 3
    return pred, gt


def test_points_scale_z_shift_known_answer_with_outliers():
    rng = np.random.default_rng(2)
    pred, gt = _points_case(rng, 400, 0.73, (0, 0, -1.2), 120, z_only=True)
    s, tz = align_points_scale_z_shift(pred, gt, np.ones(400), trunc=0.2)
    assert s == pytest.approx(0.73, rel=1e-9) and tz == pytest.approx(-1.2, rel=1e-9)
    # MoGe's weighting (1 / gt_z) and the anchor subset give the same exact answer on this data
    s2, tz2 = align_points_scale_z_shift(pred, gt, 1 / gt[:, 2], trunc=0.2, max_anchors=32)
    assert s2 == pytest.approx(0.73, rel=1e-9) and tz2 == pytest.approx(-1.2, rel=1e-9)


def test_points_scale_xyz_shift_and_shift_only_known_answers():
    rng = np.random.default_rng(3)
    t = np.array([0.3, -0.7, 2.0])
    pred, gt = _points_case(rng, 300, 1.9, t, 80, z_only=False)
    s, tt = align_points_scale_xyz_shift(pred, gt, np.ones(300), trunc=0.1)
    assert s == pytest.approx(1.9, rel=1e-9)
    np.testing.assert_allclose(tt, t, atol=1e-9)
    pred1, gt1 = _points_case(rng, 300, 1.0, t, 80, z_only=False)
    np.testing.assert_allclose(align_points_xyz_shift(pred1, gt1, np.ones(300), trunc=0.1), t, atol=1e-9)
    assert align_points_z_shift(pred1, gt1, np.ones(300), trunc=0.1) == pytest.approx(2.0, abs=1e-9)
    pred2, gt2 = _points_case(rng, 300, 0.5, (0, 0, 0), 0, z_only=False)
    assert align_points_scale(pred2, gt2, np.ones(300)) == pytest.approx(0.5, rel=1e-12)


def test_depth_affine_is_optimal_against_brute_force_pairs():
    rng = np.random.default_rng(4)
    for it in range(40):
        n = int(rng.integers(3, 14))
        x = rng.uniform(0.5, 5, n)
        y = 1.7 * x + 0.4 + rng.normal(size=n) * rng.choice([0.01, 1.0])
        w = rng.uniform(0.2, 2, n) * (rng.uniform(size=n) > 0.15)
        if (w > 0).sum() < 2:
            continue
        trunc = None if it % 2 else float(rng.uniform(0.1, 1.0))
        s, t = align_depth_affine(x, y, w, trunc)
        live = np.where(w > 0)[0]
        best = min(_objective(((y[j] - y[i]) / (x[j] - x[i])) * (x - x[i]) + y[i] - y, w, trunc)
                   for i in live for j in range(n) if x[j] != x[i])
        assert _objective(s * x + t - y, w, trunc) == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_points_scale_z_shift_is_optimal_against_brute_force():
    rng = np.random.default_rng(5)
    for it in range(24):
        n = int(rng.integers(3, 9))
        pred = rng.normal(size=(n, 3)) + [0, 0, 3]
        gt = pred * 1.4 + rng.normal(size=(n, 3)) * 0.3
        w = rng.uniform(0.2, 1.5, n) * (rng.uniform(size=n) > 0.1)
        if it % 3 == 0:
            trunc = float(rng.uniform(0.1, 1.0))
            s, tz = align_points_scale_z_shift(pred, gt, w, trunc)
        elif it % 3 == 1:                                           # one truncation per point
            t_pt = rng.uniform(0.1, 1.0, n)
            s, tz = align_points_scale_z_shift(torch.tensor(pred), torch.tensor(gt), torch.tensor(w),
                                               torch.tensor(t_pt))
            s, tz, trunc = s.item(), tz.item(), np.repeat(t_pt, 3)
        else:
            trunc = None
            s, tz = align_points_scale_z_shift(pred, gt, w)
        w3 = np.repeat(w, 3)

        def obj(scale, shift, pred=pred, gt=gt, w3=w3, trunc=trunc):
            return _objective((scale * pred + [0, 0, shift] - gt).ravel(), w3, trunc)

        best = np.inf
        for k in np.flatnonzero(w):                                 # anchor k fits exactly in z
            xs = (pred - [0, 0, pred[k, 2]]).ravel()
            ys = (gt - [0, 0, gt[k, 2]]).ravel()
            for j in np.flatnonzero(xs):
                sc = ys[j] / xs[j]
                best = min(best, obj(sc, gt[k, 2] - sc * pred[k, 2]))
        assert obj(s, tz) == pytest.approx(best, rel=1e-9)


def test_batch_matches_single_and_keeps_dtype_device():
    rng = np.random.default_rng(6)
    preds, gts, ws = [], [], []
    for _ in range(4):
        p, g = _points_case(rng, 64, rng.uniform(0.5, 2), (0, 0, rng.uniform(-1, 1)), 20, z_only=True)
        preds.append(p)
        gts.append(g)
        ws.append((rng.uniform(size=64) > 0.3).astype(np.float64))
    P, G, W = (torch.tensor(np.stack(v), dtype=torch.float32) for v in (preds, gts, ws))
    s, tz = align_points_scale_z_shift(P, G, W, trunc=0.3)
    assert s.shape == (4,) and s.dtype == torch.float32
    s2, t2 = align_points_scale_xyz_shift(P.reshape(2, 2, 64, 3), G.reshape(2, 2, 64, 3), W.reshape(2, 2, 64), 0.3)
    assert s2.shape == (2, 2) and t2.shape == (2, 2, 3)
    for b in range(4):
        sb, tb = align_points_scale_z_shift(P[b], G[b], W[b], trunc=0.3)
        assert sb.item() == pytest.approx(s[b].item(), rel=1e-6) and tb.item() == pytest.approx(tz[b].item(), rel=1e-5)
        sb2, tb2 = align_points_scale_xyz_shift(P[b], G[b], W[b], 0.3)
        assert sb2.item() == pytest.approx(s2.reshape(4)[b].item(), rel=1e-6)
        np.testing.assert_allclose(tb2.numpy(), t2.reshape(4, 3)[b].numpy(), rtol=1e-5, atol=1e-6)
    d_s, d_t = align_depth_affine(P[..., 2], G[..., 2], W, trunc=0.3)
    for b in range(4):
        sb, tb = align_depth_affine(P[b, :, 2], G[b, :, 2], W[b], trunc=0.3)
        assert sb.item() == pytest.approx(d_s[b].item(), rel=1e-6)


def test_gradients_flow_through_the_chosen_samples():
    rng = np.random.default_rng(7)
    p, g = _points_case(rng, 48, 0.8, (0, 0, 0.5), 10, z_only=True)
    P = torch.tensor(p, requires_grad=True)
    G = torch.tensor(g)
    s, tz = align_points_scale_z_shift(P, G, torch.ones(48), trunc=0.5)
    (s + tz).backward()
    assert P.grad is not None and torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0
    assert (P.grad.abs().sum(-1) > 0).sum() <= 2                     # only the two defining samples get gradient
    for fn in (align_points_scale_xyz_shift, align_points_scale):
        P.grad = None
        out = fn(P, G, torch.ones(48), 0.5)
        (out[0] + out[1].sum() if isinstance(out, tuple) else out).backward()
        assert torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0
    x = torch.tensor(p[:, 2], requires_grad=True)
    s, t = align_affine_lstsq(x, torch.tensor(g[:, 2]))
    (s + t).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_affine_lstsq_matches_weighted_polyfit():
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 5, 50)
    y = 3 * x - 1 + rng.normal(size=50)
    w = rng.uniform(0.1, 2, 50)
    s, t = align_affine_lstsq(x, y, w)
    ps, pt = np.polyfit(x, y, 1, w=np.sqrt(w))
    assert s == pytest.approx(ps, rel=1e-9) and t == pytest.approx(pt, rel=1e-9)
    s0, t0 = align_affine_lstsq(x, 2 * x + 5)
    assert (s0, t0) == (pytest.approx(2.0), pytest.approx(5.0))


def _nearest_resize_reference(x, mask, size):
    """Per target pixel: the valid source pixel nearest its centre among those whose centre lies in its cell.

    Returns (values, mask, ties) where ties[ti, tj] lists every equidistant nearest source pixel.
    """
    H, W = mask.shape
    h, w = size
    fh, fw = H / h, W / w
    eps = np.finfo(np.float32).eps * max(H, W)
    out = np.zeros((h, w) + x.shape[2:])
    out_mask = np.zeros((h, w), dtype=bool)
    ties = {}
    for ti in range(h):
        for tj in range(w):
            cands = []
            for i in range(H):
                di = (i + 0.5) - (ti + 0.5) * fh
                if not (-fh / 2 + eps < di <= fh / 2 + eps):
                    continue
                for j in range(W):
                    dj = (j + 0.5) - (tj + 0.5) * fw
                    if mask[i, j] and -fw / 2 + eps < dj <= fw / 2 + eps:
                        cands.append((di * di + dj * dj, i, j))
            if cands:
                best = min(c[0] for c in cands)
                ties[ti, tj] = [(i, j) for d, i, j in cands if d <= best + 1e-9]
                out[ti, tj] = x[ties[ti, tj][0]]
                out_mask[ti, tj] = True
    return out, out_mask, ties


@pytest.mark.parametrize('shape', [(10, 13, 4, 5), (7, 9, 7, 9), (5, 6, 8, 11), (48, 64, 12, 16), (20, 30, 48, 48),
                                   (20, 24, 5, 4)])
def test_masked_nearest_resize_matches_reference(shape):
    H, W, h, w = shape
    rng = np.random.default_rng(H * W)
    x = rng.normal(size=(H, W, 3))
    mask = rng.uniform(size=(H, W)) > 0.4
    small, small_mask = masked_nearest_resize(x, mask, (h, w))
    ref, ref_mask, ties = _nearest_resize_reference(x, mask, (h, w))
    np.testing.assert_array_equal(small_mask, ref_mask)
    for (ti, tj), cands in ties.items():                            # exact ties may pick any equidistant pixel
        assert any(np.array_equal(small[ti, tj], x[c]) for c in cands), (ti, tj)
    if all(len(c) == 1 for c in ties.values()):
        np.testing.assert_array_equal(small, ref)


def test_masked_nearest_resize_batched_shared_and_differentiable():
    rng = np.random.default_rng(9)
    pts = torch.tensor(rng.normal(size=(2, 24, 32, 3)), requires_grad=True)
    depth = pts[..., 2].detach()
    mask = torch.tensor(rng.uniform(size=(2, 24, 32)) > 0.3)
    uv = torch.rand(24, 32, 2)                                      # one map shared by the batch
    (p_s, d_s, uv_s), m_s = masked_nearest_resize((pts, depth, uv), mask, (8, 8))
    assert p_s.shape == (2, 8, 8, 3) and d_s.shape == (2, 8, 8) and uv_s.shape == (2, 8, 8, 2)
    torch.testing.assert_close(p_s[..., 2], d_s)
    for b in range(2):
        ref, ref_mask, _ = _nearest_resize_reference(pts[b].detach().numpy(), mask[b].numpy(), (8, 8))
        np.testing.assert_array_equal(m_s[b].numpy(), ref_mask)
        np.testing.assert_allclose(p_s[b].detach().numpy(), ref)
    p_s.sum().backward()
    assert pts.grad.sum().item() == pytest.approx(3 * m_s.sum().item())
    full, full_mask = masked_nearest_resize(rng.normal(size=(16, 16)), None, (4, 4))
    assert full_mask.all() and full.shape == (4, 4)


def test_numpy_entry_points_return_numpy():
    x = np.linspace(1, 2, 10)
    assert isinstance(align_scale(x, 2 * x, np.ones(10)), float)
    s, t = align_depth_affine(np.stack([x, x]), np.stack([2 * x + 1, 3 * x]), np.ones((2, 10)))
    assert isinstance(s, np.ndarray) and s.shape == (2,)
    np.testing.assert_allclose(s, [2, 3])
    np.testing.assert_allclose(t, [1, 0], atol=1e-12)


def test_empty_inputs_give_zeros_not_errors():
    assert torch.equal(align_scale(torch.zeros(3, 0), torch.zeros(3, 0), torch.zeros(3, 0)), torch.zeros(3))
    s, tz = align_points_scale_z_shift(torch.zeros(2, 0, 3), torch.zeros(2, 0, 3), torch.zeros(2, 0))
    assert s.shape == tz.shape == (2,) and not s.any()
    s, t = align_points_scale_xyz_shift(torch.zeros(0, 5, 3), torch.zeros(0, 5, 3), torch.zeros(0, 5))
    assert s.shape == (0,) and t.shape == (0, 3)
    s, t = align_depth_affine(torch.ones(2, 0), torch.ones(2, 0), torch.zeros(2, 0))
    assert s.shape == (2,) and not s.any()
