"""Probes and `mgeo check-engine`, on ONNX Runtime (real) here; the real TensorRT side of the same checks runs in
test_runtime_tensorrt.py where TensorRT, cuda-python and a GPU exist. Here the TensorRT backend runs on stand-ins
for TensorRT and cuda-python (tensorrt_standin.py: host memory as the device, ONNX Runtime as the engine), which
covers its buffer, copy and probe logic; also its GPU-free helpers and that it imports with PyTorch absent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.runtime.probe import BUDGETS, Probe, ProbeError, compare, load_probe, probe_path

RTX = 'tensorrt_rtx_bindings'


@pytest.fixture(scope='module')
def two_models(tmp_path_factory):
    """Two tiny models (different weights) exported at the same size, fp16, each with its probe."""
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('probe')
    paths = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        path = str(d / f'tiny{seed}.onnx')
        export_onnx(build_model(preset('tiny')).eval(), path, (128, 96), num_tokens=48, precision='fp16')
        paths.append(path)
    return paths


def test_check_engine_own_probe_passes(two_models, capsys):
    a, _ = two_models
    assert mgeo_main(['check-engine', a, '--probe', probe_path(a)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith('PASS')
    assert any(line.strip().startswith('points') and 'rel_l2' in line for line in out)


def test_check_engine_other_models_probe_fails_naming_worst_output(two_models, capsys):
    a, b = two_models
    assert mgeo_main(['check-engine', a, '--probe', probe_path(b)]) == 3
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith('FAIL') and 'worst output' in last
    assert any(name in last for name in BUDGETS)


def test_check_engine_other_input_size_fails(two_models, tmp_path, capsys):
    a, _ = two_models
    probe = load_probe(probe_path(a))
    small = str(tmp_path / 'small.probe.npz')
    np.savez(small, input=probe.frame[:, :, :42, :56], meta=np.array('{}'),
             **{f'out_{k}': v for k, v in probe.outputs.items()})
    assert mgeo_main(['check-engine', a, '--probe', small]) == 3
    assert 'another model' in capsys.readouterr().out


def test_check_engine_unreadable_probe_exits_1(two_models, tmp_path, capsys):
    bad = tmp_path / 'x.probe.npz'
    bad.write_bytes(b'not a probe')
    assert mgeo_main(['check-engine', two_models[0], '--probe', str(bad)]) == 1
    assert 'cannot read probe' in capsys.readouterr().err


def test_probe_with_pickled_object_is_refused(tmp_path):
    path = str(tmp_path / 'evil.probe.npz')
    np.savez(path, input=np.zeros((1, 3, 14, 14), np.float32), out_points=np.array([{'x': 1}], dtype=object))
    with pytest.raises(ProbeError):
        load_probe(path)


def test_compare_budgets():
    rng = np.random.default_rng(0)
    ref = {'points': rng.normal(size=(1, 8, 8, 3)).astype(np.float32),
           'mask': rng.uniform(size=(1, 8, 8)).astype(np.float32), 'metric_scale': np.array([2.0], np.float32)}
    probe = Probe(frame=np.zeros((1, 3, 8, 8), np.float32), outputs=ref, meta={})
    near = {k: v * (1 + 1e-3) for k, v in ref.items()}
    assert compare(near, probe).ok
    far = dict(near, metric_scale=np.array([2.2], np.float32))  # 10 % scale error: a wrong metric depth
    check = compare(far, probe)
    assert not check.ok and check.worst == 'metric_scale'
    nan = dict(near, points=np.full_like(ref['points'], np.nan))
    assert not compare(nan, probe).ok
    missing = {k: v for k, v in near.items() if k != 'mask'}
    assert 'outputs differ' in compare(missing, probe).problem


def test_engine_sidecar_and_refusal_logic():
    """The TensorRT backend's GPU-free pieces: sidecar checks, dtype table, the refusal line."""
    from mgeo_ros.runtime.backends.tensorrt_backend import numpy_dtype, probe_refusal, sidecar_problems
    from mgeo_ros.runtime.probe import ProbeCheck

    key = {'tensorrt_version': '10.3.0', 'gpu_name': 'Orin', 'compute_capability': '8.7'}
    assert sidecar_problems(key, '10.3.0', 'Orin', '8.7') == []
    probs = sidecar_problems(key, '10.16.0', 'NVIDIA GeForce RTX 3080', '8.6')
    assert len(probs) == 3 and 'TensorRT 10.3.0 (here 10.16.0)' in probs[0]
    aot = {'tensorrt_version': '1.7.1.116', 'gpu_name': 'any SM86 (ahead-of-time)', 'compute_capability': '8.6'}
    assert sidecar_problems(aot, '1.7.1.116', 'NVIDIA RTX A2000', '8.6') == []
    check = ProbeCheck(errors={'points': ('rel_l2', 0.41, 0.03)}, worst='points', ok=False)
    line = probe_refusal('10.3.0', 'Orin', check, jetson=True)
    assert '\n' not in line and 'TensorRT 10.3.0' in line and 'Orin' in line and 'points' in line
    assert '0.41' in line and 'DINOv2' in line and 'backend: onnxruntime' in line and 'Jetson' in line
    assert 'DINOv2' not in probe_refusal('10.16.0', 'RTX 3080', check, jetson=False)
    trt = pytest.importorskip(RTX, reason='TensorRT-RTX bindings give a real DataType enum')
    assert numpy_dtype(trt, trt.DataType.FLOAT) == np.float32
    assert numpy_dtype(trt, trt.DataType.HALF) == np.float16


