"""`mgeo train CONFIG.yaml [--max-steps N] [--out DIR] [--resume] [--set key=value ...]`.

Under `torchrun --nproc-per-node K -m mgeo_ros.train.train_cli CONFIG.yaml` every rank runs this same command.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from mgeo_ros.errors import MgeoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', nargs='?', default=None, help='training config YAML (see config/train/*.yaml)')
    parser.add_argument('--max-steps', type=int, default=None, help='override max_steps')
    parser.add_argument('--max-minutes', type=float, default=None, help='override max_minutes (wall-time budget)')
    parser.add_argument('--out', default=None, help='override the output directory')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/latest.txt (model + optimizer)')
    parser.add_argument('--init', default=None, help='fine-tune from this checkpoint (project dir or MoGe-2 .pt)')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='override any config field, dotted for nesting (e.g. lr=3e-4, datasets.0.weight=2)')
    parser.add_argument('--print-config', action='store_true', help='print the resolved config and exit')


def overrides_from_args(args: argparse.Namespace) -> dict:
    from mgeo_ros.train.config import parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    if args.max_steps is not None:
        overrides['max_steps'] = args.max_steps
    if getattr(args, 'max_minutes', None) is not None:
        overrides['max_minutes'] = args.max_minutes
    if args.out is not None:
        overrides['out'] = args.out
    if getattr(args, 'init', None):
        overrides['init_checkpoint'] = args.init
    return overrides


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.train.config import load_config, save_config, to_dict

    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(levelname)s: %(message)s')
    try:
        cfg = load_config(args.config, overrides_from_args(args))
    except MgeoError as exc:
        print(f'mgeo train: {exc}', file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2, default=str))
        return 0
    from mgeo_ros.train.trainer import train

    summary = train(cfg, resume=args.resume)
    if summary.get('checkpoint'):
        save_config(cfg, cfg.out + '/config.yaml')
        print(json.dumps(summary, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mgeo train', description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
