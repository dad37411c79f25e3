"""`mgeo bench`: its arguments and what runs: the backends table (`backends`), or with `--node` the node's own cost
(`node`) or the node under a live stream (`live`), with `--codec` the compressedDepth codec (`codec`), or with
`--scale-fit` the scale anchors' fit (`scale_fit`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mgeo_ros.bench import backends
from mgeo_ros.cli_args import int_in, non_negative_int, num_tokens, positive_int, size_wxh
from mgeo_ros.errors import MgeoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', nargs='?', help='checkpoint dir / .pt / .onnx / .engine, or preset:NAME')
    parser.add_argument('--default-model', action='store_true',
                        help='use the packaged default model (share/mgeo_ros/models/default)')
    parser.add_argument('--backend', action='append', choices=('torch', 'onnxruntime', 'tensorrt'),
                        help='backend(s) to measure (repeatable; default: every one that is available)')
    parser.add_argument('--size', type=size_wxh, action='append', help='frame size WxH (repeatable; default 640x480)')
    parser.add_argument('--num-tokens', type=num_tokens, default=1200, help='ViT token budget (default 1200)')
    parser.add_argument('--runs', type=positive_int, default=None, help='timed runs per row (default 10)')
    parser.add_argument('--warmup', type=non_negative_int, default=None,
                        help='untimed warm-up runs per row (default 2)')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='torch/ONNX Runtime CPU threads (default: all)')
    parser.add_argument('--precision', choices=('fp32', 'fp16'), default=None,
                        help='fp16 on CUDA backends (torch autocast, FP16 engine); default fp16 on GPU, fp32 on CPU')
    parser.add_argument('--no-baseline', action='store_true', help='skip the reference-pipeline baseline row')
    parser.add_argument('--cache-dir', default=None, help='where exported ONNX files and engines are cached')
    parser.add_argument('--json', action='store_true', help='print JSON instead of the table')
    parser.add_argument('--codec', action='store_true',
                        help='instead, the compressedDepth codec: bytes per frame of png (levels 1, 3) and rvl '
                        'against raw, encode and decode ms, on the demo\'s synthetic depth (default sizes 640x480 '
                        'and 1280x720; no model)')
    fit = parser.add_argument_group('the scale anchors\' fit (--scale-fit; see mgeo_ros/bench/scale_fit.py)')
    fit.add_argument('--scale-fit', action='store_true',
                     help='time the per-frame scale fit of each anchor kind (cloud, sparse depth image, scan) and of '
                     'the ground plane at --size (default 640x480); no model needed')
    fit.add_argument('--anchor-points', type=positive_int, default=10_000,
                     help='--scale-fit: anchor points per frame (default 10000)')
    node = parser.add_argument_group('the node as a robot runs it (--node; see mgeo_ros/bench/node.py)')
    node.add_argument('--node', action='store_true',
                      help='run mgeo_depth_node with its forward replayed from recorded network outputs after a '
                      'GIL-free wait of --forward-ms, fed by a camera and read by a subscriber in another process: '
                      'published rate against the engine\'s, own CPU per frame against the transport floor, latency '
                      '(default sizes 640x480 and 1280x720, default model: the packaged one)')
    node.add_argument('--forward-ms', default='30,50', metavar='MS[,MS...]',
                      help='--node: the replayed forward\'s wait, one value or one per --size (default 30,50: the '
                      'engine rates 33 and 20 Hz); `real`: run the model itself on --backend (a GPU engine)')
    node.add_argument('--seconds', type=float, default=10.0, help='--node: seconds streamed per measurement (10)')
    node.add_argument('--camera-hz', type=float, default=60.0,
                      help='--node: camera rate of the main measurement, above the engine\'s (60)')
    node.add_argument('--rates', default='', metavar='HZ[,HZ...]',
                      help='--node: also feed the first size at these camera rates (e.g. 5,30,100): published rate '
                      'and latency median at each')
    node.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                      help='--node: a node parameter (repeatable), on top of the bench\'s organized xyzrgb cloud')
    node.add_argument('--param-set', action='append', default=[], metavar='NAME=VALUE[,NAME=VALUE...]',
                      help='--node: measure each size once per set (repeatable), e.g. the outputs a client subscribes '
                      'and their stride: publish_normals=false,points_stride=4; on top of --param')
    node.add_argument('--outputs', action='append', default=[], metavar='NAME[,NAME...]',
                      help='--node: the outputs the subscriber takes (repeatable: one measurement per set), from '
                      'depth, info, points, mask, confidence, normals; the node makes only what is subscribed '
                      '(default: all)')
    node.add_argument('--compressed', choices=('raw', 'jpeg'), action='append', default=None,
                      help='--node: jpeg = the camera sends JPEG CompressedImage frames (image/compressed; the node '
                      'runs with image_transport:=compressed), raw = rgb8 Image (the default); repeatable: each '
                      'size is measured with each')
    node.add_argument('--save', default=None, metavar='FILE',
                      help='--node: also write the JSON report to FILE (the sizing guide\'s table is made of it: '
                      'python -m mgeo_ros.bench.sizing)')
    node.add_argument('--jpeg-quality', type=int_in(1, 100), default=80,
                      help='--node --compressed jpeg: the camera\'s JPEG quality (default 80)')
    node.add_argument('--frames', type=int, default=4, help='--node: distinct frames recorded and replayed (4)')
    node.add_argument('--live', type=float, default=0.0, metavar='SECONDS',
                      help='--node: instead, run the real node (subprocess, real model) fed at --rate for SECONDS '
                      'per --live-threads value: published rate and latency p95 against the forward-bound maximum')
    node.add_argument('--rate', type=float, default=10.0, help='--live: input rate in Hz (10)')
    node.add_argument('--live-threads', default='0', metavar='N[,N...]',
                      help='--live: intra_op_threads values to run the node with (0 = the default: cores - 1)')


def run_node(args) -> dict:
    """`--node`: see bench/node.py (the node's own per-frame cost) and bench/live.py (`--live`)."""
    if not args.model:
        args.default_model = True
    model, label = backends.resolve_model(args)
    sizes = args.size or ([(640, 480)] if args.live else [(640, 480), (1280, 720)])
    params = _assignments(args.param, '--param')
    param_sets = [_assignments([a for a in item.split(',') if a.strip()], '--param-set') for item in args.param_set]
    params.setdefault('num_tokens', args.num_tokens)
    backend = (args.backend or ['auto'])[0]
    if args.live:
        from mgeo_ros.bench.live import run_live

        threads = [int(t) for t in args.live_threads.split(',')]
        return run_live(model, label, sizes[0], args.rate, args.live, threads,
                        'torch' if backend == 'auto' else backend, params)
    from mgeo_ros.bench.node import run_node_bench

    forward = None if args.forward_ms.strip() == 'real' else [float(v) for v in args.forward_ms.split(',')]
    rates = [float(v) for v in args.rates.split(',') if v.strip()]
    inputs = [None if c == 'raw' else c for c in args.compressed or ['raw']]
    return run_node_bench(model, label, sizes, forward, args.seconds, args.camera_hz, rates, args.frames, backend,
                          params, inputs, args.jpeg_quality, param_sets or None,
                          [[n.strip() for n in item.split(',') if n.strip()] for item in args.outputs] or None)


def _assignments(items: list[str], flag: str) -> dict:
    """NAME=VALUE strings -> {name: value} (bool, int, float or string, like `-p key:=value`)."""
    from mgeo_ros.bench.node import parse_value

    out = {}
    for item in items:
        name, sep, value = item.partition('=')
        if not sep or not name.strip():
            raise MgeoError(f'{flag} wants NAME=VALUE, got {item!r}')
        out[name.strip()] = parse_value(value)
    return out


def run_codec(args: argparse.Namespace) -> int:
    """`--codec`: see bench/codec.py."""
    from mgeo_ros.bench.codec import format_codec_table, run_codec_bench

    sizes = args.size or [(640, 480), (1280, 720)]
    report = run_codec_bench(sizes, 10 if args.runs is None else args.runs, 2 if args.warmup is None else args.warmup)
    print(json.dumps(report, indent=2) if args.json else format_codec_table(report))
    return 0


def run_scale_fit(args: argparse.Namespace) -> int:
    """`--scale-fit`: see bench/scale_fit.py."""
    from mgeo_ros.bench.scale_fit import format_scale_fit_table, run_scale_fit_bench

    sizes = args.size or [(640, 480)]
    report = run_scale_fit_bench(sizes, args.anchor_points, 50 if args.runs is None else args.runs,
                                 5 if args.warmup is None else args.warmup)
    print(json.dumps(report, indent=2) if args.json else format_scale_fit_table(report))
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    if args.codec:
        return run_codec(args)
    if args.scale_fit:
        return run_scale_fit(args)
    if args.node:
        try:
            report = run_node(args)
        except MgeoError as e:
            print(f'mgeo bench --node: {e}', file=sys.stderr)
            return 2
        if getattr(args, 'save', None):
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(json.dumps(report, indent=2) + '\n')
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            from mgeo_ros.bench.live import format_live_table
            from mgeo_ros.bench.node import format_node_table

            print(format_live_table(report) if args.live else format_node_table(report))
        return 0
    args.runs = 10 if args.runs is None else args.runs
    args.warmup = 2 if args.warmup is None else args.warmup
    try:
        report = backends.run_bench(args)
    except MgeoError as e:
        print(f'mgeo bench: {e}', file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else backends.format_table(report))
    if not any(r['backend'] in backends.BACKENDS for r in report['rows']):  # no backend could run the model
        reasons = '; '.join(f'{b}: {why}' for b, why in report['unavailable'].items()) or 'no backend to run'
        print(f'mgeo bench: nothing measured ({reasons})', file=sys.stderr)
        return 1
    return 0
