"""`mgeo export CHECKPOINT --output OUT.onnx --size WxH [--num-tokens N] [--opset 18] [--batch N]`."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from mgeo_ros.errors import MgeoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='project checkpoint directory (config.json + model.safetensors) or an '
                                           'official MoGe-2 model.pt')
    parser.add_argument('--output', '-o', required=True, help='ONNX file to write')
    parser.add_argument('--size', required=True, help='camera frame size WxH (e.g. 640x480); the network input is '
                                                      'the token grid for its aspect ratio')
    parser.add_argument('--num-tokens', type=int, default=1200, help='ViT token budget (default 1200)')
    parser.add_argument('--exact-size', action='store_true',
                        help='use --size itself (rounded to multiples of 14) as the network input')
    parser.add_argument('--batch', type=int, default=1,
                        help='static batch of the graph: frames of N cameras in one forward (default 1)')
    parser.add_argument('--opset', type=int, default=18, choices=(17, 18, 19, 20), help='ONNX opset (default 18)')
    parser.add_argument('--max-rel-l2', type=float, default=1e-4,
                        help='parity: fail when an output\'s relative L2 error vs PyTorch exceeds this (default 1e-4)')
    parser.add_argument('--max-abs', type=float, default=1e-2,
                        help='parity: fail when an output\'s max abs error vs PyTorch exceeds this (default 1e-2)')
    parser.add_argument('--no-parity', action='store_true', help='skip the ONNX Runtime parity check')
    parser.add_argument('--json', action='store_true', help='print the export report as JSON')
    parser.add_argument('--verbose', action='store_true', help='show the exporter\'s own output')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.export.onnx_export import export_onnx, parse_size

    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if not args.verbose:
        logging.getLogger('torch').setLevel(logging.ERROR)
    try:
        report = export_onnx(args.checkpoint, args.output, parse_size(args.size), num_tokens=args.num_tokens,
                             opset=args.opset, exact_size=args.exact_size, parity=not args.no_parity,
                             max_rel_l2=args.max_rel_l2, max_abs=args.max_abs, verbose=args.verbose,
                             batch=args.batch)
    except MgeoError as e:
        print(f'mgeo export: {e}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    w, h = report.input_size
    print(f'wrote {report.path}: input {args.batch}x3x{h}x{w} ({report.num_tokens} tokens), opset {report.opset}, '
          f'outputs {", ".join(report.outputs)}, {report.seconds:.1f} s')
    for name, err in report.parity.items():
        print(f'  parity {name:13s} max_abs {err["max_abs"]:.3g}  max_rel {err["max_rel"]:.3g}  '
              f'rel_l2 {err["rel_l2"]:.3g}')
    return 0
