"""Export gate: the exported ONNX parses and builds with the TensorRT-RTX builder (no GPU needed), strongly typed, with
the ONNX's precision recorded truthfully; the engine cache rebuilds or refuses engines whose key does not match.
Must run in CI: tensorrt_rtx_bindings is installed."""
from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import MgeoError
from mgeo_ros.export.engine import (
    EngineCacheError,
    PrecisionMismatchError,
    build_engine,
    engine_key,
    onnx_precision,
    read_sidecar,
)

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
                      '--opset', '18', '--precision', 'fp32', '--json']) == 0
    return path


def test_export_cli_report(tiny_onnx):
    import onnx

    meta = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert meta['requested_num_tokens'] == '40' and meta['opset'] == '18'
    assert (meta['camera_width'], meta['camera_height']) == ('96', '72')


def test_export_cli_rejects_bad_size(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:   # refused by the parser (exit 2), before the checkpoint is read
        mgeo_main(['export', str(tmp_path), '--output', str(tmp_path / 'x.onnx'), '--size', '640by480'])
    assert exc.value.code == 2
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
    assert side['key']['precision'] == side['effective_precision'] == 'fp32' and side['key']['typing'] == 'strong'
    assert side['key']['tensorrt_major_minor'] == '.'.join(trt.__version__.split('.')[:2])
    assert side['heavy_layer_types'] and set(side['heavy_layer_types']) == {'FLOAT'}


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
    """Key fields that need a real GPU/TensorRT to change (version, ONNX) exercised with a fake builder."""
    calls = []

    class FakeTRT:
        __name__ = 'tensorrt'
        __version__ = '10.3.0'

    def fake_builder(onnx_path, precision, trt, **kw):
        calls.append(trt.__version__)
        return b'engine-' + trt.__version__.encode(), 'fp32'

    engine = str(tmp_path / 'fake.engine')
    kw = dict(trt=FakeTRT(), builder=fake_builder, compute_capability='8.7')
    assert build_engine(tiny_onnx, engine, **kw).built
    assert not build_engine(tiny_onnx, engine, precision='fp32', **kw).built
    newer = FakeTRT()
    newer.__version__ = '10.14.1'
    with pytest.raises(EngineCacheError, match='tensorrt_version'):
        build_engine(tiny_onnx, engine, trt=newer, builder=fake_builder, compute_capability='8.7', rebuild=False)
    assert build_engine(tiny_onnx, engine, trt=newer, builder=fake_builder, compute_capability='8.7').built
    assert calls == ['10.3.0', '10.14.1']
    with open(engine, 'rb') as f:
        assert f.read() == b'engine-10.14.1'
    assert read_sidecar(engine)['key']['tensorrt_major_minor'] == '10.14'
    # an engine file with no sidecar is of unknown origin: refused when rebuilding is off
    orphan = str(tmp_path / 'orphan.engine')
    with open(orphan, 'wb') as f:
        f.write(b'x')
    with pytest.raises(EngineCacheError, match='no sidecar'):
        build_engine(tiny_onnx, orphan, **kw, rebuild=False)
    key = engine_key(tiny_onnx, None, FakeTRT(), '8.7')
    assert set(key) == {'onnx_sha256', 'tensorrt_module', 'tensorrt_version', 'tensorrt_major_minor', 'gpu_name',
                        'compute_capability', 'input_shape', 'precision', 'typing'}
    assert key['precision'] == 'fp32' and key['typing'] == 'strong'


def test_fp16_engine_from_fp32_onnx_is_refused_with_the_export_command(tiny_onnx, tmp_path):
    def never(*a, **k):
        raise AssertionError('must not build')

    class FakeTRT:
        __name__ = 'tensorrt'
        __version__ = '11.4.1'

    with pytest.raises(PrecisionMismatchError) as err:
        build_engine(tiny_onnx, str(tmp_path / 'x.engine'), precision='fp16', trt=FakeTRT(), builder=never,
                     compute_capability='8.7')
    msg = str(err.value)
    assert 'FP32 graph' in msg and 'mgeo export CHECKPOINT' in msg and '--precision fp16' in msg
    assert '--size 96x72 --num-tokens 40' in msg


def test_tensorrt_before_10_is_refused(tiny_onnx, tmp_path):
    class OldTRT:
        __name__ = 'tensorrt'
        __version__ = '8.6.2'

    with pytest.raises(MgeoError, match='TensorRT 8.6.2 is too old.*>= 10'):
        build_engine(tiny_onnx, str(tmp_path / 'old.engine'), trt=OldTRT(), builder=lambda *a, **k: (b'', 'fp32'),
                     compute_capability='8.7')


def test_build_engine_cli(tiny_onnx, tmp_path, capsys):
    engine = str(tmp_path / 'cli.engine')
    args = ['build-engine', tiny_onnx, '--output', engine, '--trt-module', RTX, '--compute-capability', 'SM89',
            '--fp32', '--quiet', '--json']
    assert mgeo_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['built'] and out['key']['precision'] == 'fp32' and out['key']['typing'] == 'strong'
    assert mgeo_main(args) == 0 and not json.loads(capsys.readouterr().out)['built']
    refused = ['build-engine', tiny_onnx, '--output', engine, '--trt-module', RTX, '--compute-capability', 'SM86',
               '--fp32', '--no-rebuild', '--quiet']
    assert mgeo_main(refused) == 3
    assert 'rebuilding is disabled' in capsys.readouterr().err


def test_build_engine_cli_refuses_fp16_from_fp32_onnx(tiny_onnx, tmp_path, capsys):
    args = ['build-engine', tiny_onnx, '--output', str(tmp_path / 'h.engine'), '--trt-module', RTX,
            '--compute-capability', 'SM86', '--precision', 'fp16', '--quiet']
    assert mgeo_main(args) == 3
    err = capsys.readouterr().err
    assert 'mgeo export' in err and '--precision fp16' in err
    assert not os.path.exists(tmp_path / 'h.engine')


# ---------------------------------------------------------------------------------------------------------------
# The CI gate: what robots run, as near as a CPU can. The packaged default model's fp16 export (parity-checked by
# `mgeo export` itself) built strongly typed by TensorRT-RTX for SM86 (the Ampere kin of Orin's SM87) and SM89.
@pytest.fixture(scope='module')
def default_onnx(tmp_path_factory):
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.runtime.predictor import default_model_path

    d = tmp_path_factory.mktemp('default')
    fp16 = str(d / 'default_fp16.onnx')
    assert mgeo_main(['export', str(default_model_path()), '--output', fp16, '--size', '640x480',
                      '--num-tokens', '1200', '--precision', 'fp16']) == 0
    fp32 = str(d / 'default_fp32.onnx')
    export_onnx(str(default_model_path()), fp32, (640, 480), num_tokens=1200, parity=False, probe=False)
    return fp16, fp32


def test_ci_gate_default_model_fp16_engines_for_sm86_and_sm89(default_onnx, tmp_path, capsys):
    fp16, fp32 = default_onnx
    assert onnx_precision(fp16) == 'fp16' and onnx_precision(fp32) == 'fp32'
    sizes = {}
    for sm in ('SM86', 'SM89'):
        engine = str(tmp_path / f'default_fp16.{sm}.engine')
        assert mgeo_main(['build-engine', fp16, '--output', engine, '--trt-module', RTX, '--compute-capability', sm,
                          '--precision', 'fp16', '--quiet']) == 0
        side = read_sidecar(engine)
        assert side['key']['precision'] == side['effective_precision'] == 'fp16'
        assert side['key']['typing'] == side['typing'] == 'strong'
        types = side['heavy_layer_types']  # TensorRT's own view of the strongly typed network
        assert types.get('HALF', 0) > 10 * types.get('FLOAT', 0), types
        assert side['probe'] and os.path.isfile(tmp_path / side['probe'])  # the engine carries its probe
        sizes[sm] = os.path.getsize(engine)
    engine32 = str(tmp_path / 'default_fp32.SM86.engine')
    assert mgeo_main(['build-engine', fp32, '--output', engine32, '--trt-module', RTX, '--compute-capability', 'SM86',
                      '--quiet']) == 0
    side32 = read_sidecar(engine32)
    assert side32['key']['precision'] == side32['effective_precision'] == 'fp32'
    assert set(side32['heavy_layer_types']) == {'FLOAT'}
    size32 = os.path.getsize(engine32)
    print(f'default model engines: fp16 SM86 {sizes["SM86"]} B, SM89 {sizes["SM89"]} B; fp32 SM86 {size32} B')
    assert sizes['SM86'] < 0.75 * size32  # FP16 weights: markedly smaller than the FP32 build of the same network
