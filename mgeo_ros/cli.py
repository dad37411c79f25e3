"""The `mgeo` command. Each subcommand lives in its layer as a module with `add_arguments(parser)` and
`run(args) -> int`; this file only lists them, and imports a module only when its subcommand runs.

Every subcommand reports through one path (`errors.run_reporting`): a user mistake is one line naming what is wrong
with a non-zero exit (2 for a bad argument, 1 for bad input found while running), a traceback only with `--debug`
or MGEO_DEBUG=1, or for a bug."""
from __future__ import annotations

import argparse
import importlib
import sys

from mgeo_ros import __version__
from mgeo_ros.errors import run_reporting

# name -> (module, one-line help). Keep alphabetical within a group.
COMMANDS: dict[str, tuple[str, str]] = {
    'synth': ('mgeo_ros.train.data.synth_cli', 'render procedural synthetic scenes to the folder format'),
    'data': ('mgeo_ros.train.data.data_cli', 'check a folder dataset or extract one from a bag'),
    'train': ('mgeo_ros.train.train_cli', 'train or fine-tune from a YAML config'),
    'refine': ('mgeo_ros.train.refine_cli', 'refine real depth against a teacher (mismatch filter + Poisson fill)'),
    'distill': ('mgeo_ros.train.distill_cli', 'pseudo-label images with a teacher and train a student'),
    'eval': ('mgeo_ros.eval.eval_cli', 'evaluate a model on a folder dataset or a bag'),
    'import-moge': ('mgeo_ros.model.import_cli', 'convert an official MoGe-2 or MoGe-3 model.pt to the project format'),
    'export': ('mgeo_ros.export.export_cli', 'export a checkpoint to ONNX (with a parity check)'),
    'build-engine': ('mgeo_ros.export.engine_cli', 'build (and cache) a TensorRT engine from an ONNX file'),
    'check-engine': ('mgeo_ros.export.check_cli', 'check that an engine (or .onnx) reproduces its export probe'),
    'inspect': ('mgeo_ros.export.inspect_cli', 'say what a model file is (format, origin, I/O, size, tokens)'),
    'bench': ('mgeo_ros.bench.cli', 'benchmark every available backend (ms per stage, fps, memory)'),
    'replay': ('mgeo_ros.ros.replay_cli', 'play a ROS 2 bag into the graph, optionally recording outputs'),
    'demo': ('mgeo_ros.demo', 'the main job: synthetic bag -> node -> recorded outputs -> report'),
}
# Subcommands that train: this file (which may import every layer) hands them the held-out evaluator built on the
# eval layer's metrics, so `mgeo_ros.train` never imports `mgeo_ros.eval` (docs/architecture.md).
TRAINING_COMMANDS = ('train', 'distill')


def holdout_evaluator():
    """`train.holdout.evaluate_holdout` scoring with `eval.metrics.depth_metrics`."""
    from mgeo_ros.eval.metrics import depth_metrics
    from mgeo_ros.train.holdout import holdout_evaluator as make

    return make(depth_metrics)


class ShortErrorParser(argparse.ArgumentParser):
    """A bad argument is two lines (what is wrong; where the usage is), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message}\n{self.prog}: see `{self.prog} --help` for usage\n')


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only`, import just that subcommand's module (keeps `mgeo --help` fast)."""
    parser = argparse.ArgumentParser(prog='mgeo', description='mgeo_ros: monocular metric geometry for robots')
    parser.add_argument('--version', action='version', version=f'mgeo {__version__}')
    parser.add_argument('--debug', action='store_true', help='show tracebacks (also MGEO_DEBUG=1)')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=ShortErrorParser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                       help='show tracebacks of errors (also MGEO_DEBUG=1)')
        if only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
            if name in TRAINING_COMMANDS:
                p.set_defaults(evaluator=holdout_evaluator())
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, '_run', None) is None:
        parser.print_help()
        return 2
    return run_reporting(f'mgeo {args.command}', args._run, args, debug=args.debug)


if __name__ == '__main__':
    sys.exit(main())
