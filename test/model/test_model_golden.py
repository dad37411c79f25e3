"""Parity with the reference MoGe-2 on every run: our forward pass against outputs the reference implementation wrote
(test/data/moge_golden, by test/make_moge_golden.py) for the tiny preset with random weights, in the default and the
exportable mode, and `infer` (focal/shift solve, intrinsics) on a stored point map. The full parity suite (more sizes,
vitl) is test_model_reference.py, which needs the reference installed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgeo_ros.model import load_checkpoint

GOLDEN = Path(__file__).resolve().parents[1] / 'data' / 'moge_golden'
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
        # float32 forward: the CPU's kernels (SIMD width, MKL/oneDNN blocking) reorder its sums, measured <= 1.1e-7
        assert rel < 1e-5, f'{key}: relative L2 {rel:.2e}'


INFER = json.loads((GOLDEN / 'golden.json').read_text())['infer']


@pytest.mark.parametrize('fov_index', range(len(INFER['fov_x_deg'])))
def test_infer_matches_the_reference_outputs(model_and_golden, fov_index):
    """`infer` end to end against the reference's (golden_infer.npz): focal and shift recovered from a stored
    well-posed point map (field of view recovered, then given), intrinsics, metric depth, points, mask, normals."""
    from make_moge_golden import infer_with_points

    model, _ = model_and_golden
    golden = np.load(GOLDEN / 'golden_infer.npz')
    model.onnx_compatible_mode = False
    image = torch.from_numpy(golden['image']).permute(2, 0, 1).float() / 255.0
    points = torch.from_numpy(golden['points_in'])[None]
    with torch.no_grad():
        out = infer_with_points(model, image, points, INFER['num_tokens'], INFER['fov_x_deg'][fov_index])
    for key in ('points', 'depth', 'intrinsics', 'mask', 'normal'):
        got, want = out[key].float().numpy(), golden[f'fov{fov_index}/{key}']
        assert got.shape == want.shape, key
        assert np.array_equal(np.isfinite(got), np.isfinite(want)), key
        finite = np.isfinite(want)
        rel = np.linalg.norm(got[finite] - want[finite]) / max(np.linalg.norm(want[finite]), 1e-12)
        # the forward's float32 reordering, then the focal/shift solver's stopping rule: measured <= 9.4e-7
        assert rel < 1e-4, f'{key}: relative L2 {rel:.2e}'
