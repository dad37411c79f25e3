"""`mgeo inspect` names what a model file is, for every format, and the node's load line says the same."""
from __future__ import annotations

import json

import pytest
import torch
from authors_onnx import export_authors_layout

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.model import build_model, preset, save_checkpoint
from mgeo_ros.model.checkpoint import save_official
from mgeo_ros.runtime.model_info import describe_model, model_line


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.runtime.engine_cache import build_engine

    torch.manual_seed(7)
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('inspect')
    model = build_model(preset('tiny')).eval()
    out = {'authors': export_authors_layout(model, d / 'authors.onnx', 'torchscript', opset=14)}
    out['project'] = d / 'project.onnx'
    export_onnx(model, str(out['project']), (112, 84), num_tokens=48, parity=False)
    out['engine'] = d / 'authors.engine'
    build_engine(str(out['authors']), str(out['engine']), trt_module='tensorrt_rtx_bindings',
                 compute_capability='SM89', progress=False, num_tokens=48)
    out['pt2'] = save_official(model, d / 'moge2.pt')
    v3 = {k: v for k, v in model.config.items() if k != 'remap_output'}
    v3['refiner_depth_resolution'] = 256
    state = dict(model.state_dict(), **{'refiner.w': torch.zeros(2)})
    torch.save({'model_config': v3, 'model': state}, d / 'moge3.pt')
    out['pt3'] = d / 'moge3.pt'
    out['dir'] = save_checkpoint(model, d / 'ckpt', fp16=True)
    return out


def test_authors_onnx(files):
    info = describe_model(files['authors'])
    assert info.origin == "MoGe authors' ONNX layout (MoGe-2)" and info.size.startswith('dynamic')
    assert [t.name for t in info.inputs] == ['image', 'num_tokens'] and info.inputs[1].dtype == 'int64'
    assert info.num_tokens == 'input num_tokens' and info.normal_head and info.precision == 'fp32'


def test_project_export(files):
    info = describe_model(files['project'])
    assert info.origin == 'project export, MoGe-2' and info.size == 'fixed 112x84' and info.num_tokens == '48'
    assert info.probe and [t.name for t in info.inputs] == ['image']


def test_engine_from_authors_onnx(files):
    info = describe_model(files['engine'])
    assert info.format == 'TensorRT engine' and 'authors' in info.origin
    assert info.size.startswith('dynamic: profile') and info.num_tokens == '48 (fixed at build)' and info.probe


def test_checkpoints(files):
    v2 = describe_model(files['pt2'])
    assert v2.origin == 'official checkpoint, MoGe-2 (remap exp)' and v2.precision == 'fp32' and v2.normal_head
    v3 = describe_model(files['pt3'])
    assert v3.origin == 'official checkpoint, MoGe-3 (base path; 1 refiner tensors not run)'
    d = describe_model(files['dir'])
    assert d.format == 'safetensors (project checkpoint)' and d.precision == 'fp16'
    assert describe_model(files['dir'] / 'model.safetensors').origin == d.origin


def test_cli_text_json_and_errors(files, capsys, tmp_path):
    assert mgeo_main(['inspect', str(files['authors'])]) == 0
    text = capsys.readouterr().out
    assert 'num_tokens int64 []' in text and "authors' ONNX layout" in text
    assert mgeo_main(['inspect', str(files['pt3']), '--json']) == 0
    assert 'MoGe-3' in json.loads(capsys.readouterr().out)['origin']
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    assert mgeo_main(['inspect', str(junk)]) == 1
    assert 'not a readable' in capsys.readouterr().err
    assert mgeo_main(['inspect', str(tmp_path / 'none.onnx')]) == 1


def test_node_line_is_the_inspect_line(files):
    from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    path = files['authors']
    assert model_line(path, OnnxRuntimeBackend(str(path))) == describe_model(path).line()
    assert 'MoGe-3 (base path' in model_line(files['pt3'])


def test_node_line_for_a_loaded_checkpoint_matches_inspect(files):
    from mgeo_ros.runtime.backends.torch_backend import TorchBackend

    for key in ('pt3', 'dir'):
        backend = TorchBackend(str(files[key]), device='cpu')
        assert model_line(files[key], backend) == describe_model(files[key]).line(), key
