"""`MoGeModel.infer` on a hand-built affine point map: known focal, shift and metric scale are recovered."""
from __future__ import annotations

import math

import pytest
import torch

from mgeo_ros.geometry.uv import normalized_view_plane_uv_torch
from mgeo_ros.model import build_model, preset

H, W = 48, 64
FOCAL, SHIFT, SCALE = 1.3, 0.7, 1.5     # focal in half-diagonal units


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_model(preset('tiny')).eval()


def _scene():
    """True camera points of a tilted plane, the affine/scaled map MoGe would predict for it, and a mask."""
    uv = normalized_view_plane_uv_torch(W, H)
    u, v = uv[..., 0], uv[..., 1]
    z = 2.0 + 0.8 * v - 0.5 * u
    true = torch.stack([u / FOCAL * z, v / FOCAL * z, z], dim=-1)
    pred = true / SCALE
    pred[..., 2] -= SHIFT
    mask = torch.full((H, W), 0.9)
    mask[:10, :20] = 0.2
    normal = torch.nn.functional.normalize(torch.tensor([0.5, -0.8, -1.0]), dim=0).expand(H, W, 3)
    return true, pred, mask, normal


def _fake_forward(monkeypatch, model, calls):
    _, pred, mask, normal = _scene()

    def forward(image, num_tokens=1200):
        calls.append(num_tokens)
        b = image.shape[0]
        return {'points': pred.expand(b, H, W, 3).clone(), 'mask': mask.expand(b, H, W).clone(),
                'normal': normal.expand(b, H, W, 3).clone(), 'metric_scale': torch.full((b,), SCALE)}
    monkeypatch.setattr(model, 'forward', forward)


def _expected_k():
    a = W / H
    fx, fy = FOCAL / 2 * math.sqrt(1 + a * a) / a, FOCAL / 2 * math.sqrt(1 + a * a)
    return torch.tensor([[fx, 0, 0.5], [0, fy, 0.5], [0, 0, 1.0]])


@pytest.mark.parametrize('known_fov', [False, True])
def test_infer_recovers_camera(model, monkeypatch, known_fov):
    calls = []
    _fake_forward(monkeypatch, model, calls)
    true, _, mask, _ = _scene()
    fov_x = None
    if known_fov:
        a = W / H
        fov_x = math.degrees(2 * math.atan(a / math.sqrt(1 + a * a) / FOCAL))
    out = model.infer(torch.rand(3, H, W), num_tokens=500, fov_x=fov_x)
    assert calls == [500]
    assert set(out) == {'points', 'depth', 'mask', 'intrinsics', 'normal'}
    torch.testing.assert_close(out['intrinsics'], _expected_k(), rtol=1e-3, atol=1e-4)
    valid = mask > 0.5
    assert torch.equal(out['mask'], valid) and out['mask'].dtype == torch.bool
    torch.testing.assert_close(out['depth'][valid], true[..., 2][valid], rtol=2e-3, atol=0)
    torch.testing.assert_close(out['points'][valid], true[valid], rtol=2e-3, atol=2e-3)
    assert torch.isinf(out['depth'][~valid]).all() and torch.isinf(out['points'][~valid]).all()
    assert (out['normal'][~valid] == 0).all() and (out['normal'][valid].norm(dim=-1) > 0.99).all()


def test_infer_resolution_level_and_batch(model, monkeypatch):
    calls = []
    _fake_forward(monkeypatch, model, calls)
    lo, hi = model.num_tokens_range
    out = model.infer(torch.rand(2, 3, H, W), num_tokens=None, resolution_level=0)
    out = model.infer(torch.rand(2, 3, H, W), num_tokens=None, resolution_level=9)
    assert calls == [lo, hi]
    assert out['depth'].shape == (2, H, W) and out['intrinsics'].shape == (2, 3, 3)


def test_infer_without_mask_application(model, monkeypatch):
    _fake_forward(monkeypatch, model, [])
    true, _, _, _ = _scene()
    out = model.infer(torch.rand(3, H, W), num_tokens=300, apply_mask=False)
    assert torch.isfinite(out['depth']).all()
    torch.testing.assert_close(out['depth'], true[..., 2], rtol=2e-3, atol=0)


def test_infer_real_network(model):
    out = model.infer(torch.rand(3, 40, 56), num_tokens=200)
    assert out['points'].shape == (40, 56, 3) and out['intrinsics'].shape == (3, 3)
    inside = out['mask']
    assert torch.isfinite(out['depth'][inside]).all() and (out['depth'][inside] > 0).all()
    assert torch.isinf(out['depth'][~inside]).all()
