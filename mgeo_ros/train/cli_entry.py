"""What the train, refine and distill subcommands share: their standalone `main`, logging, the config-override
arguments, and the held-out evaluator that `mgeo` hands in (this layer never imports `mgeo_ros.eval`)."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mgeo_ros.cli_args import positive_int
from mgeo_ros.errors import run_reporting

if TYPE_CHECKING:
    from mgeo_ros.train.config import TrainConfig
    from mgeo_ros.train.holdout import Evaluator

Run = Callable[[argparse.Namespace], int]


def standalone_main(prog: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
                    run: Run) -> Callable[[list[str] | None], int]:
    """`main(argv)` for a subcommand called outside `mgeo` (tests, scripts): the same arguments and `run`, but no
    evaluator is handed in, so held-out evaluation is off (`mgeo train` / `python -m mgeo_ros.cli train` has it)."""
    def main(argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=prog, description=doc)
        add_arguments(parser)
        return run_reporting(prog, run, parser.parse_args(argv))

    return main


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(levelname)s: %(message)s')


def add_override_arguments(parser: argparse.ArgumentParser, what: str = 'config') -> None:
    """--max-steps and repeatable --set KEY=VALUE, the overrides every training command takes."""
    parser.add_argument('--max-steps', type=positive_int, default=None, help=f'override max_steps of the {what}')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help=f'override any {what} field, dotted for nesting (e.g. lr=3e-4, datasets.0.weight=2)')


def overrides_from_args(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """--set pairs, then --max-steps, then `extra` (the command's own fields; None values are left out)."""
    from mgeo_ros.train.config import parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    if getattr(args, 'max_steps', None) is not None:
        overrides['max_steps'] = args.max_steps
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return overrides


def load_run_config(path: str | None, args: argparse.Namespace, **extra: Any) -> TrainConfig:
    from mgeo_ros.train.config import load_config

    return load_config(path, overrides_from_args(args, **extra))


def evaluator_from(args: argparse.Namespace) -> Evaluator | None:
    """The evaluator `mgeo` put on the parsed arguments (mgeo_ros/cli.py), or None when run standalone."""
    return getattr(args, 'evaluator', None)
