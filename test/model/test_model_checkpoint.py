"""Checkpoints: official `.pt` and project directory round trips, strict key errors, unsafe pickles refused."""
from __future__ import annotations

import json
import traceback

import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import CheckpointError
from mgeo_ros.model import build_model, load_checkpoint, preset, save_checkpoint
from mgeo_ros.model.checkpoint import save_official


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(3)
    torch.set_num_threads(1)
    m = build_model(preset('tiny')).eval()
    with torch.no_grad():
        for p in m.parameters():          # make every tensor distinctive so a dropped copy is visible
            p.add_(torch.randn_like(p) * 0.01)
    return m


@pytest.fixture(scope='module')
def image():
    torch.manual_seed(4)
    return torch.rand(1, 3, 48, 64)


def _same_outputs(a, b, img, atol=0.0):
    with torch.no_grad():
        oa, ob = a(img, 300), b(img, 300)
    assert oa.keys() == ob.keys()
    for k in oa:
        torch.testing.assert_close(oa[k], ob[k], atol=atol, rtol=atol)


def _official_payload(model):
    return {'model_config': json.loads(json.dumps(model.config)), 'model': dict(model.state_dict())}


def test_official_pt_round_trip(model, image, tmp_path):
    path = save_official(model, tmp_path / 'model.pt')
    loaded = load_checkpoint(path)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    _same_outputs(model, loaded, image)


def test_directory_round_trip_fp32_and_fp16(model, image, tmp_path):
    out = save_checkpoint(model, tmp_path / 'ckpt')
    assert (out / 'config.json').is_file() and (out / 'model.safetensors').is_file()
    assert json.loads((out / 'config.json').read_text()) == json.loads(json.dumps(model.config))
    _same_outputs(model, load_checkpoint(out), image)
    _same_outputs(model, load_checkpoint(out / 'model.safetensors'), image)

    half = save_checkpoint(model, tmp_path / 'half', fp16=True)
    assert (half / 'model.safetensors').stat().st_size < 0.6 * (out / 'model.safetensors').stat().st_size
    loaded = load_checkpoint(half)
    assert loaded.dtype == torch.float32
    _same_outputs(model, loaded, image, atol=5e-2)


def test_import_moge_cli(model, image, tmp_path, capsys):
    src = save_official(model, tmp_path / 'model.pt')
    assert mgeo_main(['import-moge', str(src), str(tmp_path / 'out')]) == 0
    _same_outputs(model, load_checkpoint(tmp_path / 'out'), image)
    assert mgeo_main(['import-moge', str(tmp_path / 'missing.pt'), str(tmp_path / 'x')]) == 1
    assert 'missing.pt' in capsys.readouterr().err


@pytest.mark.parametrize('fmt', ['pt', 'dir'])
def test_missing_key_named(model, tmp_path, fmt):
    payload = _official_payload(model)
    del payload['model']['scale_head.4.bias']
    path = _write(payload, tmp_path, fmt)
    with pytest.raises(CheckpointError, match=r'missing keys: scale_head\.4\.bias'):
        load_checkpoint(path)


@pytest.mark.parametrize('fmt', ['pt', 'dir'])
def test_unexpected_key_named(model, tmp_path, fmt):
    payload = _official_payload(model)
    payload['model']['encoder.backbone.register_tokens'] = torch.zeros(1, 4, 64)
    path = _write(payload, tmp_path, fmt)
    with pytest.raises(CheckpointError, match=r'unexpected keys: encoder\.backbone\.register_tokens'):
        load_checkpoint(path)


@pytest.mark.parametrize('fmt', ['pt', 'dir'])
def test_misshaped_key_named(model, tmp_path, fmt):
    payload = _official_payload(model)
    payload['model']['neck.input_blocks.0.weight'] = torch.zeros(64, 65, 1, 1)
    path = _write(payload, tmp_path, fmt)
    with pytest.raises(CheckpointError, match=r'mis-shaped keys: neck\.input_blocks\.0\.weight'):
        load_checkpoint(path)


def test_config_decides_structure(model, tmp_path):
    """A checkpoint without the normal head loads as a model without it (nothing hard-coded)."""
    payload = _official_payload(model)
    del payload['model_config']['normal_head']
    payload['model'] = {k: v for k, v in payload['model'].items() if not k.startswith('normal_head.')}
    torch.save(payload, tmp_path / 'nonormal.pt')
    loaded = load_checkpoint(tmp_path / 'nonormal.pt')
    assert not hasattr(loaded, 'normal_head')
    with torch.no_grad():
        assert set(loaded(torch.rand(1, 3, 32, 32), 100)) == {'points', 'mask', 'metric_scale'}


class _Evil:
    def __reduce__(self):
        return (print, ('code ran while unpickling',))


class _Custom:
    pass


@pytest.mark.parametrize('payload', [_Evil(), {'model_config': {}, 'model': {}, 'extra': _Custom()}])
def test_code_pickle_refused(tmp_path, payload, capsys):
    path = tmp_path / 'bad.pt'
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match='unpickl') as caught:
        load_checkpoint(path)
    assert 'code ran' not in capsys.readouterr().out
    # our own one line, naming what it would have run; never PyTorch's advice to load with weights_only=False,
    # neither in the message nor in a chained exception a traceback would print
    text = str(caught.value)
    assert '\n' not in text and str(path) in text and 'refused' in text
    assert ('print' in text if isinstance(payload, _Evil) else '_Custom' in text)
    shown = ''.join(traceback.format_exception(caught.value))
    assert 'weights_only' not in shown and 'safe_globals' not in shown


def test_malformed_inputs(tmp_path):
    torch.save({'state_dict': {}}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='model_config'):
        load_checkpoint(tmp_path / 'other.pt')
    (tmp_path / 'garbage.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / 'garbage.pt')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(CheckpointError, match='config.json'):
        load_checkpoint(tmp_path / 'empty')
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / 'nowhere')
    with pytest.raises(CheckpointError, match='backbone'):
        build_model({'encoder': {'backbone': 'dinov2_vitx14', 'intermediate_layers': [0], 'dim_out': 8},
                     'neck': preset('tiny')['neck']})


def _write(payload, tmp_path, fmt):
    if fmt == 'pt':
        path = tmp_path / 'model.pt'
        torch.save(payload, path)
        return path
    from safetensors.torch import save_file
    out = tmp_path / 'ckpt'
    out.mkdir()
    save_file({k: v.contiguous() for k, v in payload['model'].items()}, str(out / 'model.safetensors'))
    (out / 'config.json').write_text(json.dumps(payload['model_config']))
    return out
