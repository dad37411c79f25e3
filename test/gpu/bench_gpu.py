"""One GPU session's measurements for test/gpu/run.sh (not a pytest module): forward latency of the torch-CUDA
backend for the packaged default model and an official-config ViT-S (random weights: speed does not depend on
them), fp32 and fp16, 640x480 frames at 1200 tokens; the cuda-python pinned/device buffer path; and, where TensorRT
is installed, fp16/fp32 strongly typed engines of the default model checked against their probes.

Writes `<out>/results.json` and `<out>/table.md`. Every step records its own failure instead of stopping the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SIZE = (640, 480)
TOKENS = 1200


def _frame() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float32)
    img = np.stack([np.sin(xx / 23.0), np.cos(yy / 17.0), np.sin((xx + yy) / 31.0)], -1) * 100 + 128
    return img.astype(np.uint8)


def _time_predictor(pred, runs: int, warmup: int) -> dict:
    rgb = _frame()
    for _ in range(warmup):
        pred.predict(rgb)
    fwd, total = [], []
    for _ in range(runs):
        p = pred.predict(rgb)
        fwd.append(p.timings_ms['forward'])
        total.append(p.timings_ms['total'])
    mem = pred.backend.peak_device_memory_bytes()
    return {'forward_ms': statistics.median(fwd), 'forward_p95_ms': float(np.percentile(fwd, 95)),
            'total_ms': statistics.median(total), 'peak_mib': None if mem is None else round(mem / 2**20, 1),
            'input': 'x'.join(map(str, pred.network_size(*SIZE)))}


def bench_torch(model_name: str, model, precision: str, runs: int, warmup: int) -> dict:
    from mgeo_ros.runtime import Predictor

    pred = Predictor(model, backend='torch', num_tokens=TOKENS, precision=precision, device='cuda')
    row = {'model': model_name, 'backend': 'torch-cuda', 'precision': precision}
    row.update(_time_predictor(pred, runs, warmup))
    return row


def cuda_python_roundtrip() -> dict:
    """Pinned host -> device -> host through cuda-python on one stream, as the TensorRT backend does."""
    import ctypes

    from mgeo_ros.runtime.backends.tensorrt_backend import _Cuda, import_cudart

    cuda = _Cuda(import_cudart())
    kinds = cuda.rt.cudaMemcpyKind
    n = 3 * 420 * 560 * 4
    host_a, host_b, dev = cuda('cudaMallocHost', n), cuda('cudaMallocHost', n), cuda('cudaMalloc', n)
    stream = cuda('cudaStreamCreate')
    try:
        a = np.frombuffer((ctypes.c_char * n).from_address(int(host_a)), np.float32)
        b = np.frombuffer((ctypes.c_char * n).from_address(int(host_b)), np.float32)
        a[:] = np.arange(a.size, dtype=np.float32)
        b[:] = 0
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            cuda('cudaMemcpyAsync', dev, host_a, n, kinds.cudaMemcpyHostToDevice, stream)
            cuda('cudaMemcpyAsync', host_b, dev, n, kinds.cudaMemcpyDeviceToHost, stream)
            cuda('cudaStreamSynchronize', stream)
            times.append((time.perf_counter() - t0) * 1e3)
        return {'bytes': n, 'roundtrip_ms': statistics.median(times), 'equal': bool(np.array_equal(a, b))}
    finally:
        cuda('cudaFree', dev)
        cuda('cudaFreeHost', host_a)
        cuda('cudaFreeHost', host_b)
        cuda('cudaStreamDestroy', stream)


def tensorrt_rows(default_model: str, work: Path, runs: int, warmup: int) -> list[dict]:
    import tensorrt as trt

    from mgeo_ros.export.engine import build_engine
    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.runtime import Predictor

    rows = []
    for precision in ('fp16', 'fp32'):
        onnx_path = str(work / f'default_{precision}.onnx')
        rep = export_onnx(default_model, onnx_path, SIZE, num_tokens=TOKENS, precision=precision)
        engine = str(work / f'default_{precision}.engine')
        t0 = time.perf_counter()
        build_engine(onnx_path, engine, precision=precision, progress=False)  # runs the probe after the build
        pred = Predictor(engine, backend='tensorrt')
        row = {'model': 'default', 'backend': f'tensorrt {trt.__version__}', 'precision': precision,
               'build_s': round(time.perf_counter() - t0, 1), 'engine_mib': round(os.path.getsize(engine) / 2**20, 1),
               'probe': pred.backend.probe_check.summary() if pred.backend.probe_check else 'no probe',
               'onnx_parity': {k: v['rel_l2'] for k, v in rep.parity.items()}}
        row.update(_time_predictor(pred, runs, warmup))
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--runs', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=5)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset
    from mgeo_ros.runtime.predictor import default_model_path

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    result: dict = {'gpu': gpu, 'torch': torch.__version__, 'cuda': torch.version.cuda,
                    'python': platform.python_version(), 'rows': [], 'errors': {}}

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            value = fn()
            print(f'[gpu] {name}: ok in {time.perf_counter() - t0:.1f} s', flush=True)
            return value
        except Exception as e:  # record and go on: one failed step must not hide the others
            result['errors'][name] = f'{type(e).__name__}: {e}'
            print(f'[gpu] {name}: FAILED {e}\n{traceback.format_exc()}', file=sys.stderr, flush=True)
            return None

    default = str(default_model_path())
    torch.manual_seed(0)
    vits = build_model(preset('vits')).eval()
    for name, model in (('default', default), ('vits (official config, random)', vits)):
        for precision in ('fp32', 'fp16'):
            row = step(f'torch {name} {precision}', lambda m=model, n=name, p=precision:
                       bench_torch(n, m, p, args.runs, args.warmup))
            if row:
                result['rows'].append(row)
    import importlib.util

    result['skipped'] = {}
    if importlib.util.find_spec('cuda') is None:
        result['skipped']['cuda-python'] = 'cuda-python not installed (put its wheel in test/gpu/wheels)'
    else:
        result['cuda_python'] = step('cuda-python buffers', cuda_python_roundtrip)
    if importlib.util.find_spec('tensorrt') is None or 'cuda-python' in result['skipped']:
        result['skipped']['tensorrt'] = 'tensorrt or cuda-python not installed'
    else:
        trt_rows = step('tensorrt default fp16/fp32', lambda: tensorrt_rows(default, out / 'engines', args.runs,
                                                                              args.warmup))
        result['rows'].extend(trt_rows or [])
    (out / 'results.json').write_text(json.dumps(result, indent=2))
    lines = [f'GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); 640x480 frames, 1200 tokens; '
             f'median of {args.runs} after {args.warmup} warm-up', '',
             '| model | backend | precision | network input | forward ms (median) | p95 | total ms | peak MiB |',
             '|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['input']} | {r['forward_ms']:.2f} | "
                     f"{r['forward_p95_ms']:.2f} | {r['total_ms']:.2f} | {r['peak_mib']} |")
    cp = result.get('cuda_python')
    lines.append('')
    lines.append(f'cuda-python pinned H2D+D2H of {cp["bytes"]} B: {cp["roundtrip_ms"]:.3f} ms, equal={cp["equal"]}'
                 if cp else f'cuda-python: {result["errors"].get("cuda-python buffers", "not run")}')
    for r in result['rows']:
        if 'probe' in r:
            lines.append(f"TensorRT {r['precision']}: engine {r['engine_mib']} MiB, built+verified in "
                         f"{r['build_s']} s, probe {r['probe']}")
    for k, v in result['skipped'].items():
        lines.append(f'skipped {k}: {v}')
    for k, v in result['errors'].items():
        lines.append(f'FAILED {k}: {v}')
    (out / 'table.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 1 if result['errors'] and not result['rows'] else 0


if __name__ == '__main__':
    sys.exit(main())
