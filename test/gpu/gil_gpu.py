"""For test/gpu/run.sh (not a pytest module): whether each GPU backend's forward lets other Python threads run while
it waits for the device (`bench.backends.gil_stall`): torch-CUDA fp16 on the packaged default model and, when step 2
built it, the TensorRT fp16 engine. A forward that holds the GIL stalls the other thread for about its whole
duration; one that releases it, for a scheduler slice. Writes <out>/gil.json and prints one line per backend.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1])
    from mgeo_ros.bench.backends import gil_stall, synthetic_frame
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.predictor import default_model_path
    from mgeo_ros.runtime.preprocess import grid_tokens

    rgb = synthetic_frame(640, 480)
    makers = {'torch-cuda fp16': lambda: Predictor(str(default_model_path()), backend='torch', precision='fp16',
                                                    device='cuda')}
    engine = out / 'engines' / 'default_fp16.engine'
    if engine.is_file():
        makers['tensorrt fp16'] = lambda: Predictor(str(engine), backend='tensorrt')
    rows = {}
    for name, make in makers.items():
        try:
            pred = make()
            image = pred.preprocessor(rgb).copy()
            tokens = grid_tokens(image.shape[3], image.shape[2])
            rows[name] = gil_stall(lambda p=pred, i=image, t=tokens: p.backend.forward(i, t))
        except Exception as exc:  # record it: the other backend still runs
            rows[name] = {'error': f'{type(exc).__name__}: {exc}'}
        print(f'[gil] {name}: {rows[name]}', flush=True)
    (out / 'gil.json').write_text(json.dumps(rows, indent=2))
    return 0 if any('error' not in r for r in rows.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
