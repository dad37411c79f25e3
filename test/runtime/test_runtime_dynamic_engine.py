"""Engines from dynamic-size ONNX files (the MoGe authors' layout): built for real by the TensorRT-RTX builder with
an optimization profile and num_tokens fixed at build, the profile in the cache key, a probe made for the engine; and
run through the TensorRT backend (stand-ins for TensorRT/CUDA, see tensorrt_standin.py) at several camera sizes with
one engine. The same on a real GPU is in test_runtime_tensorrt.py."""
from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import onnx
import pytest
from authors_onnx import wellposed_dynamic

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import BackendUnavailableError
from mgeo_ros.runtime.engine_cache import build_engine, engine_profile, read_sidecar
from mgeo_ros.runtime.model_layout import ModelLayoutError
from mgeo_ros.runtime.preprocess import network_size
from mgeo_ros.runtime.probe import load_probe, probe_path

RTX = 'tensorrt_rtx_bindings'
TOKENS = 60
CAMERAS = [(160, 120), (120, 160)]


@pytest.fixture(scope='module')
def model():
    return wellposed_dynamic(4)


def test_default_profile_covers_aspect_ratios_1_2_to_2_1():
    p = engine_profile(1200)
    for w, h in ((640, 480), (1280, 720), (480, 640), (1000, 500), (500, 1000)):
        nw, nh = network_size(w, h, 1200)
        assert p.min[0] <= nw <= p.max[0] and p.min[1] <= nh <= p.max[1], (w, h)
    assert p.opt == network_size(640, 480, 1200)
    cams = engine_profile(TOKENS, CAMERAS)
    assert cams.min == (98, 98) and cams.max == (126, 126) and cams.opt == network_size(160, 120, TOKENS)


def test_rtx_builds_dynamic_engine_with_profile_and_probe(authors_file, tmp_path):
    trt = importlib.import_module(RTX)  # never skipped: the builder is installed
    engine = str(tmp_path / 'dyn.engine')
    r = build_engine(authors_file, engine, trt_module=RTX, compute_capability='SM89', progress=False,
                     num_tokens=TOKENS, camera_sizes=CAMERAS)
    assert r.built and os.path.getsize(engine) > 10_000
    side = read_sidecar(engine)
    assert side['key']['tensorrt_version'] == trt.__version__
    assert side['key']['profile'] == {'min': [98, 98], 'opt': [126, 98], 'max': [126, 126], 'num_tokens': TOKENS}
    assert side['onnx_metadata']['num_tokens'] == str(TOKENS) and side['onnx_metadata']['dynamic'] == '1'
    probe = load_probe(probe_path(engine))
    assert probe.meta['num_tokens'] == TOKENS and probe.frame.shape == (1, 3, 98, 126)
    assert probe.outputs['points'].shape == (1, 98, 126, 3)
    # the profile is in the key: same cameras -> cache hit, other cameras -> rebuilt
    again = build_engine(authors_file, engine, trt_module=RTX, compute_capability='SM89', progress=False,
                         num_tokens=TOKENS, camera_sizes=CAMERAS)
    assert not again.built
    other = build_engine(authors_file, engine, trt_module=RTX, compute_capability='SM89', progress=False,
                         num_tokens=TOKENS, camera_sizes=[(200, 90)])
    assert other.built and 'profile' in other.reason


