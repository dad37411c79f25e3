"""`mgeo eval MODEL --data PATH`: score a model on a folder dataset, a synthetic split or a bag, offline.

Frames run through the node's camera session with the node's parameters (`--params-file`, `--param`): the score is
that of the depth the node publishes with those settings. Writes DIR/metrics.json (the settings used, per-frame and
mean metrics of the model and the baselines) and DIR/report/*.png, and prints the settings and a summary table."""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from mgeo_ros.cli_args import float_in, non_negative_int, num_tokens, positive_int
from mgeo_ros.errors import BadInputError

SYNTH_SPEC = re.compile(r'^synth:(\d+):(-?\d+)(?::(\d+)x(\d+))?$')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help='checkpoint directory, official MoGe-2 .pt, .onnx or .engine')
    parser.add_argument('--data', required=True,
                        help='folder dataset; bag (directory with metadata.yaml, or .mcap/.db3); '
                             'or synth:COUNT:SEED[:WxH] (procedural scenes rendered on the fly)')
    parser.add_argument('--params-file', dest='params_files', action='append', default=[], metavar='FILE',
                        help='the node\'s ROS params file (`/**:` or `mgeo_depth_node:` with `ros__parameters:`); '
                             'frames are scored as the node publishes them with these settings; repeatable')
    parser.add_argument('--param', dest='params', action='append', default=[], metavar='NAME=VALUE',
                        help='one node parameter, after the params files (e.g. min_confidence=0.3); repeatable')
    parser.add_argument('--backend', default=None, choices=('auto', 'torch', 'onnxruntime', 'tensorrt'),
                        help='inference backend (default: the node parameter `backend`, auto)')
    parser.add_argument('--out', default='eval_out', help='output directory (default: eval_out)')
    parser.add_argument('--gt-intrinsics', dest='gt_intrinsics', action=argparse.BooleanOptionalAction,
                        default=None, help='give the model the GT camera (--gt-intrinsics) or let it recover the '
                                           'camera (--no-gt-intrinsics); default: both, as MoGe reports')
    parser.add_argument('--num-tokens', type=num_tokens, default=None,
                        help='ViT token budget (default: the node parameter `num_tokens`, 1200)')
    parser.add_argument('--limit', type=positive_int, default=None, help='evaluate only the first N frames')
    parser.add_argument('--split', default=None, help='folder datasets: the split to read (e.g. val)')
    parser.add_argument('--image-topic', default=None, help='bags: image topic (default: the dataset reader\'s)')
    parser.add_argument('--depth-topic', default=None,
                        help='bags: GT depth topic (Image 32FC1 m or 16UC1 mm, or compressedDepth)')
    parser.add_argument('--info-topic', default=None, help='bags: camera_info topic')
    parser.add_argument('--constant-depth', type=float_in(1e-6, unit='m'), default=None,
                        help='depth (m) of the constant baseline, e.g. the median of the training depths; default: '
                             'median of the per-frame GT medians of the evaluated frames')
    parser.add_argument('--sequence', action=argparse.BooleanOptionalAction, default=None,
                        help='treat frames as a video (temporal metrics, scale-over-time plot); default: bags only')
    parser.add_argument('--report-frames', type=non_negative_int, default=4, help='frames with PNG panels (default 4)')
    parser.add_argument('--align-anchors', type=int, default=None,
                        help='anchors tried by the affine ROE alignments (default 256; 0 = every sample, MoGe\'s '
                             'full search, ~25x slower on a CPU)')
    parser.add_argument('--mask-threshold', type=float_in(0.0, 1.0), default=None,
                        help='validity probability above which a predicted pixel is scored (default: the node '
                             'parameter `mask_threshold`, 0.5; 0 scores every pixel with positive depth, like MoGe\'s '
                             'apply_mask=False)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: the backend\'s best)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    anchors = parser.add_argument_group('scale anchors (also scores the depth at the scale the robot\'s sensors give)')
    anchors.add_argument('--scale-anchor', action='append', default=[], metavar='SOURCE:TOPIC',
                         help='depth:TOPIC, scan:TOPIC, points:TOPIC, range:TOPIC (bags) or '
                              'ground:HEIGHT[,PITCH[,ROLL]] (m, deg); repeat it for a fallback order (the model\'s '
                              'own scale always last), as the node\'s scale_source')
    anchors.add_argument('--scale-anchor-extrinsics', default=None, metavar='X,Y,Z,QX,QY,QZ,QW',
                         help='the scan/points/range sensor\'s pose in the camera\'s optical frame (default: the node '
                              'parameter scale_anchor_extrinsics, else the bag\'s /tf_static from the message '
                              'frame_id, identity when it is the camera\'s)')
    anchors.add_argument('--scale-anchor-min-points', type=positive_int, default=None,
                         help='matched anchors a fit needs (default: the node parameter scale_anchor_min_points, 20; '
                              'a range reading needs 1)')
    anchors.add_argument('--scale-anchor-max-age', type=float_in(1e-3, unit='s'), default=None,
                         help='largest stamp difference between a frame and its anchors (default: the node parameter '
                              'scale_anchor_max_age, 0.1 s)')


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml; a folder of .mcap/.db3 files without one is a damaged bag, reported as
    such) or a single .mcap / .db3 file."""
    if path.is_dir():
        return (path / 'metadata.yaml').is_file() or any(p.suffix in ('.mcap', '.db3') for p in path.iterdir())
    return path.suffix in ('.mcap', '.db3')


def open_dataset(spec: str, *, split: str | None = None, image_topic: str | None = None,
                 depth_topic: str | None = None, info_topic: str | None = None):
    """(dataset, is_sequence) for a --data value: synth:COUNT:SEED[:WxH], a bag, or a folder dataset."""
    match = SYNTH_SPEC.match(spec)
    if match:
        from mgeo_ros.train.data import SyntheticDataset
        count, seed = int(match.group(1)), int(match.group(2))
        kwargs = {}
        if match.group(3):
            kwargs['size'] = (int(match.group(3)), int(match.group(4)))
        return SyntheticDataset(count, seed, **kwargs), False
    if spec.startswith('synth:'):
        raise BadInputError(f'--data {spec!r}: expected synth:COUNT:SEED or synth:COUNT:SEED:WxH')
    path = Path(spec)
    if not path.exists():
        raise BadInputError(f'--data {spec!r} does not exist (expected a folder dataset, a bag, or '
                            'synth:COUNT:SEED[:WxH])')
    if is_bag(path):
        from mgeo_ros.train.data import BagDataset
        topics = {k: v for k, v in (('image_topic', image_topic), ('depth_topic', depth_topic),
                                    ('info_topic', info_topic)) if v is not None}
        return BagDataset(path, **topics), True
    from mgeo_ros.train.data import FolderDataset
    return FolderDataset(path, split=split), False


def _json_safe(value):
    """NaN/inf -> None so metrics.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _scale_anchors(args: argparse.Namespace, cfg: dict, dataset, bag: bool):
    """(AnchorSources, frame index -> stamp s) for --scale-anchor, or (None, None) without it; what the flags
    leave out comes from the node parameters (`cfg`)."""
    if not args.scale_anchor:
        return None, None
    from mgeo_ros.eval.anchored import AnchorSources, image_frame_id, parse_extrinsics

    given = args.scale_anchor_extrinsics
    extrinsics = parse_extrinsics(cfg['scale_anchor_extrinsics'] if given is None else given)
    min_points = args.scale_anchor_min_points or cfg['scale_anchor_min_points']
    max_age = args.scale_anchor_max_age or cfg['scale_anchor_max_age']
    camera_frame = image_frame_id(args.data, dataset.image_topic) if bag else ''
    sources = AnchorSources.from_specs(args.scale_anchor, args.data if bag else None, camera_frame, extrinsics,
                                       min_points, max_age)
    stamp_s = (lambda i: dataset.stamp_ns(i) * 1e-9) if bag else None
    return sources, stamp_s


