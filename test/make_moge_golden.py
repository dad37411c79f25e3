"""Write test/data/moge_golden: the reference MoGe-2 forward outputs for the tiny preset with random weights, so
`test_model_golden.py` checks parity with the reference on every run, without the reference installed.

    MGEO_MOGE_REFERENCE=DIR .venv/bin/python test/make_moge_golden.py

DIR makes `import moge` and `import utils3d` work (microsoft/MoGe and EasternJournalist/utils3d at the commits in
the notes). Written: our checkpoint of the shared weights (fp16, every weight exactly representable), and per case
the input image (uint8) and the reference outputs (float32); golden_infer.npz: the reference `infer` (focal and
shift solve, intrinsics, metric depth, mask, normals) on a well-posed point map (a tilted plane, stored with it)
that replaces the network's points, with the field of view recovered and given.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# (height, width, num_tokens): the token grid and the head's output size differ per case
CASES = [(48, 64, 192), (70, 100, 300)]
OUT = HERE / 'data' / 'moge_golden'
REFERENCE = 'microsoft/MoGe@07444410f1e33f402353b99d6ccd26bd31e469e8'  # the commit the notes describe
# infer: (height, width, num_tokens) and the fields of view given (None = recovered from the points)
INFER_CASE = (48, 64, 192)
INFER_FOVS = (None, 55.0)


def plane_points(h: int, w: int) -> torch.Tensor:
    """A tilted plane seen through a 1.2-focal camera, with a shift of 0.6: a point map whose focal and shift the
    solver recovers exactly (a random network's points are degenerate)."""
    from mgeo_ros.geometry.uv import normalized_view_plane_uv_torch

    uv = normalized_view_plane_uv_torch(w, h)
    z = 2.0 + 0.7 * uv[..., 1] - 0.4 * uv[..., 0]
    return torch.stack([uv[..., 0] / 1.2 * z, uv[..., 1] / 1.2 * z, z - 0.6], dim=-1)[None]


def infer_with_points(model, image: torch.Tensor, points: torch.Tensor, num_tokens: int, fov_x):
    """model.infer with the network's points replaced by `points` (mask, normals, metric scale stay the network's)."""
    original = type(model).forward

    def patched(image, num_tokens):
        out = original(model, image, num_tokens)
        out['points'] = points.clone()
        return out
    model.forward = patched
    try:
        return model.infer(image, num_tokens=num_tokens, fov_x=fov_x, use_fp16=False)
    finally:
        del model.forward


def write_infer_golden(ref) -> dict[str, np.ndarray]:
    h, w, n = INFER_CASE
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    points = plane_points(h, w)
    arrays = {'image': image, 'points_in': points[0].numpy()}
    ref.onnx_compatible_mode = False
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    for i, fov in enumerate(INFER_FOVS):
        with torch.no_grad():
            out = infer_with_points(ref, x, points, n, fov)
        for key in ('points', 'depth', 'intrinsics', 'mask', 'normal'):
            arrays[f'fov{i}/{key}'] = out[key].float().numpy()
    np.savez_compressed(OUT / 'golden_infer.npz', **arrays)
    return arrays


def main() -> int:
    from moge_reference_pair import build_pair

    from mgeo_ros.model.checkpoint import save_checkpoint

    reference = os.environ.get('MGEO_MOGE_REFERENCE')
    if not reference:
        print('set MGEO_MOGE_REFERENCE (see the docstring)', file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    ref, ours = build_pair(reference, seed=0, fp16_exact=True)
    OUT.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ours, OUT, fp16=True)
    arrays: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for i, (h, w, n) in enumerate(CASES):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arrays[f'case{i}/image'] = image
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        for mode in (False, True):
            ref.onnx_compatible_mode = mode
            with torch.no_grad():
                out = ref(x, n)
            for key, value in out.items():
                arrays[f'case{i}/{"onnx" if mode else "default"}/{key}'] = value.float().numpy()
    np.savez_compressed(OUT / 'golden.npz', **arrays)
    arrays.update({f'infer/{k}': v for k, v in write_infer_golden(ref).items()})
    (OUT / 'golden.json').write_text(json.dumps({
        'cases': [{'height': h, 'width': w, 'num_tokens': n} for h, w, n in CASES],
        'infer': {'height': INFER_CASE[0], 'width': INFER_CASE[1], 'num_tokens': INFER_CASE[2],
                  'fov_x_deg': list(INFER_FOVS)},
        'reference': REFERENCE,
        'torch': torch.__version__, 'written_by': 'test/make_moge_golden.py'}, indent=1) + '\n')
    print(f'wrote {OUT} ({sum(a.nbytes for a in arrays.values()) / 1e3:.0f} kB of arrays)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
