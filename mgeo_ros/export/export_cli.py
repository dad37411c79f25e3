"""`mgeo export CHECKPOINT --output OUT.onnx --size WxH [--precision fp16|fp32] [--target engine|onnxruntime]
[--dynamic]`, and `mgeo export --from-onnx FP32.onnx --output OUT.onnx --precision fp16` (no PyTorch needed)."""
from __future__ import annotations

import argparse
import json
import logging
import os

from mgeo_ros.cli_args import float_in, int_in, num_tokens, size_wxh
from mgeo_ros.errors import BadInputError

# what each deployment target gets when --precision is not given: engines want FP16 in the graph (TensorRT 11 and
# TensorRT-RTX have no FP16 flag); ONNX Runtime on CPU computes FP16 graphs in FP32 with extra casts
DEFAULT_PRECISION = {'engine': 'fp16', 'onnxruntime': 'fp32'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='project checkpoint directory (config.json + model.safetensors) or an official MoGe-2 / '
                             'MoGe-3 model.pt')
    parser.add_argument('--from-onnx', default=None, metavar='ONNX',
                        help='instead of a checkpoint: an FP32 MoGe ONNX (the authors\' release or a project export) '
                             'to convert to the FP16 form with its probe (same conversion and budgets; parity against '
                             'the FP32 ONNX on ONNX Runtime; no PyTorch)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic layout (the authors\' recipe): any height/width, num_tokens an int64 input; one '
                             'ONNX/engine for cameras of several sizes (--size then only picks the parity input)')
    parser.add_argument('--output', '-o', required=True, help='ONNX file to write (its probe goes beside it as '
                                                              '<name>.probe.npz)')
    parser.add_argument('--size', type=size_wxh, default=None,
                        help='camera frame size WxH, at least 8x8 (e.g. 640x480); the network input is the token grid '
                             'for its aspect ratio (required for a fixed export; default 640x480 with --dynamic / '
                             '--from-onnx)')
    parser.add_argument('--num-tokens', type=num_tokens, default=1200, help='ViT token budget (default 1200)')
    parser.add_argument('--exact-size', action='store_true',
                        help='use --size itself (rounded to multiples of 14) as the network input')
    parser.add_argument('--batch', type=int_in(1, 64, 'frames'), default=1,
                        help='static batch of the graph: frames of N cameras in one forward (default 1)')
    parser.add_argument('--opset', type=int, default=18, choices=(17, 18, 19, 20), help='ONNX opset (default 18)')
    parser.add_argument('--target', choices=tuple(DEFAULT_PRECISION), default='engine',
                        help='what will run the ONNX: engine (TensorRT; default precision fp16) or onnxruntime '
                             '(default precision fp32)')
    parser.add_argument('--precision', choices=('fp16', 'fp32'), default=None,
                        help='fp16: mixed-precision graph (fp32 islands for LayerNorm, softmax, exp, sigmoid, the '
                             'metric-scale head; fp32 I/O); fp32: plain. Default: by --target')
    parser.add_argument('--max-rel-l2', type=float_in(0.0), default=None,
                        help='parity: fail when an output\'s relative L2 error vs PyTorch exceeds this (default '
                             '1e-4 for fp32, 1e-2 for fp16)')
    parser.add_argument('--max-abs', type=float_in(0.0), default=None,
                        help='parity: fail when an output\'s max abs error vs PyTorch exceeds this (default 1e-2 for '
                             'fp32, unchecked for fp16)')
    parser.add_argument('--min-mask-agree', type=float_in(0.0, 1.0), default=None,
                        help='parity: fail when fewer mask pixels agree (same side of 0.5) (default 0.999 fp32, '
                             '0.99 fp16)')
    parser.add_argument('--no-parity', action='store_true', help='skip the ONNX Runtime parity check')
    parser.add_argument('--no-probe', action='store_true', help='do not write <name>.probe.npz')
    parser.add_argument('--json', action='store_true', help='print the export report as JSON')
    parser.add_argument('--verbose', action='store_true', help='show the exporter\'s own output')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.export.onnx_export import export_onnx

    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if not args.verbose:
        for name in ('torch', 'onnxscript', 'onnx_ir'):
            logging.getLogger(name).setLevel(logging.ERROR)
    precision = args.precision or DEFAULT_PRECISION[args.target]
    if os.path.isdir(args.output):
        raise BadInputError(f'--output {args.output} is a folder, expected an .onnx file path')
    if args.from_onnx:
        from mgeo_ros.export.onnx_export import convert_onnx

        if args.checkpoint:
            raise BadInputError('give either a checkpoint or --from-onnx, not both')
        report = convert_onnx(args.from_onnx, args.output, precision=args.precision or 'fp16',
                              size=args.size or (640, 480), num_tokens=args.num_tokens,
                              parity=not args.no_parity, probe=not args.no_probe)
    else:
        if not args.checkpoint:
            raise BadInputError('a checkpoint (or --from-onnx FILE) is required')
        if not args.size and not args.dynamic:
            raise BadInputError('--size WxH is required for a fixed-size export (or use --dynamic)')
        report = export_onnx(args.checkpoint, args.output, args.size or (640, 480),
                             num_tokens=args.num_tokens, opset=args.opset, exact_size=args.exact_size,
                             parity=not args.no_parity, max_rel_l2=args.max_rel_l2, max_abs=args.max_abs,
                             verbose=args.verbose, precision=precision, min_mask_agree=args.min_mask_agree,
                             probe=not args.no_probe, batch=args.batch, dynamic=args.dynamic)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    w, h = report.input_size
    dynamic = report.metadata.get('dynamic') == '1'
    shape = f'dynamic Bx3xHxW + num_tokens (checked at {w}x{h}, {report.num_tokens} tokens)' if dynamic else \
        f'{args.batch}x3x{h}x{w} ({report.num_tokens} tokens)'
    print(f'wrote {report.path}: {report.precision}, input {shape}, opset {report.opset}, outputs '
          f'{", ".join(report.outputs)}, {report.seconds:.1f} s')
    if report.fp16:
        print(f'  fp16 graph: {report.fp16["fp16_nodes"]} fp16 nodes, {report.fp16["fp32_nodes"]} fp32 '
              f'({", ".join(f"{k[5:]} {v}" for k, v in sorted(report.fp16["reasons"].items()) if k != "fp16")}), '
              f'{report.fp16["casts"]} casts')
    for name, err in report.parity.items():
        agree = f'  mask_agree {err["mask_agree"]:.4%}' if 'mask_agree' in err else ''
        print(f'  parity {name:13s} rel_l2 {err["rel_l2"]:.3g}  max_abs {err["max_abs"]:.3g}  '
              f'max_rel {err["max_rel"]:.3g}{agree}')
    if report.probe:
        print(f'  probe {report.probe}')
    return 0