def test_tensorrt_backend_imports_without_torch():
    """The node's TensorRT path must not need PyTorch: import the backend (and the predictor) with torch blocked."""
    code = '''
import importlib.abc, sys
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.') or name == 'pycuda' or name.startswith('pycuda.'):
            tried.append(name)
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import mgeo_ros.runtime.backends.tensorrt_backend as t
import mgeo_ros.runtime.predictor, mgeo_ros.runtime.probe, mgeo_ros.runtime.engine_cache as cache
from mgeo_ros.errors import BackendUnavailableError
try:  # asking for the GPU (engine cache key) must not even try torch
    cache.local_gpu()
except BackendUnavailableError:
    pass
assert tried == [], tried
try:
    import torch
    raise SystemExit('torch was importable')
except ImportError:
    pass
assert 'torch' not in sys.modules
print('ok', t.TensorRTBackend.__name__)
'''
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'ok TensorRTBackend'


def test_no_torch_import_in_tensorrt_backend_source():
    import mgeo_ros.runtime.backends.tensorrt_backend as t

    with open(t.__file__) as f:
        text = f.read()
    assert 'import torch' not in text and 'import pycuda' not in text and 'from torch' not in text


def _standin_engine(onnx_path: str, folder, version: str = '10.16.0') -> str:
    """An engine file for the stand-in TensorRT (its content is the .onnx path), with sidecar and probe beside it."""
    os.makedirs(folder, exist_ok=True)
    engine = os.path.join(folder, 'model.engine')
    with open(engine, 'w') as f:
        f.write(onnx_path)
    key = {'tensorrt_version': version, 'gpu_name': 'Stand-in GPU', 'compute_capability': '8.6', 'precision': 'fp16'}
    with open(engine + '.json', 'w') as f:
        json.dump({'key': key, 'onnx_path': onnx_path, 'onnx_metadata': {'num_tokens': '48'}}, f)
    shutil.copy(probe_path(onnx_path), probe_path(engine))
    return engine


@pytest.fixture
def standin(monkeypatch):
    """TensorRT and cuda-python stand-ins (see tensorrt_standin.py); returns a factory for the fake TensorRT."""
    import tensorrt_standin

    import mgeo_ros.runtime.backends.tensorrt_backend as t

    cudart = tensorrt_standin.FakeCudart()
    monkeypatch.setattr(t, 'import_cudart', lambda: cudart)
    monkeypatch.setenv('MGEO_TENSORRT_MODULE', 'fake_tensorrt')

    def make(**kw):
        return tensorrt_standin.make_fake_tensorrt(**kw)

    yield make, cudart
    sys.modules.pop('fake_tensorrt', None)


def test_tensorrt_backend_buffers_and_probe_with_standins(two_models, tmp_path, standin):
    from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mgeo_ros.runtime.backends.tensorrt_backend import TensorRTBackend

    make, cudart = standin
    make()
    a, _ = two_models
    backend = TensorRTBackend(_standin_engine(a, tmp_path / 'e'))
    assert backend.probe_check is not None and backend.probe_check.ok
    assert backend.input_size == (112, 84) and backend.precision == 'fp16'
    cudart.copies.clear()
    frame = load_probe(probe_path(a)).frame
    got = backend.forward(frame, 48)
    ref = OnnxRuntimeBackend(a).forward(frame, 48)
    np.testing.assert_allclose(got.points, ref.points, rtol=1e-6, atol=1e-6)
    assert got.metric_scale == pytest.approx(ref.metric_scale)
    # one stream; the input goes up, and only the outputs postprocess reads come back
    assert {s for _, s in cudart.copies} == {7}
    import onnx
    import tensorrt_standin

    outputs = [o.name for o in onnx.load(a).graph.output]
    assert cudart.copies[0][0] == frame.nbytes and len(cudart.copies) == 1 + len(outputs)
    aux_bytes = int(np.prod(tensorrt_standin.AUX_SHAPE)) * 4
    assert aux_bytes not in [n for n, _ in cudart.copies]


