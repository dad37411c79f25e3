"""MoGe-3 checkpoints: recognised by their config, loaded (with or without refiner tensors) as the base network with
the `exp` remap, `refine_steps` accepted with a once-only log, and the base path through export and the node path."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from mgeo_ros.model import build_model, load_checkpoint, preset, save_checkpoint
from mgeo_ros.model.moge2 import model_family


def v3_config(with_refiner_config: bool) -> dict:
    """The tiny preset as the authors' MoGe-3 would write it: no `remap_output`, maybe the refiner's settings."""
    config = {k: v for k, v in preset('tiny').items() if k != 'remap_output'}
    if with_refiner_config:
        config['refiner'] = {'in_channels': 3, 'model_channels': 8, 'num_blocks': 2}
        config['refiner_depth_resolution'] = 256
    return config


@pytest.fixture(scope='module')
def weights():
    torch.manual_seed(5)
    torch.set_num_threads(1)
    m = build_model(preset('tiny')).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return dict(m.state_dict())


def fake_refiner_tensors() -> dict[str, torch.Tensor]:
    return {'refiner.input_layer.weight': torch.randn(8, 3), 'refiner.blocks.0.conv.weight': torch.randn(8, 8, 27),
            'refiner.out_layer.bias': torch.zeros(1)}


def write_v3(tmp_path, weights, refiner_config: bool, refiner_tensors: bool):
    state = dict(weights)
    if refiner_tensors:
        state.update(fake_refiner_tensors())
    path = tmp_path / f'moge3_{int(refiner_config)}{int(refiner_tensors)}.pt'
    torch.save({'model_config': v3_config(refiner_config), 'model': state}, path)
    return path


def test_family_from_config():
    assert model_family(preset('tiny')) == 'moge-2'
    assert model_family(v3_config(False)) == 'moge-3'
    assert model_family({**preset('tiny'), 'refiner_depth_resolution': 256}) == 'moge-3'


@pytest.mark.parametrize('refiner_config,refiner_tensors', [(True, True), (True, False), (False, False)])
def test_v3_loads_as_base_path_with_exp_remap(tmp_path, weights, caplog, refiner_config, refiner_tensors):
    path = write_v3(tmp_path, weights, refiner_config, refiner_tensors)
    with caplog.at_level(logging.INFO, logger='mgeo_ros.model'):
        model = load_checkpoint(path)
    assert model.family == 'moge-3' and model.remap_output == 'exp'
    line = next(r.getMessage() for r in caplog.records if 'MoGe-3' in r.getMessage())
    assert 'base path' in line
    assert ('3 refiner tensors set aside' in line) == refiner_tensors

    image = torch.rand(1, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    exp_ref = build_model(preset('tiny')).eval()  # MoGe-2 structure, `exp` remap
    exp_ref.load_state_dict(weights)
    linear = build_model({**preset('tiny'), 'remap_output': 'linear'}).eval()
    linear.load_state_dict(weights)
    with torch.no_grad():
        got, want, lin = (m(image, 20)['points'] for m in (model, exp_ref, linear))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (got - lin).abs().max() > 0.1 * lin.abs().max()  # the linear remap would be clearly wrong


def test_refine_steps_logged_once_and_base_path(tmp_path, weights, caplog):
    model = load_checkpoint(write_v3(tmp_path, weights, True, True))
    image = torch.rand(1, 3, 42, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger='mgeo_ros.model'):
        base = model(image, 12)
        refined = model(image, 12, refine_steps=3)
        model.infer(image[0], 12, refine_steps=3)
    skipped = [r.getMessage() for r in caplog.records if 'refiner skipped' in r.getMessage()]
    assert len(skipped) == 1 and 'FlexGEMM' in skipped[0]
    torch.testing.assert_close(base['points'], refined['points'], rtol=0, atol=0)


def test_v3_round_trips_through_the_project_format(tmp_path, weights):
    model = load_checkpoint(write_v3(tmp_path, weights, True, True))
    out = save_checkpoint(model, tmp_path / 'ckpt')
    config = json.loads((out / 'config.json').read_text())
    assert 'remap_output' not in config and config['refiner_depth_resolution'] == 256
    again = load_checkpoint(out)
    assert again.family == 'moge-3'
    image = torch.rand(1, 3, 42, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(image, 12)['points'], again(image, 12)['points'], rtol=0, atol=0)


def test_v3_exports_base_path(tmp_path, weights):
    """The base path goes through the project's export (parity against PyTorch inside) and ONNX Runtime."""
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.runtime.engine_cache import build_engine, read_sidecar
    from mgeo_ros.runtime.model_info import describe_model

    source = str(write_v3(tmp_path, weights, True, True))
    report = export_onnx(source, str(tmp_path / 'v3.onnx'), (112, 84), num_tokens=48, parity=True)
    assert report.parity['points']['rel_l2'] < 1e-4
    assert describe_model(tmp_path / 'v3.onnx').origin == 'project export, MoGe-3'
    # dynamic FP16 (parity inside, FP16 budgets) -> a strongly typed FP16 engine with its probe
    half = str(tmp_path / 'v3_dynamic_fp16.onnx')
    export_onnx(source, half, (112, 84), num_tokens=48, precision='fp16', dynamic=True)
    engine = str(tmp_path / 'v3_dynamic_fp16.engine')
    build_engine(half, engine, trt_module='tensorrt_rtx_bindings', compute_capability='SM89', progress=False,
                 num_tokens=48)
    side = read_sidecar(engine)
    assert side['effective_precision'] == 'fp16' and side['probe'] and side['key']['profile']['num_tokens'] == 48
    assert 'MoGe-3' in describe_model(engine).origin


def test_v3_fine_tunes_and_stays_v3(tmp_path, weights):
    """`mgeo train --init` on a MoGe-3 file (with refiner tensors): the base network trains, the result reloads as
    MoGe-3 (base path)."""
    import os

    from mgeo_ros.train.config import load_config, parse_override
    from mgeo_ros.train.trainer import Trainer

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tiny = os.path.join(repo, 'config', 'train', 'tiny.yaml')
    fast = dict(parse_override(t) for t in ('batch_size=2', 'eval_count=0', 'progress=false', 'tensorboard=false',
                                            'loss.max_anchors=8', 'loss.global_resolution=12',
                                            'datasets.0.pool_size=4', 'max_minutes=null'))
    cfg = load_config(tiny, dict(fast, out=str(tmp_path / 'ft'), max_steps=1,
                                 init_checkpoint=str(write_v3(tmp_path, weights, True, True))))
    summary = Trainer(cfg).run()
    tuned = load_checkpoint(summary['checkpoint'])
    assert tuned.family == 'moge-3' and tuned.remap_output == 'exp'


def test_v3_on_the_torch_backend(tmp_path, weights):
    """The node's torch path (Predictor) runs a MoGe-3 .pt as its base path, like the same weights as MoGe-2 `exp`."""
    import numpy as np

    from mgeo_ros.model.checkpoint import save_official
    from mgeo_ros.runtime import Predictor

    v2 = build_model(preset('tiny')).eval()
    v2.load_state_dict(weights)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    a = Predictor(str(write_v3(tmp_path, weights, True, True)), backend='torch', num_tokens=48).predict(rgb)
    b = Predictor(str(save_official(v2, tmp_path / 'v2.pt')), backend='torch', num_tokens=48).predict(rgb)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.depth[a.mask], b.depth[b.mask], rtol=1e-6)
