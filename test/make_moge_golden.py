"""Write test/data/moge_golden: the reference MoGe-2 forward outputs for the tiny preset with random weights, so
`test_model_golden.py` checks parity with the reference on every run, without the reference installed.

    MGEO_MOGE_REFERENCE=DIR .venv/bin/python test/make_moge_golden.py

DIR makes `import moge` and `import utils3d` work (microsoft/MoGe and EasternJournalist/utils3d at the commits in
the notes). Written: our checkpoint of the shared weights (fp16, every weight exactly representable), and per case
the input image (uint8) and the reference outputs (float32).
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
    (OUT / 'golden.json').write_text(json.dumps({
        'cases': [{'height': h, 'width': w, 'num_tokens': n} for h, w, n in CASES],
        'reference': REFERENCE,
        'torch': torch.__version__, 'written_by': 'test/make_moge_golden.py'}, indent=1) + '\n')
    print(f'wrote {OUT} ({sum(a.nbytes for a in arrays.values()) / 1e3:.0f} kB of arrays)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
