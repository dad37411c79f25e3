"""`mgeo data check DIR` (report every bad or missing file) and `mgeo data extract BAG --out DIR`."""
from __future__ import annotations

import argparse
import sys

from mgeo_ros.cli_args import check_new_output, float_in


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='data_command', metavar='{check,extract}', required=True)
    c = sub.add_parser('check', help='validate a folder dataset; lists every problem, exit 1 if any')
    c.add_argument('dir', help='dataset root (rgb/, depth/, intrinsics/ or intrinsics.json, ...)')
    e = sub.add_parser('extract', help='pair colour + depth + camera_info of a bag and write the folder format')
    e.add_argument('bag', help='rosbag2 directory (sqlite3 or mcap) or a .mcap/.db3 file')
    e.add_argument('--out', required=True, help='output dataset root; must be new or empty')
    e.add_argument('--overwrite', action='store_true', help='write into a non-empty --out')
    e.add_argument('--image-topic', help='colour Image or CompressedImage topic (default: guessed)')
    e.add_argument('--depth-topic',
                   help='depth topic registered to colour: Image 16UC1 mm or 32FC1 m, or CompressedImage '
                   'compressedDepth (default: guessed)')
    e.add_argument('--info-topic', help='CameraInfo topic of the colour camera (default: guessed)')
    e.add_argument('--tolerance', type=float_in(1e-9, unit='s'), default=0.02,
                   help='max stamp difference for a pair, seconds (0.02)')
    e.add_argument('--depth-format', choices=('npy', 'png'), default='npy',
                   help='npy = float32 metres (default), png = 16-bit millimetres (max 65.535 m)')
    e.add_argument('--not-metric', action='store_true', help='record meta.json {"metric": false}')


def run(args) -> int:
    if args.data_command == 'check':
        from mgeo_ros.train.data.validate import check_folder

        problems, frames = check_folder(args.dir)
        for p in problems:
            print(p)
        print(f'{args.dir}: {frames} frame(s), {len(problems)} problem(s)', file=sys.stderr if problems else sys.stdout)
        return 1 if problems else 0
    from mgeo_ros.train.data.bag import BagDataset
    from mgeo_ros.train.data.folder import write_folder

    check_new_output(args.out, '--out', args.overwrite)
    ds = BagDataset(args.bag, args.image_topic, args.depth_topic, args.info_topic, args.tolerance,
                    metric=not args.not_metric)
    print(f'{args.bag}: image {ds.image_topic}, depth {ds.depth_topic}, info {ds.info_topic}: {ds.report}')
    for note in ds.report.notes:
        print(f'note: {note}')
    names = [f'{ds.stamp_ns(i)}' for i in range(len(ds))]
    write_folder((ds[i] for i in range(len(ds))), args.out, args.depth_format, names, progress=True)
    print(f'wrote {len(ds)} frame(s) to {args.out}')
    return 0
