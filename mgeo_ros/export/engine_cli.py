"""`mgeo build-engine MODEL.onnx --output OUT.engine [--precision fp16|fp32] [--no-rebuild]`; a dynamic-size ONNX
(the MoGe authors' layout, `mgeo export --dynamic`) also takes `--num-tokens N` and `--camera-sizes WxH,...`."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from mgeo_ros.cli_args import num_tokens, positive_int, size_list
from mgeo_ros.errors import BadInputError


def compute_capability(text: str) -> str:
    """argparse type: SM89 / 8.9, checked here so a typo is refused before TensorRT is imported."""
    from mgeo_ros.runtime.engine_cache import parse_compute_capability

    try:
        return parse_compute_capability(text)[0]
    except BadInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('onnx', help='ONNX file from `mgeo export` (its precision is the engine\'s)')
    parser.add_argument('--output', '-o', required=True, help='engine file; its cache key goes to OUTPUT.json and '
                                                              'the ONNX\'s probe to <OUTPUT stem>.probe.npz')
    parser.add_argument('--precision', choices=('fp16', 'fp32'), default=None,
                        help='the precision you expect; refused (exit 3, with the export command that makes the '
                             'right ONNX) when the ONNX is of the other one. Default: the ONNX\'s')
    parser.add_argument('--fp32', action='store_true', help='same as --precision fp32')
    parser.add_argument('--no-rebuild', action='store_true',
                        help='refuse (exit 3) instead of rebuilding a cached engine whose key does not match')
    parser.add_argument('--workspace-mib', type=positive_int, default=None, help='builder workspace limit in MiB')
    parser.add_argument('--trt-module', default=None,
                        help='Python module of the builder (default tensorrt; tensorrt_rtx_bindings for TensorRT-RTX)')
    parser.add_argument('--compute-capability', type=compute_capability, default=None,
                        help='ahead-of-time target such as SM89 (TensorRT-RTX only; no GPU needed)')
    parser.add_argument('--num-tokens', type=num_tokens, default=1200,
                        help='dynamic ONNX only: the token count fixed in the engine (default 1200)')
    parser.add_argument('--camera-sizes', type=size_list, default=None,
                        help='dynamic ONNX only: comma-separated camera sizes WxH the engine serves (its optimization '
                             'profile spans their token-grid input sizes, opt = the first); default: every aspect '
                             'ratio from 1:2 to 2:1, opt 640x480')
    parser.add_argument('--quiet', action='store_true', help='no build progress')
    parser.add_argument('--json', action='store_true', help='print the result as JSON')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.export.engine import EngineCacheError, PrecisionMismatchError, build_engine
    from mgeo_ros.runtime.backends.tensorrt_backend import EngineProbeError

    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    precision = 'fp32' if args.fp32 else args.precision
    try:
        result = build_engine(args.onnx, args.output, precision=precision, rebuild=not args.no_rebuild,
                              trt_module=args.trt_module, compute_capability=args.compute_capability,
                              workspace_mib=args.workspace_mib, progress=not args.quiet, num_tokens=args.num_tokens,
                              camera_sizes=list(args.camera_sizes) if args.camera_sizes else None)
    except (EngineCacheError, PrecisionMismatchError, EngineProbeError) as e:  # exit 3: documented refusals
        print(f'mgeo build-engine: error: {e}', file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({'path': result.path, 'built': result.built, 'seconds': result.seconds,
                          'reason': result.reason, 'key': result.key}, indent=2))
    else:
        what = f'built in {result.seconds:.1f} s ({result.reason})' if result.built else 'up to date (cache hit)'
        print(f'{result.path}: {what}; key {json.dumps(result.key)}')
    return 0
