"""Known-answer tests of the MoGe-2 training losses."""
import math

import pytest
import torch

from mgeo_ros.train import losses as L

torch.set_num_threads(1)


def _scene(b=2, h=36, w=48, seed=0):
    """Smooth gt point maps (tilted planes with a bump), focal relative to the diagonal, full mask."""
    g = torch.Generator().manual_seed(seed)
    fx = 0.9 * w
    fy = fx
    u = (torch.arange(w) - (w - 1) / 2) / fx
    v = (torch.arange(h) - (h - 1) / 2) / fy
    vv, uu = torch.meshgrid(v, u, indexing='ij')
    zs = []
    for _ in range(b):
        a = torch.rand(3, generator=g)
        z = 2.0 + a[0] * 2 + a[1] * uu * 3 + a[2] * vv * 2 + 0.3 * torch.exp(-(uu ** 2 + vv ** 2) * 20)
        zs.append(z)
    z = torch.stack(zs)
    gt = torch.stack([uu * z, vv * z, z], dim=-1)
    focal = torch.full((b,), 1.0 / math.sqrt((w / fx) ** 2 + (h / fy) ** 2))
    return gt, torch.ones(b, h, w, dtype=torch.bool), focal


def _affine(gt, s, tz):
    shift = torch.stack([torch.zeros_like(tz), torch.zeros_like(tz), tz], -1).view(-1, 1, 1, 3)
    return (gt - shift) / s.view(-1, 1, 1, 1)


def test_smooth_l1_known_values():
    e = torch.tensor([0.0, 1.0, 3.0])
    assert torch.allclose(L.smooth_l1(e, 2.0), torch.tensor([0.0, 0.25, 2.0]))
    assert torch.equal(L.smooth_l1(e, 0.0), e)


def test_global_loss_recovers_scale_and_is_zero_for_affine_prediction():
    gt, mask, _ = _scene()
    s, tz = torch.tensor([0.5, 2.0]), torch.tensor([0.3, -0.7])
    pred = _affine(gt, s, tz).requires_grad_(True)
    loss, scale, valid = L.affine_invariant_global_loss(pred, gt, mask, align_resolution=16, max_anchors=16)
    assert valid.all()
    assert torch.allclose(scale, s, rtol=1e-4)
    assert loss.max() < 1e-4
    noisy = pred.detach() + 0.05 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(1))
    loss_noisy, _, _ = L.affine_invariant_global_loss(noisy, gt, mask, align_resolution=16, max_anchors=16)
    assert (loss_noisy > 100 * loss.detach()).all() and (loss_noisy > 1e-3).all()
    # gradient flows through the differentiable re-solve of the scale/shift
    loss_n, _, _ = L.affine_invariant_global_loss(noisy.requires_grad_(True), gt, mask, 16, max_anchors=16)
    loss_n.sum().backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0


def test_global_loss_weights_near_pixels_more():
    """An error of the same size costs more near the camera (per-pixel weight 1/z)."""
    gt, mask, _ = _scene(b=1)
    z = gt[..., 2]
    near, far = torch.zeros_like(mask), torch.zeros_like(mask)
    near[z <= z.quantile(0.1)] = True
    far[z >= z.quantile(0.9)] = True
    costs = []
    for region in (near, far):
        pred = gt.clone()
        pred[..., 0] = pred[..., 0] + 0.05 * region
        loss, scale, _ = L.affine_invariant_global_loss(pred, gt, mask, 16, max_anchors=32)
        assert torch.allclose(scale, torch.ones(1), atol=1e-3)
        costs.append(float(loss))
    assert costs[0] > 1.5 * costs[1]


def test_global_loss_ignores_masked_pixels():
    gt, mask, _ = _scene(b=1)
    pred = gt.clone()
    mask[:, :, :10] = False
    pred[:, :, :10] = 100.0
    loss, scale, valid = L.affine_invariant_global_loss(pred, gt, mask, 16, max_anchors=16)
    assert valid.all() and float(loss) < 1e-5 and abs(float(scale) - 1) < 1e-4


