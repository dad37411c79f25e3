"""`mgeo check-engine MODEL --probe PROBE`: does MODEL (a TensorRT .engine, or an .onnx run on ONNX Runtime)
reproduce PROBE? Exit 0 within budget, 3 beyond it (another model's probe is beyond it), 1 when it cannot run."""
from __future__ import annotations

import argparse
import os
import sys

from mgeo_ros.errors import MgeoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help='.engine / .plan (TensorRT) or .onnx (ONNX Runtime, CPU unless --device)')
    parser.add_argument('--probe', default=None, help='probe file (default: <MODEL stem>.probe.npz beside MODEL)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: the backend\'s best)')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.runtime.predictor import model_kind
    from mgeo_ros.runtime.probe import BUDGETS, ProbeError, check_backend, load_probe, probe_path

    probe_file = args.probe or probe_path(args.model)
    try:
        if not os.path.isfile(args.model):
            raise MgeoError(f'{args.model}: no such file (expected an .engine / .plan or an .onnx written by '
                            '`mgeo export`); check the path')
        kind = model_kind(args.model)
        if kind not in ('engine', 'onnx'):
            raise MgeoError(f'{args.model}: expected an .engine / .plan (TensorRT) or an .onnx file')
        if kind == 'onnx':
            from mgeo_ros.runtime.model_layout import check_onnx_layout

            check_onnx_layout(args.model)
        if not os.path.isfile(probe_file):
            raise MgeoError(f'no probe for {args.model}: {probe_file} does not exist (`mgeo export` writes it beside '
                            'the .onnx and build-engine copies it beside the engine); pass --probe PROBE')
        probe = load_probe(probe_file)
        if kind == 'engine':
            from mgeo_ros.runtime.backends.tensorrt_backend import TensorRTBackend

            backend = TensorRTBackend(args.model, device=args.device, check_probe=False)
            where = f'TensorRT {backend._trt.__version__} on {backend.gpu_name}'
        elif kind == 'onnx':
            from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

            backend = OnnxRuntimeBackend(args.model, device=args.device)
            where = f'ONNX Runtime ({backend.device})'
        else:
            raise MgeoError(f'{args.model}: expected an .engine or .onnx file')
        check = check_backend(backend, probe)
    except (ProbeError, MgeoError) as e:  # exit 1: cannot run (3 is reserved for "ran, beyond budget")
        print(f'mgeo check-engine: error: {e}', file=sys.stderr)
        return 1
    print(f'{args.model} ({where}) vs {probe_file}:')
    for line in check.lines():
        print(f'  {line}')
    budgets = ', '.join(f'{k} {m} <= {b:g}' for k, (m, b) in BUDGETS.items())
    if check.ok:
        print(f'PASS: within budget ({check.summary()}; budgets {budgets})')
        return 0
    print(f'FAIL: beyond budget: {check.summary()}')
    return 3
