"""Parity with the reference MoGe-2 on every run: our forward pass against outputs the reference implementation wrote
(test/data/moge_golden, by test/make_moge_golden.py) for the tiny preset with random weights, in the default and the
exportable mode. The full parity suite (more sizes, vitl, infer) is test_model_reference.py, which needs the
reference installed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgeo_ros.model import load_checkpoint

GOLDEN = Path(__file__).resolve().parent / 'data' / 'moge_golden'
CASES = json.loads((GOLDEN / 'golden.json').read_text())['cases']


@pytest.fixture(scope='module')
def model_and_golden():
    return load_checkpoint(GOLDEN, device='cpu').eval(), np.load(GOLDEN / 'golden.npz')


@pytest.mark.parametrize('mode', ['default', 'onnx'])
@pytest.mark.parametrize('case', range(len(CASES)))
def test_forward_matches_the_reference_outputs(model_and_golden, case, mode):
    model, golden = model_and_golden
    spec = CASES[case]
    image = golden[f'case{case}/image']
    assert image.shape == (spec['height'], spec['width'], 3)
    model.onnx_compatible_mode = mode == 'onnx'
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = model(x, spec['num_tokens'])
    prefix = f'case{case}/{mode}/'
    expected = {k[len(prefix):]: golden[k] for k in golden.files if k.startswith(prefix)}
    assert set(out) == set(expected) == {'points', 'mask', 'normal', 'metric_scale'}
    for key, want in expected.items():
        got = out[key].float().numpy()
        assert got.shape == want.shape, key
        rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)
        assert rel < 1e-5, f'{key}: relative L2 {rel:.2e}'
