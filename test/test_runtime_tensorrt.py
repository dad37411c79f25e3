"""The real TensorRT path: export -> build an engine on this GPU -> TensorRT Predictor vs torch Predictor.

Runs where the `tensorrt` Python package and an NVIDIA GPU exist (Jetson with JetPack, a desktop with TensorRT);
skips elsewhere with the exact reason. CI has neither: its TensorRT check is the TensorRT-RTX build gate in
test_runtime_engine.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest


def _skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as e:
        return f'TensorRT not installed here (import tensorrt: {e})'
    try:
        import torch
    except ImportError:
        return 'PyTorch not installed (the TensorRT backend uses torch CUDA tensors as device buffers)'
    if not torch.cuda.is_available():
        return f'no NVIDIA GPU visible to CUDA (torch {torch.__version__}, cuda build {torch.version.cuda})'
    return None


REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.fixture(scope='module')
def engine_and_model(tmp_path_factory):
    import torch
    from runtime_wellposed import WellPosedTiny

    from mgeo_ros.export.engine import build_engine
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.manual_seed(4)
    model = WellPosedTiny(build_model(preset('tiny')).eval())
    d = tmp_path_factory.mktemp('trt')
    onnx_path = str(d / 'tiny.onnx')
    export_onnx(model, onnx_path, (128, 96), num_tokens=60)
    engines = {}
    for precision in ('fp32', 'fp16'):
        engines[precision] = str(d / f'tiny.{precision}.engine')
        result = build_engine(onnx_path, engines[precision], precision=precision, progress=False)
        assert result.built
        assert not build_engine(onnx_path, engines[precision], precision=precision).built  # cache hit
    return engines, model


@pytest.mark.parametrize('precision,tol', [('fp32', 1e-3), ('fp16', 3e-2)])
def test_tensorrt_matches_torch(engine_and_model, precision, tol):
    from mgeo_ros.geometry import Intrinsics
    from mgeo_ros.runtime import Predictor

    engines, model = engine_and_model
    trt_pred = Predictor(engines[precision], backend='tensorrt')
    assert trt_pred.backend_name == 'tensorrt'
    torch_pred = Predictor(model, backend='torch', num_tokens=60, device='cpu')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    for intr in (None, Intrinsics.from_fov(math.radians(60), 128, 96)):
        a, b = torch_pred.predict(rgb, intr), trt_pred.predict(rgb, intr)
        both = a.mask & b.mask
        assert both.mean() > 0.2 and (a.mask != b.mask).mean() < 0.01
        rel = np.linalg.norm(a.depth[both] - b.depth[both]) / np.linalg.norm(a.depth[both])
        print(f'tensorrt {precision}: depth rel L2 {rel:.2e}, forward {b.timings_ms["forward"]:.2f} ms')
        assert rel < tol


def test_tensorrt_refuses_foreign_engine_sidecar(engine_and_model, tmp_path):
    import json
    import shutil

    from mgeo_ros.errors import BackendUnavailableError
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.backends.tensorrt_backend import sidecar_path

    engines, _ = engine_and_model
    copy = str(tmp_path / 'foreign.engine')
    shutil.copy(engines['fp32'], copy)
    with open(sidecar_path(engines['fp32'])) as f:
        meta = json.load(f)
    meta['key']['tensorrt_version'] = '0.0.1'
    with open(sidecar_path(copy), 'w') as f:
        json.dump(meta, f)
    with pytest.raises(BackendUnavailableError, match='TensorRT 0.0.1'):
        Predictor(copy, backend='tensorrt')