@pytest.mark.parametrize('level', [4, 16])
def test_local_loss_zero_for_affine_and_positive_for_local_distortion(level):
    gt, mask, focal = _scene(b=1, h=48, w=64)
    pred = _affine(gt, torch.tensor([2.0]), torch.tensor([0.5]))
    loss, kept = L.affine_invariant_local_loss(pred, gt, mask, focal, torch.tensor([0.5]), level, num_patches=8,
                                               max_anchors=8, generator=torch.Generator().manual_seed(0))
    assert int(kept) > 0
    assert float(loss) < 1e-4
    bumpy = pred.clone()
    bumpy[..., 2] = bumpy[..., 2] * (1 + 0.2 * torch.sin(torch.arange(64) * 1.3))
    loss_b, kept_b = L.affine_invariant_local_loss(bumpy, gt, mask, focal, torch.tensor([0.5]), level,
                                                   num_patches=8, max_anchors=8,
                                                   generator=torch.Generator().manual_seed(0))
    assert int(kept_b) > 0 and float(loss_b) > 1e-3


def test_local_loss_rejects_patches_with_implausible_scale():
    gt, mask, focal = _scene(b=1, h=48, w=64)
    pred = _affine(gt, torch.tensor([2.0]), torch.tensor([0.0]))
    # the global scale claims 50 (true local scale 0.5): ratio 0.01 < 0.1 -> every patch dropped
    loss, kept = L.affine_invariant_local_loss(pred, gt, mask, focal, torch.tensor([50.0]), 4, num_patches=4,
                                               max_anchors=8)
    assert int(kept) == 0 and float(loss) == 0.0


def test_local_loss_skips_level_too_fine_for_small_image():
    gt, mask, focal = _scene(b=1, h=24, w=32)
    pred = gt.clone().requires_grad_(True)
    loss, kept = L.affine_invariant_local_loss(pred, gt, mask, focal, torch.ones(1), 64)
    assert int(kept) == 0 and float(loss.detach()) == 0.0
    loss.sum().backward()  # still part of the graph


def test_edge_loss_known_angles():
    h, w = 6, 7
    jj, ii = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing='xy')
    gt = torch.stack([jj, ii, torch.full_like(jj, 5.0)], -1)[None]
    mask = torch.ones(1, h, w, dtype=torch.bool)
    # same directions at another scale/shift: every angle clamps to 0.1 deg
    same = L.edge_loss(gt * 3 + 1, gt, mask)
    lo, beta = math.radians(0.1), math.radians(3.0)
    assert float(same) == pytest.approx(0.5 * lo ** 2 / beta, rel=1e-3)
    # horizontal differences rotated by 90 deg, vertical ones unchanged
    pred = torch.stack([torch.zeros_like(jj), ii + jj, torch.full_like(jj, 5.0)], -1)[None]
    mixed = L.edge_loss(pred, gt, mask)
    # vertical diffs: pred (0,1,0) vs gt (0,1,0): 0.1 deg; horizontal: (0,1,0) vs (1,0,0): 90 deg
    expected = 0.5 * ((math.radians(90) - 0.5 * beta) + 0.5 * lo ** 2 / beta)
    assert float(mixed) == pytest.approx(expected, rel=1e-3)


def test_normal_angle_loss_known_angle():
    n_gt = torch.tensor([0.0, 0.0, -1.0]).expand(1, 4, 4, 3)
    angle = math.radians(30)
    n_pred = torch.tensor([math.sin(angle), 0.0, -math.cos(angle)]).expand(1, 4, 4, 3)
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    assert float(L.normal_angle_loss(n_pred, n_gt, mask)) == pytest.approx(angle ** 2, rel=1e-4)


def test_gt_normals_of_a_wall_point_to_the_camera():
    gt, mask, _ = _scene(b=1)
    wall = gt.clone()
    wall[..., 2] = 4.0
    wall[..., 0] = gt[..., 0] / gt[..., 2] * 4.0
    wall[..., 1] = gt[..., 1] / gt[..., 2] * 4.0
    n, valid = L.gt_normals(wall, mask)
    assert valid[0, 1:-1, 1:-1].all() and not valid[0, 0].any()
    assert torch.allclose(n[valid], torch.tensor([0.0, 0.0, -1.0]).expand(int(valid.sum()), 3), atol=1e-5)


