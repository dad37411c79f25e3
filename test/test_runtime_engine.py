"""Export gate: the exported ONNX parses and builds with the TensorRT-RTX builder (no GPU needed), and the engine
cache rebuilds or refuses engines whose key does not match. Must run in CI: tensorrt_rtx_bindings is installed."""
from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.export.engine import EngineCacheError, build_engine, engine_key, read_sidecar

RTX = 'tensorrt_rtx_bindings'


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    """A saved tiny checkpoint exported through the `mgeo export` command (parity-checked)."""
    from mgeo_ros.model import build_model, save_checkpoint
    from mgeo_ros.model.configs import preset

    torch.manual_seed(2)
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('gate')
    save_checkpoint(build_model(preset('tiny')).eval(), d / 'ckpt')
    path = str(d / 'tiny.onnx')
    assert mgeo_main(['export', str(d / 'ckpt'), '--output', path, '--size', '96x72', '--num-tokens', '40',
                      '--opset', '18', '--json']) == 0
    return path


def test_export_cli_report(tiny_onnx):
    import onnx

    meta = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert meta['requested_num_tokens'] == '40' and meta['opset'] == '18'
    assert (meta['camera_width'], meta['camera_height']) == ('96', '72')


def test_export_cli_rejects_bad_size(capsys, tmp_path):
    assert mgeo_main(['export', str(tmp_path), '--output', str(tmp_path / 'x.onnx'), '--size', '640by480']) == 1
    assert 'WxH' in capsys.readouterr().err


def test_tensorrt_rtx_parses_and_builds_exported_onnx(tiny_onnx, tmp_path):
    trt = importlib.import_module(RTX)  # never skipped: CI installs tensorrt_rtx_bindings
    engine = str(tmp_path / 'tiny.engine')
    result = build_engine(tiny_onnx, engine, precision='fp32', trt_module=RTX, compute_capability='SM89',
                          progress=False)
    assert result.built and os.path.getsize(engine) > 10_000
    side = read_sidecar(engine)
    assert side['key']['tensorrt_version'] == trt.__version__
    assert side['key']['compute_capability'] == '8.9'
    assert side['key']['input_shape'][:2] == [1, 3]
    assert side['onnx_metadata']['requested_num_tokens'] == '40'


def test_engine_cache_hit_rebuild_and_refusal(tiny_onnx, tmp_path):
    engine = str(tmp_path / 'cached.engine')
    first = build_engine(tiny_onnx, engine, precision='fp32', trt_module=RTX, compute_capability='SM89',
                         progress=False)
    mtime = os.path.getmtime(engine)
    again = build_engine(tiny_onnx, engine, precision='fp32', trt_module=RTX, compute_capability='SM89')
    assert first.built and not again.built and os.path.getmtime(engine) == mtime
    with pytest.raises(EngineCacheError, match='compute_capability'):
        build_engine(tiny_onnx, engine, precision='fp32', trt_module=RTX, compute_capability='SM86', rebuild=False)
    rebuilt = build_engine(tiny_onnx, engine, precision='fp32', trt_module=RTX, compute_capability='SM86',
                           progress=False)
    assert rebuilt.built and 'compute_capability' in rebuilt.reason
    assert read_sidecar(engine)['key']['compute_capability'] == '8.6'


def test_engine_cache_with_fake_builder(tiny_onnx, tmp_path):
    """Key fields that need a real GPU/TensorRT to change (version, precision, ONNX) exercised with a fake builder."""
    calls = []

    class FakeTRT:
        __name__ = 'tensorrt'
        __version__ = '10.3.0'

    def fake_builder(onnx_path, precision, trt, **kw):
        calls.append((precision, trt.__version__))
        return b'engine-' + precision.encode(), precision

    engine = str(tmp_path / 'fake.engine')
    kw = dict(trt=FakeTRT(), builder=fake_builder, compute_capability='8.7')
    assert build_engine(tiny_onnx, engine, precision='fp16', **kw).built
    assert not build_engine(tiny_onnx, engine, precision='fp16', **kw).built
    assert build_engine(tiny_onnx, engine, precision='fp32', **kw).built  # precision changed
    newer = FakeTRT()
    newer.__version__ = '10.7.0'
    with pytest.raises(EngineCacheError, match='tensorrt_version'):
        build_engine(tiny_onnx, engine, precision='fp32', trt=newer, builder=fake_builder, compute_capability='8.7',
                     rebuild=False)
    assert build_engine(tiny_onnx, engine, precision='fp32', trt=newer, builder=fake_builder,
                        compute_capability='8.7').built
    assert calls == [('fp16', '10.3.0'), ('fp32', '10.3.0'), ('fp32', '10.7.0')]
    with open(engine, 'rb') as f:
        assert f.read() == b'engine-fp32'
    # an engine file with no sidecar is of unknown origin: refused when rebuilding is off
    orphan = str(tmp_path / 'orphan.engine')
    with open(orphan, 'wb') as f:
        f.write(b'x')
    with pytest.raises(EngineCacheError, match='no sidecar'):
        build_engine(tiny_onnx, orphan, **kw, rebuild=False)
    key = engine_key(tiny_onnx, 'fp16', FakeTRT(), '8.7')
    assert set(key) == {'onnx_sha256', 'tensorrt_module', 'tensorrt_version', 'gpu_name', 'compute_capability',
                        'input_shape', 'precision'}


def test_build_engine_cli(tiny_onnx, tmp_path, capsys):
    engine = str(tmp_path / 'cli.engine')
    args = ['build-engine', tiny_onnx, '--output', engine, '--trt-module', RTX, '--compute-capability', 'SM89',
            '--fp32', '--quiet', '--json']
    assert mgeo_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['built'] and out['key']['precision'] == 'fp32'
    assert mgeo_main(args) == 0 and not json.loads(capsys.readouterr().out)['built']
    refused = ['build-engine', tiny_onnx, '--output', engine, '--trt-module', RTX, '--compute-capability', 'SM86',
               '--fp32', '--no-rebuild', '--quiet']
    assert mgeo_main(refused) == 3
    assert 'rebuilding is disabled' in capsys.readouterr().err
