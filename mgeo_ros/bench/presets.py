"""Model benchmark (not a test): parameters per preset, CPU ms per forward, and how far onnx mode is from default.

    .venv/bin/python -m mgeo_ros.bench.presets [--threads 2] [--runs 3] [--skip-vits] [--onnx]

Random weights; timings are medians of `--runs` forwards after one warm-up. With `--onnx` the 'small' preset is also
exported (dynamo, onnx mode, static 320x240) and timed under ONNX Runtime CPU, next to the dynamic-size export of
the same model (`mgeo export --dynamic`: any size, num_tokens an input) on the same input, to show what the one-file-
for-every-camera-size layout costs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mgeo_ros.model.configs import PRESETS, preset
from mgeo_ros.model.moge2 import MoGeModel


def count_parameters(name: str) -> int:
    with torch.device('meta'):
        return sum(p.numel() for p in MoGeModel(**preset(name)).parameters())


def time_forward(model: MoGeModel, height: int, width: int, num_tokens: int, runs: int) -> dict[str, float]:
    """Median wall ms and process CPU ms per forward (CPU time stays meaningful on a busy machine)."""
    image = torch.rand(1, 3, height, width)
    wall, cpu = [], []
    with torch.inference_mode():
        model(image, num_tokens)
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            model(image, num_tokens)
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return {'wall_ms': round(statistics.median(wall), 1), 'cpu_ms': round(statistics.median(cpu), 1)}


def mode_difference(model: MoGeModel, height: int, width: int, num_tokens: int) -> dict[str, float]:
    """Max abs and relative L2 difference between onnx_compatible_mode and the default mode, per output."""
    image = torch.rand(1, 3, height, width)
    outs = []
    with torch.inference_mode():
        for mode in (False, True):
            model.onnx_compatible_mode = mode
            outs.append(model(image, num_tokens))
    model.onnx_compatible_mode = False
    result = {}
    for key in outs[0]:
        d = outs[1][key] - outs[0][key]
        result[f'{key}_max_abs'] = d.abs().max().item()
        result[f'{key}_rel_l2'] = (d.norm() / outs[0][key].norm()).item()
    return result


def time_onnxruntime(model: MoGeModel, height: int, width: int, num_tokens: int, threads: int, runs: int,
                     dynamic: bool = False) -> dict[str, float]:
    """ONNX Runtime CPU ms of the model exported fixed-size (token count baked in) or `dynamic` (any size, the token
    count an int64 input, as `mgeo export --dynamic` writes it), on the same height x width input."""
    import onnxruntime as ort

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model(image, num_tokens)
            return tuple(out[k] for k in sorted(out))

    class Dynamic(Fixed):
        def forward(self, image, tokens):
            out = self.model(image, tokens)
            return tuple(out[k] for k in sorted(out))

    model.onnx_compatible_mode = True
    image = torch.rand(1, 3, height, width)
    tokens = torch.tensor(num_tokens, dtype=torch.int64)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / 'm.onnx')
        if dynamic:
            axes = {2: torch.export.Dim('height', min=14, max=4096), 3: torch.export.Dim('width', min=14, max=4096)}
            torch.onnx.export(Dynamic().eval(), (image, tokens), path, dynamo=True, input_names=['image', 'num_tokens'],
                              dynamic_shapes={'image': axes, 'tokens': None})
        else:
            torch.onnx.export(Fixed().eval(), (image,), path, dynamo=True, input_names=['image'])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    model.onnx_compatible_mode = False
    feed = {'image': image.numpy()}
    if dynamic:
        feed['num_tokens'] = tokens.numpy()
    session.run(None, feed)
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        session.run(None, feed)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {'wall_ms': round(statistics.median(wall), 1), 'cpu_ms': round(statistics.median(cpu), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--skip-vits', action='store_true')
    parser.add_argument('--onnx', action='store_true', help='also time the small preset under ONNX Runtime')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report: dict = {'threads': args.threads, 'parameters': {n: count_parameters(n) for n in PRESETS}, 'ms': {}}
    print(json.dumps(report['parameters']), flush=True)

    small = MoGeModel(**preset('small')).eval()
    for n in (300, 500, 1200):
        key = f'small_320x240_{n}tok_torch'
        report['ms'][key] = time_forward(small, 240, 320, n, args.runs)
        print(key, report['ms'][key], flush=True)
    if args.onnx:
        for n in (300, 500):
            key = f'small_320x240_{n}tok_ort'
            for dynamic in (False, True):
                row = key + ('_dynamic' if dynamic else '')
                report['ms'][row] = time_onnxruntime(small, 240, 320, n, args.threads, args.runs, dynamic)
                print(row, report['ms'][row], flush=True)
    if not args.skip_vits:
        vits = MoGeModel(**preset('vits')).eval()
        for n in (1200, 3600):
            key = f'vits_640x480_{n}tok_torch'
            report['ms'][key] = time_forward(vits, 480, 640, n, args.runs)
            print(key, report['ms'][key], flush=True)
        report['vits_mode_difference'] = {n: mode_difference(vits, 480, 640, n) for n in (1200, 3600)}
    report['small_mode_difference'] = {n: mode_difference(small, 240, 320, n) for n in (300, 1200)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
