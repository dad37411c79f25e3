"""`mgeo train CONFIG.yaml [--max-steps N] [--out DIR] [--resume] [--set key=value ...]`.

Under `torchrun --nproc-per-node K -m mgeo_ros.cli train CONFIG.yaml` every rank runs this same command.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mgeo_ros.cli_args import float_in
from mgeo_ros.errors import BadInputError
from mgeo_ros.train.cli_entry import (
    add_override_arguments,
    evaluator_from,
    load_run_config,
    setup_logging,
    standalone_main,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', nargs='?', default=None,
                        help='training config YAML (see config/train/*.yaml); required unless --print-config')
    parser.add_argument('--max-minutes', type=float_in(0.0, unit='minutes'), default=None,
                        help='override max_minutes (wall-time budget)')
    parser.add_argument('--out', default=None, help='override the output directory')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/latest.txt (model + optimizer)')
    parser.add_argument('--overwrite', action='store_true',
                        help='train into an output directory that already holds a run (without --resume)')
    parser.add_argument('--init', default=None,
                        help='fine-tune from this checkpoint (project dir, or an official MoGe-2 / MoGe-3 .pt)')
    parser.add_argument('--print-config', action='store_true', help='print the resolved config and exit')
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.train.config import save_config

    if args.config is None and not args.print_config:
        print('usage: mgeo train CONFIG.yaml [--max-steps N] [--out DIR] [--resume] [--set KEY=VALUE ...]\n'
              'mgeo train: error: a training config is required (e.g. config/train/tiny.yaml); '
              '`mgeo train --print-config` shows every field with its default', file=sys.stderr)
        return 2
    setup_logging()
    cfg = load_run_config(args.config, args, max_minutes=args.max_minutes, out=args.out,
                          init_checkpoint=args.init or None)
    if args.print_config:
        print(json.dumps(printed_config(cfg), indent=2, default=str))
        return 0
    if not args.resume and not args.overwrite and (Path(cfg.out) / 'latest.txt').exists():
        raise BadInputError(f'output {cfg.out} already holds a training run (latest.txt); continue it with --resume, '
                            'train into a new --out, or pass --overwrite to start over there')
    from mgeo_ros.train.trainer import train

    summary = train(cfg, resume=args.resume, evaluator=evaluator_from(args))
    if summary.get('checkpoint'):
        save_config(cfg, cfg.out + '/config.yaml')
        print(json.dumps(summary, indent=2, default=str))
    return 0


def printed_config(cfg) -> dict:
    """The resolved config as it will train: with an init checkpoint its own model replaces the preset, so `model`
    names that checkpoint and what it was read as (the preset fields are then unused)."""
    from mgeo_ros.train.config import to_dict

    out = to_dict(cfg)
    if cfg.init_checkpoint:
        from mgeo_ros.model.checkpoint import describe_family, load_checkpoint

        model = load_checkpoint(cfg.init_checkpoint)
        out['model'] = (f'{cfg.init_checkpoint}: {describe_family(model, model.refiner_tensors_set_aside)}, '
                        f'{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters')
    return out


main = standalone_main('mgeo train', __doc__, add_arguments, run)