def test_mask_bce_known_values():
    p = torch.full((1, 2, 2), 0.5)
    y = torch.tensor([[[True, False], [True, True]]])
    assert float(L.mask_bce_loss(p, y)) == pytest.approx(math.log(2), rel=1e-5)
    p2 = torch.tensor([[[0.9, 0.2], [0.9, 0.9]]])
    expected = -(3 * math.log(0.9) + math.log(0.8)) / 4
    assert float(L.mask_bce_loss(p2, y)) == pytest.approx(expected, rel=1e-5)
    counted = torch.tensor([[[True, False], [False, False]]])
    assert float(L.mask_bce_loss(p2, y, counted)) == pytest.approx(-math.log(0.9), rel=1e-5)


def test_metric_scale_loss_value_and_decoupling():
    pred = torch.tensor([2.0, 1.0], requires_grad=True)
    aligned = torch.tensor([1.0, 4.0], requires_grad=True)
    loss = L.metric_scale_loss(pred, aligned, torch.tensor([True, False]))
    assert float(loss[0].detach()) == pytest.approx(math.log(2) ** 2, rel=1e-5)
    assert float(loss[1].detach()) == 0.0
    loss.sum().backward()
    assert aligned.grad is None          # s_aligned is detached: geometry gets no gradient from the scale loss
    assert float(pred.grad[0]) == pytest.approx(2 * math.log(2) / 2.0, rel=1e-5)


def test_label_type_weights_and_overrides():
    a, c = L.loss_weights_for('A'), L.loss_weights_for('C', {'global': 2.0})
    assert a['local_64'] == 1.0 and 'local_64' not in L.loss_weights_for('B')
    assert c['global'] == 2.0 and 'edge' not in c and 'local_16' not in c
    with pytest.raises(ValueError):
        L.loss_weights_for('D')


def test_moge_losses_combines_weighted_terms_per_instance():
    gt, mask, focal = _scene(b=2)
    pred = _affine(gt, torch.tensor([0.5, 2.0]), torch.tensor([0.1, 0.2]))
    pred = (pred + 0.02 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    out = {'points': pred, 'mask': torch.full(mask.shape, 0.7), 'metric_scale': torch.tensor([0.5, 1.0])}
    settings = L.AlignmentSettings(global_resolution=16, local_patches={4: 4, 16: 8}, max_anchors=8)
    weights = [L.loss_weights_for('A', {'local_64': 0.0}), L.loss_weights_for('C')]
    res = L.moge_losses(out, gt, mask, focal, weights, torch.tensor([True, True]), settings=settings)
    assert set(res.terms) >= {'global', 'local_4', 'local_16', 'edge', 'mask', 'metric_scale'}
    assert 'local_64' not in res.terms
    assert torch.allclose(res.scale, torch.tensor([0.5, 2.0]), rtol=0.05)
    res.total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # the total is the batch mean of per-instance weighted sums: raising a C-only term weight changes it
    w2 = [weights[0], L.loss_weights_for('C', {'mask': 10.0})]
    res2 = L.moge_losses(out, gt, mask, focal, w2, torch.tensor([True, True]), settings=settings)
    assert float(res2.total.detach()) > float(res.total.detach()) + 0.5 * 9.9 * res.terms['mask'] * 0.9


def test_global_loss_falls_back_when_no_positive_scale_exists():
    gt, mask, _ = _scene(b=1)
    pred = gt.clone()
    pred[..., 2] = 10.0 - gt[..., 2]          # depth order reversed: the best scale is negative
    pred[..., :2] = -pred[..., :2]
    pred.requires_grad_(True)
    loss, scale, valid = L.affine_invariant_global_loss(pred, gt, mask, 16, max_anchors=16)
    assert not valid.any() and float(scale.detach()) > 0 and float(loss.detach()) > 0
    loss.sum().backward()
    assert pred.grad.abs().sum() > 0
