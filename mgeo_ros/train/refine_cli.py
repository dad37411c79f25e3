"""`mgeo refine DATA --teacher MODEL --out DIR`: refine a real folder dataset's depth against a teacher model
(mismatch filtering + log-space Poisson completion, see `mgeo_ros.train.refine`), writing the folder format plus
`refine_report.json` (removed/filled pixel counts per frame)."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

import numpy as np

from mgeo_ros.cli_args import check_new_output, float_in, num_tokens, positive_int
from mgeo_ros.train.cli_entry import standalone_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('data', help='folder dataset with real (noisy) depth')
    parser.add_argument('--teacher', required=True, help='teacher checkpoint (project dir or MoGe-2 model.pt)')
    parser.add_argument('--out', required=True, help='output folder dataset; must be new or empty')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty --out')
    parser.add_argument('--split', default=None, help='only this split of DATA')
    parser.add_argument('--patch', type=positive_int, default=16, help='alignment tile side in pixels (default 16)')
    parser.add_argument('--threshold', type=float_in(0.0, unit='(relative error)'), default=0.05,
                        help='aligned relative error above which a sensor pixel is removed (default 0.05)')
    parser.add_argument('--no-fill', action='store_true', help='only filter; leave holes empty')
    parser.add_argument('--num-tokens', type=num_tokens, default=1200, help='teacher ViT tokens (default 1200)')
    parser.add_argument('--device', default='cpu', help="torch device for the teacher (default 'cpu')")
    parser.add_argument('--depth-format', default='npy', choices=('npy', 'png', 'exr'), help='output depth format')


def teacher_depth(model, sample, num_tokens: int) -> np.ndarray:
    """Teacher depth (up to scale is enough) at the sample's resolution with its known FOV; NaN outside its mask."""
    from mgeo_ros.train.teacher import infer_depth

    return infer_depth(model, sample.rgb, num_tokens, sample.intrinsics).masked()


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.model import load_checkpoint
    from mgeo_ros.train.data import FolderDataset
    from mgeo_ros.train.data.folder import write_sample
    from mgeo_ros.train.refine import RefineConfig, refine_depth

    dataset = FolderDataset(args.data, split=args.split)
    out = check_new_output(args.out, '--out', args.overwrite)
    model = load_checkpoint(args.teacher, device=args.device)
    cfg = RefineConfig(patch=args.patch, threshold=args.threshold, fill=not args.no_fill)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    from tqdm import tqdm

    for name, index in tqdm(list(zip(dataset.names, range(len(dataset)))), desc='refine', unit='frame'):
        sample = dataset[index]
        depth = np.where(sample.mask, sample.depth, np.nan)
        result = refine_depth(depth, teacher_depth(model, sample, args.num_tokens), cfg)
        refined = replace(sample, depth=result.depth, mask=np.isfinite(result.depth))
        write_sample(refined, out, name, args.depth_format)
        frames.append({'name': name, **result.stats})
    (out / 'meta.json').write_text(json.dumps({'metric': dataset.metric}))
    totals = {k: int(sum(f[k] for f in frames)) for k in ('valid_in', 'removed', 'filled', 'valid_out', 'pixels')}
    report = {'data': str(args.data), 'teacher': str(args.teacher), 'config': asdict(cfg), 'totals': totals,
              'frames': frames}
    (out / 'refine_report.json').write_text(json.dumps(report, indent=2))
    print(json.dumps(totals))
    return 0


main = standalone_main('mgeo refine', __doc__, add_arguments, run)
