"""Parity with the reference MoGe-2 implementation, run only when a checkout of it is pointed at.

Set MGEO_MOGE_REFERENCE to a directory that makes `import moge` and `import utils3d` work (github.com/microsoft/MoGe
and EasternJournalist/utils3d at the commits in the notes; `huggingface_hub` may be a stub). Nothing of it is
shipped. Weights are random and copied from the reference model into ours.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
from moge_reference_pair import build_pair

from mgeo_ros.geometry.uv import normalized_view_plane_uv_torch

REF = os.environ.get('MGEO_MOGE_REFERENCE')
pytestmark = pytest.mark.skipif(not REF, reason='MGEO_MOGE_REFERENCE (a MoGe + utils3d checkout) is not set')


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    finite = torch.isfinite(b)
    return ((a[finite] - b[finite]).norm() / b[finite].norm().clamp_min(1e-12)).item()


@pytest.fixture(scope='module')
def pair():
    torch.set_num_threads(1)
    yield build_pair(REF)
    sys.path.remove(REF)


@pytest.mark.parametrize('onnx_mode', [False, True])
@pytest.mark.parametrize('h,w,n', [(120, 160, 300), (100, 70, 444)])
def test_forward_matches_reference(pair, onnx_mode, h, w, n):
    ref, ours = pair
    ref.onnx_compatible_mode = ours.onnx_compatible_mode = onnx_mode
    img = torch.rand(1, 3, h, w)
    with torch.no_grad():
        a, b = ref(img, n), ours(img, n)
    assert a.keys() == b.keys()
    for key in a:
        assert _rel(b[key], a[key]) < 1e-5, key


def test_infer_matches_reference(pair):
    """A well-posed point map (tilted plane) replaces both networks' points; infer must agree incl. the solver."""
    ref, ours = pair
    ref.onnx_compatible_mode = ours.onnx_compatible_mode = False
    h, w = 96, 128
    uv = normalized_view_plane_uv_torch(w, h)
    z = 2.0 + 0.7 * uv[..., 1] - 0.4 * uv[..., 0]
    pts = torch.stack([uv[..., 0] / 1.2 * z, uv[..., 1] / 1.2 * z, z - 0.6], dim=-1)[None]
    for model in (ref, ours):
        original = type(model).forward

        def patched(image, num_tokens, model=model, original=original):
            out = original(model, image, num_tokens)
            out['points'] = pts.clone()
            return out
        model.forward = patched
    try:
        img = torch.rand(3, h, w)
        for fov in (None, 55.0):
            a = ref.infer(img, num_tokens=300, fov_x=fov, use_fp16=False)
            b = ours.infer(img, num_tokens=300, fov_x=fov, use_fp16=False)
            assert torch.equal(a['mask'], b['mask'])
            assert torch.equal(torch.isfinite(a['depth']), torch.isfinite(b['depth']))
            for key in ('points', 'depth', 'normal', 'intrinsics'):
                assert _rel(b[key], a[key]) < 1e-4, key
    finally:
        del ref.forward, ours.forward
