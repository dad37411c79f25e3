"""MoGe-2 forward: token grid, output shapes/ranges, official key layout, hand-derived head invariants, modes."""
from __future__ import annotations

import math

import pytest
import torch

from mgeo_ros.geometry.uv import normalized_view_plane_uv_torch
from mgeo_ros.model import MoGeModel, build_model, preset
from mgeo_ros.model.vit import grid_from_tokens


@pytest.fixture(scope='module')
def tiny() -> MoGeModel:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_model(preset('tiny')).eval()


def _capture_input(model: MoGeModel, module: torch.nn.Module):
    seen = {}

    def hook(_module, args):
        seen['shape'] = tuple(args[0].shape) if isinstance(args[0], torch.Tensor) else args[0]
        seen['args'] = args
    return seen, module.register_forward_pre_hook(hook)


@pytest.mark.parametrize('h,w,n', [(48, 64, 300), (64, 48, 300), (120, 160, 1200), (40, 120, 500), (97, 61, 777)])
def test_token_grid_and_shapes(tiny, h, w, n):
    rows, cols = grid_from_tokens(h, w, n)
    assert rows == round(math.sqrt(n * h / w)) and cols == round(math.sqrt(n * w / h))
    seen, handle = _capture_input(tiny, tiny.encoder.backbone.patch_embed)
    try:
        with torch.no_grad():
            out = tiny(torch.rand(1, 3, h, w), num_tokens=n)
    finally:
        handle.remove()
    assert seen['shape'] == (1, 3, 14 * rows, 14 * cols)
    assert out['points'].shape == (1, h, w, 3)
    assert out['normal'].shape == (1, h, w, 3)
    assert out['mask'].shape == (1, h, w)
    assert out['metric_scale'].shape == (1,)
    assert torch.all(out['points'][..., 2] > 0)          # exp remap
    assert torch.all((out['mask'] >= 0) & (out['mask'] <= 1))
    torch.testing.assert_close(out['normal'].norm(dim=-1), torch.ones(1, h, w), atol=1e-5, rtol=0)
    assert torch.all(out['metric_scale'] > 0)


@pytest.mark.colcon
def test_reference_grids():
    # grids verified on the reference implementation (note moge2_reference.md §3.1): round, not floor
    assert grid_from_tokens(480, 640, 3600) == (52, 69)
    assert grid_from_tokens(480, 640, 1200) == (30, 40)
    rows, cols = grid_from_tokens(480, 640, torch.tensor(3600))
    assert (int(rows), int(cols)) == (52, 69)


def test_uv_conditioning_uses_original_aspect(tiny):
    h, w, n = 50, 90, 400   # token grid aspect differs from 90/50
    rows, cols = grid_from_tokens(h, w, n)
    seen, handle = _capture_input(tiny, tiny.neck)
    try:
        with torch.no_grad():
            tiny(torch.rand(1, 3, h, w), num_tokens=n)
    finally:
        handle.remove()
    levels = seen['args'][0]
    for level in range(1, 5):
        expected = normalized_view_plane_uv_torch(cols * 2 ** level, rows * 2 ** level, aspect_ratio=w / h)
        torch.testing.assert_close(levels[level][0], expected.permute(2, 0, 1))
    assert levels[0].shape == (1, 64 + 2, rows, cols)


def test_head_post_processing_invariants():
    """Zero the last convs: outputs become constants whose values follow from exp/sigmoid/normalize/exp alone."""
    torch.manual_seed(1)
    model = build_model(preset('tiny')).eval()
    a, b, c = 0.3, -0.2, 0.7
    with torch.no_grad():
        for head, bias in (('points_head', [a, b, c]), ('normal_head', [1.0, 2.0, -2.0]), ('mask_head', [0.4])):
            conv = getattr(model, head).output_blocks[-1]
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor(bias))
        model.scale_head[-1].weight.zero_()
        model.scale_head[-1].bias.fill_(math.log(2.5))
        out = model(torch.rand(1, 3, 40, 56), num_tokens=200)
    z = math.exp(c)
    torch.testing.assert_close(out['points'], torch.tensor([a * z, b * z, z]).expand(1, 40, 56, 3))
    torch.testing.assert_close(out['normal'], torch.tensor([1 / 3, 2 / 3, -2 / 3]).expand(1, 40, 56, 3))
    torch.testing.assert_close(out['mask'], torch.full((1, 40, 56), 1 / (1 + math.exp(-0.4))))
    torch.testing.assert_close(out['metric_scale'], torch.tensor([2.5]))