def test_tensorrt_engine_failing_its_probe_is_refused_with_one_line(two_models, tmp_path, standin):
    from mgeo_ros.runtime.backends.tensorrt_backend import EngineProbeError, TensorRTBackend

    make, _ = standin
    make(version='10.3.0', scale_points=1.2)
    a, _ = two_models
    with pytest.raises(EngineProbeError) as err:
        TensorRTBackend(_standin_engine(a, tmp_path / 'e', version='10.3.0'))
    msg = str(err.value)
    assert '\n' not in msg and 'TensorRT 10.3.0 on Stand-in GPU' in msg and 'points' in msg and 'DINOv2' in msg


def test_check_engine_on_engine_and_fallback_with_standins(two_models, tmp_path, standin, capsys):
    from mgeo_ros.runtime.backends.tensorrt_backend import EngineProbeError
    from mgeo_ros.runtime.predictor import create_backend

    make, _ = standin
    a, _ = two_models
    make()
    good = _standin_engine(a, tmp_path / 'good')
    assert mgeo_main(['check-engine', good]) == 0
    assert 'TensorRT 10.16.0 on Stand-in GPU' in capsys.readouterr().out
    make(scale_points=1.2)
    bad = _standin_engine(a, tmp_path / 'bad')
    assert mgeo_main(['check-engine', bad]) == 3
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('FAIL: beyond budget: worst output points')
    with pytest.raises(EngineProbeError):
        create_backend(bad, backend='tensorrt')
    backend = create_backend(bad, backend='tensorrt', engine_fallback=True)  # the sidecar names the .onnx
    assert backend.name == 'onnxruntime' and 'engine refused' in backend.fallback_reason
    lone = _standin_engine(a, tmp_path / 'lone')
    with open(lone + '.json', 'w') as f:
        json.dump({'key': {}}, f)  # no .onnx to fall back to: the refusal stands
    with pytest.raises(EngineProbeError):
        create_backend(lone, backend='tensorrt', engine_fallback=True)


def test_cuda_errors_become_reasons():
    """With cuda-python but no usable GPU/driver, a CUDA call is refused with CUDA's own reason (not a crash)."""
    cudart = pytest.importorskip('cuda.bindings.runtime', reason='cuda-python (cuda.bindings) is not installed here')
    from mgeo_ros.errors import BackendUnavailableError
    from mgeo_ros.runtime.backends.tensorrt_backend import _Cuda

    if int(cudart.cudaGetDeviceCount()[0]) == 0 and cudart.cudaGetDeviceCount()[1] > 0:
        pytest.skip('a GPU is visible: the failure path needs a machine without one')
    with pytest.raises(BackendUnavailableError, match='CUDA cudaMalloc failed'):
        _Cuda(cudart)('cudaMalloc', 1024)


def test_tensorrt_backend_runs_a_batch_export_with_standins(two_models, tmp_path, standin):
    """An engine from `mgeo export --batch 2` (fp16 graph): its probe passes, and three frames run as a full batch
    plus a padded one, each equal to ONNX Runtime on that frame alone (the fp16 batch-1 export of the same weights)."""
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset
    from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mgeo_ros.runtime.backends.tensorrt_backend import TensorRTBackend

    make, cudart = standin
    make()
    torch.manual_seed(5)  # the weights of two_models[0]
    b2 = str(tmp_path / 'tiny5_b2.onnx')
    export_onnx(build_model(preset('tiny')).eval(), b2, (128, 96), num_tokens=48, precision='fp16', batch=2)
    backend = TensorRTBackend(_standin_engine(b2, tmp_path / 'e2'))
    assert backend.max_batch == 2 and backend.probe_check is not None and backend.probe_check.ok
    single = OnnxRuntimeBackend(two_models[0])
    frame = load_probe(probe_path(b2)).frame
    frames = np.concatenate([frame, frame[:, :, ::-1].copy(), 0.5 * frame]).astype(np.float32)
    cudart.copies.clear()
    got = backend.forward_batch(frames, 48)
    sizes = [n for n, _ in cudart.copies]  # two forwards of a batch of 2: the same copies twice
    assert len(got) == 3 and sizes[0] == frames[:2].nbytes and sizes[:len(sizes) // 2] == sizes[len(sizes) // 2:]
    for i, raw in enumerate(got):
        ref = single.forward(frames[i:i + 1], 48)
        np.testing.assert_allclose(raw.points, ref.points, rtol=1e-3, atol=1e-3, err_msg=str(i))
        assert raw.metric_scale == pytest.approx(ref.metric_scale, rel=1e-3)