def node_settings(args: argparse.Namespace) -> dict:
    """The node's parameters eval runs with: defaults, --params-file, --param, then this command's own flags
    (the model, --backend, --num-tokens, --mask-threshold) where given."""
    from mgeo_ros.node_params import node_settings as settings

    cfg = settings(args.params_files, args.params)
    cfg['model'] = str(args.model)
    for flag, name in (('backend', 'backend'), ('num_tokens', 'num_tokens'), ('mask_threshold', 'mask_threshold')):
        if getattr(args, flag) is not None:
            cfg[name] = getattr(args, flag)
    return cfg


def settings_line(cfg: dict) -> str:
    """The node parameters that differ from their defaults, for the printed header."""
    from mgeo_ros.node_params import defaults

    changed = {k: v for k, v in cfg.items() if k != 'model' and defaults().get(k) != v}
    return 'node parameters: ' + (', '.join(f'{k}={v}' for k, v in changed.items()) or 'the defaults')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.eval import metrics
    from mgeo_ros.eval.evaluate import evaluate, summary_table
    from mgeo_ros.eval.node_frames import NodeFrames, node_model
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.camera_session import backend_choice
    from mgeo_ros.runtime.devices import set_opencv_threads

    cfg = node_settings(args)

    dataset, is_sequence = open_dataset(args.data, split=args.split, image_topic=args.image_topic,
                                        depth_topic=args.depth_topic, info_topic=args.info_topic)
    if args.gt_intrinsics is None:
        modes = ('gt_intrinsics', 'recovered_intrinsics')
    else:
        modes = ('gt_intrinsics',) if args.gt_intrinsics else ('recovered_intrinsics',)
    max_anchors = metrics.MAX_ALIGN_ANCHORS
    if args.align_anchors is not None:
        max_anchors = None if args.align_anchors <= 0 else int(args.align_anchors)
    # the anchor flags' mistakes are said before the model loads
    scale_anchors, stamp_s = _scale_anchors(args, cfg, dataset, is_bag(Path(args.data)))
    backend, precision = backend_choice(Path(args.model), cfg, print)
    set_opencv_threads(cfg['opencv_threads'])
    predictor = Predictor(args.model, backend=backend, num_tokens=cfg['num_tokens'], device=args.device,
                          precision=precision, mask_threshold=cfg['mask_threshold'], threads=cfg['intra_op_threads'],
                          engine_fallback=cfg['engine_fallback'])
    model = node_model(predictor, args.model)
    print(settings_line(cfg))
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f'--out {out_dir} is an existing file, expected a folder for metrics.json and report/')
    out_dir.mkdir(parents=True, exist_ok=True)
    sequence = is_sequence if args.sequence is None else bool(args.sequence)
    sessions = {mode: NodeFrames(model, cfg) for mode in modes}
    result = evaluate(sessions, dataset, modes=modes, constant_depth=args.constant_depth, limit=args.limit,
                      sequence=sequence, report_dir=out_dir / 'report', report_frames=args.report_frames,
                      progress=not args.quiet, max_anchors=max_anchors, scale_anchors=scale_anchors,
                      stamp_s=stamp_s)
    result = {'model': str(args.model), 'backend': predictor.backend_name, 'data': args.data,
              'num_tokens': predictor.num_tokens, 'mask_threshold': cfg['mask_threshold'],
              'params_files': [str(p) for p in args.params_files], 'node_parameters': cfg, **result}
    refused = getattr(getattr(dataset, 'report', None), 'refused_depths', None)
    if refused is not None:   # bags: GT depth frames refused as malformed, by reason (not scored)
        result['gt_frames_refused'] = dict(refused)
        if refused:
            print(f'{args.data}: {sum(refused.values())} GT depth frame(s) refused as malformed and not scored: '
                  + ', '.join(f'{k}: {v}' for k, v in sorted(refused.items())))
    path = out_dir / 'metrics.json'
    path.write_text(json.dumps(_json_safe(result), indent=1))
    print(summary_table(result))
    if sequence and 'temporal' in result:
        for mode, values in result['temporal'].items():
            print(f'temporal ({mode}): ' + ', '.join(f'{k}={v:.4f}' for k, v in values.items()))
    for mode, anchored in result.get('anchored', {}).items():
        counts = ', '.join(f'{k} {v}' for k, v in anchored['frames_per_source'].items())
        reasons = '; '.join(f'{k}: {v}' for k, v in anchored['last_reasons'].items() if v)
        print(f'anchored ({mode}): frames per source: {counts}' + (f' (last not usable: {reasons})' if reasons else ''))
    print(f'wrote {path} and {out_dir / "report"}')
    return 0
