"""`mgeo distill`: teacher–student distillation (Depth Anything's recipe) for robots.

1. Pseudo-label unlabeled images — a folder of images or a bag's image topic — with a (large) teacher checkpoint:
   its metric depth and validity mask become the labels (folder format under OUT/pseudo). Intrinsics come from the
   bag's CameraInfo when there is one (then the teacher only solves the shift), else from the teacher's recovery.
2. Train a student config on them (OUT/student), mixed with a labelled folder dataset when `--labelled` is given,
   with the ordinary trainer (so every `mgeo train` option and `--set` override applies).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mgeo_ros.cli_args import check_new_output, float_in, num_tokens, positive_int
from mgeo_ros.errors import BadInputError
from mgeo_ros.train.cli_entry import add_override_arguments, evaluator_from, load_run_config, standalone_main

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', help='student training config YAML (e.g. config/train/tiny.yaml)')
    parser.add_argument('--teacher', required=True, help='teacher checkpoint (project dir or MoGe-2 model.pt)')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--images', help='folder of unlabeled images (png/jpg)')
    src.add_argument('--bag', help='ROS 2 bag with an image topic')
    parser.add_argument('--topic', default=None, help='image topic in --bag (default: the first image topic)')
    parser.add_argument('--info-topic', default=None, help='CameraInfo topic in --bag (default: guessed; optional)')
    parser.add_argument('--every', type=positive_int, default=1, help='use every N-th image (default 1)')
    parser.add_argument('--max-images', type=positive_int, default=None, help='pseudo-label at most this many images')
    parser.add_argument('--out', required=True, help='output directory (pseudo/ labels and student/ run); new or '
                                                     'empty')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty --out')
    parser.add_argument('--labelled', default=None, help='a labelled folder dataset to mix in')
    parser.add_argument('--labelled-weight', type=float_in(1e-9), default=1.0,
                        help='mix weight of --labelled (pseudo = 1)')
    parser.add_argument('--labelled-type', default='C', choices=('A', 'B', 'C'),
                        help='loss recipe of --labelled (A synthetic dense, B dense real, C sparse real; default C)')
    parser.add_argument('--keep-config-data', action='store_true',
                        help="also keep the student config's own datasets (e.g. synthetic) in the mix")
    parser.add_argument('--num-tokens', type=num_tokens, default=1200, help='teacher ViT tokens (default 1200)')
    parser.add_argument('--device', default='cpu', help="torch device for the teacher (default 'cpu')")
    add_override_arguments(parser, what='student config')


def folder_images(root: str, every: int = 1) -> Iterator[tuple[str, np.ndarray, object]]:
    """(name, rgb uint8, intrinsics None) for each image file in `root` (sorted); an unusable folder is refused
    at the call, before any image is read."""
    if not Path(root).is_dir():
        raise BadInputError(f'--images {root}: not a folder (expected a folder of png/jpg images)')
    paths = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise BadInputError(f'--images {root}: no png/jpg images in this folder')
    return _read_images(paths[::max(1, every)])


def _read_images(paths: list[Path]) -> Iterator[tuple[str, np.ndarray, object]]:
    import cv2

    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        yield path.stem, np.ascontiguousarray(bgr[..., ::-1]), None


def bag_images(path: str, topic: str | None, info_topic: str | None,
               every: int = 1) -> Iterator[tuple[str, np.ndarray, object]]:
    """(name, rgb uint8, Intrinsics | None) for each message of the bag's image topic; the latest CameraInfo wins."""
    from mgeo_ros.bag_files import open_bag, read_messages, require_topic
    from mgeo_ros.geometry.intrinsics import Intrinsics
    from mgeo_ros.train.data.bag import image_to_rgb
    from mgeo_ros.train.data.bag_writer import TYPESTORE

    with open_bag(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        if topic is None:
            images = [t for t, c in conns.items() if c.msgtype.endswith(('/Image', '/CompressedImage'))
                      and 'depth' not in t]
            if not images:
                raise BadInputError(f'--bag {path}: no image topic in this bag (topics: {sorted(conns)})')
            topic = sorted(images)[0]
        require_topic(path, conns, topic, '--topic', ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'))
        if info_topic is not None:
            require_topic(path, conns, info_topic, '--info-topic', ('sensor_msgs/msg/CameraInfo',))
        if info_topic is None:
            infos = [t for t, c in conns.items() if c.msgtype.endswith('/CameraInfo') and 'depth' not in t]
            info_topic = sorted(infos)[0] if infos else None
        wanted = [conns[topic]] + ([conns[info_topic]] if info_topic in conns else [])
        intr, count = None, 0
        for conn, _, raw in read_messages(path, reader, wanted):
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == info_topic:
                intr = Intrinsics.from_K(msg.k, int(msg.width), int(msg.height))
                continue
            count += 1
            if (count - 1) % max(1, every):
                continue
            rgb = image_to_rgb(msg)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            use = intr if intr is not None and (intr.width, intr.height) == (rgb.shape[1], rgb.shape[0]) else None
            yield f'{stamp:019d}', rgb, use


def pseudo_label(model, rgb: np.ndarray, intrinsics, num_tokens: int, name: str):
    """One Sample from the teacher: metric depth (NaN outside its mask) with the used or recovered intrinsics."""
    from mgeo_ros.train.data.sample import Sample
    from mgeo_ros.train.teacher import infer_depth

    teacher = infer_depth(model, rgb, num_tokens, intrinsics)
    return Sample(rgb=rgb, depth=teacher.masked(), intrinsics=teacher.intrinsics, mask=teacher.valid, metric=True,
                  source=f'pseudo:{name}')


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mgeo_ros.model import load_checkpoint
    from mgeo_ros.train.data.folder import write_sample
    from mgeo_ros.train.trainer import train

    out = check_new_output(args.out, '--out', args.overwrite)
    pseudo_dir = out / 'pseudo'
    load_run_config(args.config, args, out=str(out / 'student'))  # a bad config is refused before any labelling
    if args.images:
        source = folder_images(args.images, args.every)
    else:
        from mgeo_ros.bag_files import open_bag

        with open_bag(args.bag):  # a missing or damaged bag is named before the teacher loads
            pass
        source = bag_images(args.bag, args.topic, args.info_topic, args.every)
    teacher = load_checkpoint(args.teacher, device=args.device)
    labelled = 0
    for name, rgb, intr in tqdm(source, desc='pseudo-label', unit='img'):
        if args.max_images is not None and labelled >= args.max_images:
            break
        write_sample(pseudo_label(teacher, rgb, intr, args.num_tokens, name), pseudo_dir, name)
        labelled += 1
    if labelled == 0:
        raise BadInputError(f'no images were pseudo-labelled from {args.images or args.bag} (every image was '
                            'unreadable or skipped); check the source')
    (pseudo_dir / 'meta.json').write_text(json.dumps({'metric': True, 'teacher': str(args.teacher)}))
    del teacher

    cfg = load_run_config(args.config, args, out=str(out / 'student'))
    from mgeo_ros.train.config import DatasetSpec

    # pseudo labels are dense but not exact: label type B (no finest local level)
    mix = [DatasetSpec(type='folder', root=str(pseudo_dir), weight=1.0, label_type='B', augment=True)]
    if args.labelled:
        mix.append(DatasetSpec(type='folder', root=args.labelled, weight=args.labelled_weight,
                               label_type=args.labelled_type))
    cfg.datasets = mix + (list(cfg.datasets) if args.keep_config_data else [])
    summary = train(cfg, evaluator=evaluator_from(args))
    summary['pseudo_labelled'] = labelled
    print(json.dumps(summary, indent=2, default=str))
    return 0


main = standalone_main('mgeo distill', __doc__, add_arguments, run)
