"""`mgeo import-moge IN.pt OUT_DIR`: convert an official MoGe-2 or MoGe-3 `model.pt` to the project checkpoint
directory (MoGe-3: its base path, the network MoGe-2 shares; see mgeo_ros/model/moge2.py).

The input is read with `torch.load(weights_only=True)` and checked key by key against its own model_config, so a
converted directory always loads. Official weights are never downloaded by mgeo_ros; fetch them yourself
(e.g. Hugging Face `Ruicheng/moge-2-vits-normal`, file `model.pt`).
"""
from __future__ import annotations

import argparse

from mgeo_ros.cli_args import check_input_file, check_new_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('input', help='official MoGe-2 or MoGe-3 checkpoint (.pt with model_config + model; MoGe-3 '
                             'loads its base path, the refiner is set aside)')
    parser.add_argument('output', help='output directory (config.json + model.safetensors); new or empty')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty OUTPUT')
    parser.add_argument('--fp16', action='store_true', help='store weights as float16 (half the size; loaded as fp32)')


def run(args: argparse.Namespace) -> int:
    from mgeo_ros.model.checkpoint import load_checkpoint, save_checkpoint

    check_input_file(args.input, 'input', 'an official MoGe-2 or MoGe-3 model.pt')
    check_new_output(args.output, 'output', args.overwrite)
    model = load_checkpoint(args.input)
    out = save_checkpoint(model, args.output, fp16=args.fp16)
    params = sum(p.numel() for p in model.parameters())
    heads = [h for h in ('points_head', 'mask_head', 'normal_head', 'scale_head') if hasattr(model, h)]
    print(f'import-moge: wrote {out} ({params / 1e6:.1f}M parameters, heads: {", ".join(heads)}, '
          f'{"fp16" if args.fp16 else "fp32"})')
    return 0
