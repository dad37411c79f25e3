"""`mgeo export --dynamic` (one ONNX for several camera sizes, the authors' layout) and `mgeo export --from-onnx`
(the FP16 form of an FP32 MoGe ONNX, such as the authors' release, with its probe and no PyTorch)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from authors_onnx import export_authors_layout

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import BadInputError
from mgeo_ros.export.onnx_export import PARITY_BUDGETS, convert_onnx, export_onnx
from mgeo_ros.model import build_model, preset
from mgeo_ros.runtime.engine_cache import build_engine, onnx_precision, read_sidecar
from mgeo_ros.runtime.model_info import describe_model
from mgeo_ros.runtime.predictor import Predictor
from mgeo_ros.runtime.probe import load_probe

TOKENS = 48


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(11)
    torch.set_num_threads(1)
    return build_model(preset('tiny')).eval()


@pytest.fixture(scope='module')
def dynamic_onnx(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('dyn') / 'tiny_dynamic.onnx')
    report = export_onnx(model, path, (128, 96), num_tokens=TOKENS, dynamic=True)
    assert report.metadata['dynamic'] == '1' and 'num_tokens' not in report.metadata
    assert report.parity['points']['rel_l2'] < PARITY_BUDGETS['fp32'][0]
    return path


def test_dynamic_export_serves_several_sizes_like_fixed_exports(model, dynamic_onnx, tmp_path):
    dyn = Predictor(dynamic_onnx, backend='onnxruntime', num_tokens=TOKENS)
    assert dyn.backend.layout.dynamic
    rng = np.random.default_rng(1)
    for w, h in ((128, 96), (96, 128), (160, 90)):
        fixed_path = str(tmp_path / f'fixed_{w}x{h}.onnx')
        export_onnx(model, fixed_path, (w, h), num_tokens=TOKENS, parity=False, probe=False)
        fixed = Predictor(fixed_path, backend='onnxruntime')
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image = fixed.preprocessor(rgb).copy()
        a = dyn.backend.forward(image, fixed.num_tokens)
        b = fixed.backend.forward(image, fixed.num_tokens)
        np.testing.assert_allclose(a.points, b.points, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.mask, b.mask, rtol=1e-4, atol=1e-5)
    info = describe_model(dynamic_onnx)
    assert info.origin == 'project export (dynamic), MoGe-2' and info.size.startswith('dynamic')


def test_from_onnx_fp16_of_authors_file(model, tmp_path, capsys):
    src = str(export_authors_layout(model, tmp_path / 'authors.onnx', 'torchscript', opset=14))
    out = str(tmp_path / 'authors.fp16.onnx')
    assert mgeo_main(['export', '--from-onnx', src, '--output', out, '--size', '128x96', '--num-tokens',
                      str(TOKENS)]) == 0
    printed = capsys.readouterr().out
    assert 'fp16 graph' in printed and 'parity points' in printed
    assert onnx_precision(out) == 'fp16'
    probe = load_probe(out.replace('.onnx', '.probe.npz'))
    assert probe.meta['num_tokens'] == TOKENS
    assert mgeo_main(['check-engine', out]) == 0 and 'PASS' in capsys.readouterr().out
    # FP16 runs on ONNX Runtime close to the FP32 file, and builds a strongly typed FP16 engine
    rgb = np.random.default_rng(2).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    half = Predictor(out, backend='onnxruntime', num_tokens=TOKENS).backend
    full = Predictor(src, backend='onnxruntime', num_tokens=TOKENS)
    image = full.preprocessor(rgb).copy()
    a, b = half.forward(image, TOKENS), full.backend.forward(image, TOKENS)
    assert np.linalg.norm(a.points - b.points) / np.linalg.norm(b.points) < PARITY_BUDGETS['fp16'][0]
    assert half.precision == 'fp16'
    importlib.import_module('tensorrt_rtx_bindings')
    engine = str(tmp_path / 'authors.fp16.engine')
    build_engine(out, engine, precision='fp16', trt_module='tensorrt_rtx_bindings', compute_capability='SM89',
                 progress=False, num_tokens=TOKENS)
    side = read_sidecar(engine)
    assert side['effective_precision'] == 'fp16' and 'HALF' in side['heavy_layer_types']


def test_from_onnx_refusals(model, dynamic_onnx, tmp_path, capsys):
    half = str(tmp_path / 'half.onnx')
    convert_onnx(dynamic_onnx, half, num_tokens=TOKENS)
    with pytest.raises(BadInputError, match='already a mixed-precision'):
        convert_onnx(half, str(tmp_path / 'again.onnx'))
    assert mgeo_main(['export', 'ckpt', '--from-onnx', dynamic_onnx, '--output', str(tmp_path / 'x.onnx')]) == 1
    assert 'either a checkpoint or --from-onnx' in capsys.readouterr().err
    assert mgeo_main(['export', 'ckpt', '--output', str(tmp_path / 'y.onnx')]) == 1
    assert '--size WxH is required' in capsys.readouterr().err


def test_cameras_of_mixed_sizes_share_one_dynamic_model(dynamic_onnx, model, tmp_path):
    """Two 4:3 and one 2:1 camera on one SharedModel of one dynamic ONNX: each camera gets its own size, and the
    network's answer equals that of a fixed-size export made for that camera."""
    from camera_threads import picture_frames, run_cameras

    from mgeo_ros.runtime.batching import SharedModel

    frames = {'a': picture_frames(1, 128, 96)[0], 'b': picture_frames(2, 128, 96)[1],
              'wide': picture_frames(1, 160, 80)[0]}
    shared = SharedModel(Predictor(dynamic_onnx, backend='onnxruntime', num_tokens=TOKENS))
    try:
        results = run_cameras(shared, frames, target=3)
    finally:
        shared.close()
    for name, rgb in frames.items():
        h, w = rgb.shape[:2]
        fixed_path = str(tmp_path / f'fixed_{name}.onnx')
        export_onnx(model, fixed_path, (w, h), num_tokens=TOKENS, parity=False, probe=False)
        want = Predictor(fixed_path, backend='onnxruntime').predict(rgb)
        got = results[name][-1]
        assert got.depth.shape == (h, w)
        # the network's own outputs (an untrained model's depth is ill-posed: compare what the network gave)
        np.testing.assert_allclose(got.mask_probability, want.mask_probability, rtol=1e-4, atol=1e-5, err_msg=name)
        assert got.metric_scale == pytest.approx(want.metric_scale, rel=1e-4)
