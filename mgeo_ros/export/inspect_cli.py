"""`mgeo inspect MODEL`: what a model file is (.onnx, .engine, .pt, .safetensors or a project checkpoint folder):
format and origin, inputs and outputs, fixed or dynamic size, token count, precision, normal head, probe."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from mgeo_ros.errors import MgeoError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help='.onnx, .engine/.plan, .pt, .safetensors or a project checkpoint directory')
    parser.add_argument('--json', action='store_true', help='print the facts as JSON')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.runtime.model_info import describe_model

    try:
        info = describe_model(args.model)
    except MgeoError as e:
        print(f'mgeo inspect: {e}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=2, default=str))
        return 0
    print('\n'.join(info.lines()))
    return 0