def test_official_vits_layout():
    """The vits reconstruction has the parameter count and tensor count of the released moge-2-vits-normal."""
    with torch.device('meta'):
        model = MoGeModel(**preset('vits'))
    sd = model.state_dict()
    assert len(sd) == 337
    assert sum(p.numel() for p in model.parameters()) == 35_103_656
    expect = {
        'encoder.image_mean': (1, 3, 1, 1),
        'encoder.backbone.pos_embed': (1, 1370, 384),
        'encoder.backbone.mask_token': (1, 384),
        'encoder.backbone.patch_embed.proj.weight': (384, 3, 14, 14),
        'encoder.backbone.blocks.11.attn.qkv.weight': (1152, 384),
        'encoder.backbone.blocks.11.ls2.gamma': (384,),
        'encoder.backbone.blocks.11.mlp.fc1.weight': (1536, 384),
        'encoder.output_projections.1.weight': (384, 384, 1, 1),
        'neck.input_blocks.0.weight': (384, 386, 1, 1),
        'neck.resamplers.0.0.weight': (384, 256, 2, 2),
        'neck.resamplers.3.1.weight': (32, 64, 3, 3),
        'neck.res_blocks.1.0.layers.2.weight': (256, 256, 3, 3),
        'points_head.output_blocks.4.weight': (3, 32, 1, 1),
        'mask_head.output_blocks.4.weight': (1, 32, 1, 1),
        'normal_head.res_blocks.3.0.layers.5.bias': (64,),
        'scale_head.4.weight': (1, 384),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith('encoder.backbone.register_tokens') for k in sd)


def test_presets_sizes():
    counts = {}
    for name in ('tiny', 'small'):
        with torch.device('meta'):
            counts[name] = sum(p.numel() for p in MoGeModel(**preset(name)).parameters())
    assert counts['tiny'] <= 1_000_000
    assert counts['small'] <= 12_000_000
    assert 'normal_head' in preset('small') and 'normal_head' in preset('tiny')


def test_register_backbone_builds():
    cfg = preset('tiny')
    cfg['encoder']['backbone'] = dict(cfg['encoder']['backbone'], num_register_tokens=4)
    model = build_model(cfg).eval()
    assert model.encoder.backbone.register_tokens.shape == (1, 4, 64)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 48), num_tokens=120)
    assert out['points'].shape == (1, 32, 48, 3)


def test_onnx_mode_close_to_default(tiny):
    img = torch.rand(1, 3, 90, 120)
    outs = []
    for mode in (False, True):
        tiny.onnx_compatible_mode = mode
        with torch.no_grad():
            outs.append(tiny(img, num_tokens=300))
    tiny.onnx_compatible_mode = False
    diff = (outs[0]['points'] - outs[1]['points']).norm() / outs[0]['points'].norm()
    assert 0 < diff < 1e-2       # the modes differ (antialias, pos-embed resize) but only slightly


def test_modes_identical_without_resizing():
    """At the table's own grid (here 8x8 from a 112x112 image; 37x37 at 518 px for DINOv2) neither the input nor the
    positional table is resampled, so both modes agree."""
    cfg = preset('tiny')
    cfg['encoder']['backbone']['pos_grid'] = 8
    model = build_model(cfg).eval()
    img = torch.rand(1, 3, 112, 112)
    outs = []
    for mode in (False, True):
        model.onnx_compatible_mode = mode
        with torch.no_grad():
            outs.append(model(img, num_tokens=64))
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key], outs[1][key], atol=1e-5, rtol=1e-5)


def test_bad_input_shape(tiny):
    with pytest.raises(ValueError, match='image'):
        tiny(torch.rand(3, 32, 32))
