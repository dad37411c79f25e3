"""`mgeo export CHECKPOINT --output OUT.onnx --size WxH [--precision fp16|fp32] [--target engine|onnxruntime]`."""
from __future__ import annotations

import argparse
import json
import logging
import os

from mgeo_ros.cli_args import float_in, int_in, num_tokens
from mgeo_ros.errors import BadInputError

# what each deployment target gets when --precision is not given: engines want FP16 in the graph (TensorRT 11 and
# TensorRT-RTX have no FP16 flag); ONNX Runtime on CPU computes FP16 graphs in FP32 with extra casts
DEFAULT_PRECISION = {'engine': 'fp16', 'onnxruntime': 'fp32'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='project checkpoint directory (config.json + model.safetensors) or an '
                                           'official MoGe-2 model.pt')
    parser.add_argument('--output', '-o', required=True, help='ONNX file to write (its probe goes beside it as '
                                                              '<name>.probe.npz)')
    parser.add_argument('--size', required=True, help='camera frame size WxH (e.g. 640x480); the network input is '
                                                      'the token grid for its aspect ratio')
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
    from mgeo_ros.export.onnx_export import export_onnx, parse_size

    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if not args.verbose:
        for name in ('torch', 'onnxscript', 'onnx_ir'):
            logging.getLogger(name).setLevel(logging.ERROR)
    precision = args.precision or DEFAULT_PRECISION[args.target]
    size = parse_size(args.size)
    if os.path.isdir(args.output):
        raise BadInputError(f'--output {args.output} is a folder, expected an .onnx file path')
    report = export_onnx(args.checkpoint, args.output, size, num_tokens=args.num_tokens,
                         opset=args.opset, exact_size=args.exact_size, parity=not args.no_parity,
                         max_rel_l2=args.max_rel_l2, max_abs=args.max_abs, verbose=args.verbose,
                         precision=precision, min_mask_agree=args.min_mask_agree, probe=not args.no_probe,
                         batch=args.batch)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    w, h = report.input_size
    print(f'wrote {report.path}: {report.precision}, input {args.batch}x3x{h}x{w} ({report.num_tokens} tokens), opset '
          f'{report.opset}, outputs {", ".join(report.outputs)}, {report.seconds:.1f} s')
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
