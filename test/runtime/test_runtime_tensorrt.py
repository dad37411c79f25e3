"""The real TensorRT path: export (fp32 and fp16 graphs, each with its probe) -> strongly typed engines built on this
GPU -> the cuda-python TensorRT backend vs the torch Predictor, the load-time probe check, `mgeo check-engine`.

Runs where the `tensorrt` Python package, NVIDIA `cuda-python` and an NVIDIA GPU exist (Jetson with JetPack, a
desktop with TensorRT); skips elsewhere with the exact reason. CI has none of them: its TensorRT check is the
TensorRT-RTX build gate in test_runtime_engine.py, and the GPU-free logic is tested in test_runtime_probe.py.
"""
from __future__ import annotations

import importlib.util
import math
import shutil

import numpy as np
import pytest


def _availability() -> tuple[str | None, str | None]:
    """(why the TensorRT path is absent here: skip, why an installed one is broken: fail). Only an absent package or
    GPU skips; a package that is installed but does not import is a failure with its own error."""
    if importlib.util.find_spec('tensorrt') is None:
        return 'TensorRT not installed here (no tensorrt package)', None
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # installed but broken (missing libnvinfer, wrong CUDA): must not look like absent
        return None, f'tensorrt is installed but does not import: {e!r}'
    if importlib.util.find_spec('cuda') is None:
        return 'NVIDIA cuda-python not installed (the TensorRT backend\'s buffers and stream)', None
    try:
        from mgeo_ros.runtime.backends.tensorrt_backend import import_cudart

        cudart = import_cudart()
    except ImportError as e:
        return None, f'cuda-python is installed but its runtime module does not import: {e!r}'
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        return f'no NVIDIA GPU visible to CUDA (cudaGetDeviceCount: {err}, {count})', None
    return None, None


REASON, BROKEN = _availability()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.fixture(autouse=True)
def _installation_works():
    if BROKEN is not None:
        pytest.fail(BROKEN)


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
    engines = {}
    for precision in ('fp32', 'fp16'):
        onnx_path = str(d / f'tiny_{precision}.onnx')
        export_onnx(model, onnx_path, (128, 96), num_tokens=60, precision=precision)
        engines[precision] = str(d / f'tiny_{precision}.engine')
        result = build_engine(onnx_path, engines[precision], precision=precision, progress=False)
        assert result.built and result.key['precision'] == precision and result.key['typing'] == 'strong'
        assert not build_engine(onnx_path, engines[precision]).built  # cache hit
    return engines, model


@pytest.mark.parametrize('precision,tol', [('fp32', 1e-3), ('fp16', 3e-2)])
def test_tensorrt_matches_torch(engine_and_model, precision, tol):
    from mgeo_ros.geometry import Intrinsics
    from mgeo_ros.runtime import Predictor

    engines, model = engine_and_model
    trt_pred = Predictor(engines[precision], backend='tensorrt')
    assert trt_pred.backend_name == 'tensorrt' and trt_pred.backend.probe_check.ok
    torch_pred = Predictor(model, backend='torch', num_tokens=60, device='cpu')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    for intr in (None, Intrinsics.from_fov(math.radians(60), 128, 96)):
        a, b = torch_pred.predict(rgb, intr), trt_pred.predict(rgb, intr)
        both = a.mask & b.mask
        assert both.mean() > 0.2 and (a.mask != b.mask).mean() < 0.01
        rel = np.linalg.norm(a.depth[both] - b.depth[both]) / np.linalg.norm(a.depth[both])
        print(f'tensorrt {precision}: depth rel L2 {rel:.2e}, forward {b.timings_ms["forward"]:.2f} ms, '
              f'probe {trt_pred.backend.probe_check.summary()}')
        assert rel < tol


def test_check_engine_command_on_engine(engine_and_model, capsys):
    from mgeo_ros.cli import main as mgeo_main
    from mgeo_ros.runtime.probe import probe_path

    engines, _ = engine_and_model
    assert mgeo_main(['check-engine', engines['fp16'], '--probe', probe_path(engines['fp16'])]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('PASS')


def test_engine_with_wrong_probe_is_refused_or_falls_back(engine_and_model, tmp_path):
    from mgeo_ros.runtime.backends.tensorrt_backend import EngineProbeError
    from mgeo_ros.runtime.predictor import create_backend
    from mgeo_ros.runtime.probe import load_probe, probe_path

    engines, _ = engine_and_model
    copy = str(tmp_path / 'tiny_fp16.engine')
    shutil.copy(engines['fp16'], copy)
    shutil.copy(engines['fp16'] + '.json', copy + '.json')
    probe = load_probe(probe_path(engines['fp16']))
    np.savez(probe_path(copy), input=probe.frame, meta=np.array('{}'),
             **{f'out_{k}': v * (1.5 if k == 'points' else 1.0) for k, v in probe.outputs.items()})
    with pytest.raises(EngineProbeError, match='engine refused: TensorRT .* points'):
        create_backend(copy, backend='tensorrt')
    backend = create_backend(copy, backend='tensorrt', engine_fallback=True)  # sidecar names the .onnx
    assert backend.name == 'onnxruntime' and 'engine refused' in backend.fallback_reason


def test_tensorrt_refuses_foreign_engine_sidecar(engine_and_model, tmp_path):
    import json

    from mgeo_ros.errors import BackendUnavailableError
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.engine_cache import sidecar_path

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


@pytest.mark.parametrize('exporter', ['torchscript', 'dynamo'])
def test_authors_layout_engine_serves_mixed_camera_sizes(tmp_path, exporter):
    """An ONNX in the MoGe authors' layout -> an engine with an optimization profile (num_tokens fixed at build) ->
    its probe passes on load, and one engine serves two camera sizes like ONNX Runtime on the same file."""
    from authors_onnx import export_authors_layout, wellposed_dynamic

    from mgeo_ros.export.engine import build_engine
    from mgeo_ros.runtime import Predictor

    onnx_path = str(export_authors_layout(wellposed_dynamic(4), tmp_path / 'authors.onnx', exporter, opset=14))
    engine = str(tmp_path / 'authors.engine')
    cameras = [(160, 120), (120, 160)]
    assert build_engine(onnx_path, engine, progress=False, num_tokens=60, camera_sizes=cameras).built
    trt_pred = Predictor(engine, backend='tensorrt')
    assert trt_pred.backend.dynamic and trt_pred.backend.probe_check.ok and trt_pred.num_tokens == 60
    ort_pred = Predictor(onnx_path, backend='onnxruntime', num_tokens=60)
    rng = np.random.default_rng(0)
    for w, h in cameras:
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        a, b = ort_pred.predict(rgb), trt_pred.predict(rgb)
        both = a.mask & b.mask
        assert both.mean() > 0.2
        assert np.linalg.norm(a.depth[both] - b.depth[both]) / np.linalg.norm(a.depth[both]) < 1e-3
