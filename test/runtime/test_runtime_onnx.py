"""Runtime: ONNX export (dynamo, metadata, parity) and torch vs ONNX Runtime Predictions at 3 aspect ratios."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from runtime_wellposed import WellPosedTiny, wellposed_tiny

from mgeo_ros.geometry import Intrinsics
from mgeo_ros.runtime import Predictor
from mgeo_ros.runtime.preprocess import network_size

NUM_TOKENS = 40
# (camera W, H): landscape 4:3, portrait 3:5, wide 2:1
SIZES = [(96, 72), (60, 100), (128, 64)]


@pytest.fixture(scope='module')
def tiny_model():
    return wellposed_tiny(1)


@pytest.fixture(scope='module')
def exported(tiny_model, tmp_path_factory):
    from mgeo_ros.export.onnx_export import export_onnx

    out = {}
    for w, h in SIZES:
        path = str(tmp_path_factory.mktemp('onnx') / f'tiny_{w}x{h}.onnx')
        out[(w, h)] = export_onnx(tiny_model, path, (w, h), num_tokens=NUM_TOKENS, opset=18)
    return out


def _frame(w, h, seed=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 13.0)], -1) * 100 + 128
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def test_export_metadata_and_parity_report(exported):
    for (w, h), report in exported.items():
        model = onnx.load(report.path)
        meta = {p.key: p.value for p in model.metadata_props}
        assert (int(meta['input_width']), int(meta['input_height'])) == network_size(w, h, NUM_TOKENS)
        assert int(meta['num_tokens']) == report.num_tokens
        assert len(meta['model_config_hash']) == 16
        assert [o.name for o in model.graph.output][:3] == ['points', 'mask', 'metric_scale']
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, 3, report.input_size[1], report.input_size[0]]  # static batch 1 and size
        for name, err in report.parity.items():
            assert err['rel_l2'] < 1e-4, (name, err)


@pytest.mark.parametrize('size', SIZES)
def test_torch_and_onnxruntime_predictions_agree(tiny_model, exported, size):
    w, h = size
    torch_pred = Predictor(tiny_model, backend='torch', num_tokens=NUM_TOKENS)
    ort_pred = Predictor(exported[size].path, backend='onnxruntime')
    assert ort_pred.backend_name == 'onnxruntime'
    assert ort_pred.network_size(w, h) == torch_pred.network_size(w, h)
    rgb = _frame(w, h)
    for intr in (None, Intrinsics.from_fov(math.radians(65), w, h)):
        a = torch_pred.predict(rgb, intr)
        b = ort_pred.predict(rgb, intr)
        assert (a.mask != b.mask).mean() < 1e-3
        both = a.mask & b.mask
        assert both.mean() > 0.2
        rel_l2 = np.linalg.norm(a.depth[both] - b.depth[both]) / np.linalg.norm(a.depth[both])
        print(f'parity {w}x{h} intrinsics={"given" if intr else "recovered"}: depth rel L2 {rel_l2:.2e}, '
              f'mask agreement {(a.mask == b.mask).mean():.5f}, fx {a.intrinsics.fx:.3f} vs {b.intrinsics.fx:.3f}')
        assert rel_l2 <= 1e-4, rel_l2
        assert a.intrinsics.fx == pytest.approx(b.intrinsics.fx, rel=1e-4)
        assert a.metric_scale == pytest.approx(b.metric_scale, rel=1e-5)
        assert a.intrinsics_recovered == b.intrinsics_recovered == (intr is None)


def test_onnx_predictor_reads_size_from_model(exported):
    report = exported[SIZES[0]]
    pred = Predictor(report.path)  # auto -> onnxruntime on this machine (or TensorRT where present)
    p = pred.predict(_frame(160, 120))  # same aspect ratio, another resolution
    assert p.depth.shape == (120, 160)
    assert pred.network_size(160, 120) == report.input_size
    assert pred.num_tokens == report.num_tokens


def test_onnxruntime_path_needs_neither_torch_nor_higher_layers(exported, repo_root):
    """The node runs ONNX Runtime without PyTorch; the runtime layer imports only geometry (docs/architecture.md)."""
    path = exported[SIZES[0]].path
    code = ('import sys, numpy as np\n'
            'from mgeo_ros.runtime import Predictor\n'
            f'p = Predictor({path!r}, backend="onnxruntime").predict(np.zeros((72, 96, 3), np.uint8))\n'
            'bad = [m for m in sys.modules if m == "torch" or m.split(".")[:2] in (["mgeo_ros", "model"], '
            '["mgeo_ros", "export"], ["mgeo_ros", "train"], ["mgeo_ros", "eval"], ["mgeo_ros", "ros"])]\n'
            'assert not bad, bad\n'
            'print("ok", p.depth.shape)\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'ok (72, 96)' in out.stdout


def test_parity_check_catches_a_different_model(exported):
    from mgeo_ros.export.onnx_export import parity_check, parity_image
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.manual_seed(99)
    other = WellPosedTiny(build_model(preset('tiny')).eval(), perturb=0.5)
    other.onnx_compatible_mode = True
    report = exported[SIZES[0]]
    w, h = report.input_size
    errs = parity_check(other, report.path, parity_image(w, h), report.outputs, report.num_tokens)
    assert errs['points']['rel_l2'] > 1e-3


def test_intra_op_threads_reach_every_cpu_backend(exported, tiny_model):
    from mgeo_ros.runtime.devices import default_intra_op_threads, resolve_threads, usable_cores

    assert [default_intra_op_threads(c) for c in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert resolve_threads(None) is None and resolve_threads(3) == 3
    assert resolve_threads(0) == default_intra_op_threads() == max(1, usable_cores() - 1)
    with pytest.raises(ValueError):
        resolve_threads(-1)
    path = exported[SIZES[0]].path
    for asked, expected in ((2, 2), (0, default_intra_op_threads())):
        ort = Predictor(path, backend='onnxruntime', threads=asked).backend
        assert ort.threads == expected
        assert ort.session.get_session_options().intra_op_num_threads == expected  # what ONNX Runtime was given
    assert Predictor(path, backend='onnxruntime').backend.session.get_session_options().intra_op_num_threads == 0
    before = torch.get_num_threads()
    try:
        assert Predictor(tiny_model, backend='torch', num_tokens=NUM_TOKENS, threads=2).backend.threads == 2
        assert torch.get_num_threads() == 2
        Predictor(tiny_model, backend='torch', num_tokens=NUM_TOKENS, threads=0)
        assert torch.get_num_threads() == default_intra_op_threads()
    finally:
        torch.set_num_threads(before)