def test_build_engine_cli_dynamic_flags(authors_file, tmp_path, capsys):
    engine = str(tmp_path / 'cli.engine')
    assert mgeo_main(['build-engine', authors_file, '--output', engine, '--trt-module', RTX, '--compute-capability',
                      'SM86', '--quiet', '--num-tokens', '40', '--camera-sizes', '160x120', '--json']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['key']['profile']['num_tokens'] == 40 and out['key']['profile']['opt'] == list(network_size(160, 120,
                                                                                                            40))


def test_build_engine_refuses_non_moge_onnx(authors_file, tmp_path, capsys):
    m = onnx.load(authors_file)
    keep = [o for o in m.graph.output if o.name != 'metric_scale']
    del m.graph.output[:]
    m.graph.output.extend(keep)
    bad = str(tmp_path / 'no_scale.onnx')
    onnx.save(m, bad)
    with pytest.raises(ModelLayoutError, match="missing outputs \\['metric_scale'\\]"):
        build_engine(bad, str(tmp_path / 'x.engine'), trt_module=RTX, compute_capability='SM89', progress=False)
    assert not os.path.exists(tmp_path / 'x.engine')
    assert mgeo_main(['build-engine', bad, '--output', str(tmp_path / 'y.engine'), '--trt-module', RTX,
                      '--compute-capability', 'SM89', '--quiet']) == 1
    assert 'not a MoGe model graph' in capsys.readouterr().err


@pytest.fixture
def standin(monkeypatch):
    import tensorrt_standin

    import mgeo_ros.runtime.backends.tensorrt_backend as t

    cudart = tensorrt_standin.FakeCudart()
    monkeypatch.setattr(t, 'import_cudart', lambda: cudart)
    monkeypatch.setenv('MGEO_TENSORRT_MODULE', 'fake_tensorrt')
    yield tensorrt_standin.make_fake_tensorrt()
    sys.modules.pop('fake_tensorrt', None)


def _standin_dynamic_engine(onnx_path: str, folder, fake_trt) -> str:
    """`build_engine` with a builder that writes what the stand-in TensorRT runs (the ONNX, tokens, profile)."""

    def builder(path, precision, trt, compute_capability=None, workspace_mib=None, progress=True, profile=None):
        shapes = [[1, 3, s[1], s[0]] for s in (profile.min, profile.opt, profile.max)]
        spec = {'onnx': onnx_path, 'num_tokens': profile.num_tokens, 'profile': shapes}
        return json.dumps(spec).encode(), 'fp32'

    engine = os.path.join(folder, 'dyn.engine')
    build_engine(onnx_path, engine, trt=fake_trt, compute_capability='SM86', builder=builder, num_tokens=TOKENS,
                 camera_sizes=CAMERAS)
    return engine


def test_one_engine_serves_mixed_camera_sizes(authors_file, tmp_path, standin, capsys):
    from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mgeo_ros.runtime.backends.tensorrt_backend import TensorRTBackend
    from mgeo_ros.runtime.predictor import Predictor

    engine = _standin_dynamic_engine(authors_file, str(tmp_path), standin)
    backend = TensorRTBackend(engine)
    assert backend.dynamic and backend.input_size is None and backend.probe_check.ok
    assert mgeo_main(['check-engine', engine]) == 0 and 'PASS' in capsys.readouterr().out
    predictor = Predictor(backend, num_tokens=999)  # the engine's build-time token count wins
    assert predictor.num_tokens == TOKENS
    reference = Predictor(authors_file, backend='onnxruntime', num_tokens=TOKENS)
    rng = np.random.default_rng(0)
    for w, h in CAMERAS + [(160, 120)]:
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        got, want = predictor.predict(rgb), reference.predict(rgb)
        assert got.depth.shape == (h, w)
        np.testing.assert_allclose(got.depth[want.mask], want.depth[want.mask], rtol=1e-5)
    ort = OnnxRuntimeBackend(authors_file)
    assert ort.layout.dynamic
    with pytest.raises(BackendUnavailableError, match='outside the engine.*--camera-sizes'):
        backend.forward(np.zeros((1, 3, 140, 280), np.float32), TOKENS)


def test_fp16_engine_from_fp32_authors_file_names_the_from_onnx_command(authors_file, tmp_path):
    from mgeo_ros.runtime.engine_cache import PrecisionMismatchError

    with pytest.raises(PrecisionMismatchError, match='mgeo export --from-onnx .* --precision fp16') as e:
        build_engine(authors_file, str(tmp_path / 'x.engine'), precision='fp16', trt_module=RTX,
                     compute_capability='SM89', progress=False)
    assert 'CHECKPOINT' not in str(e.value)
