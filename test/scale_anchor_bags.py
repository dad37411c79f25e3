"""Bags to measure the scale anchors on with `mgeo eval --scale-anchor` (not a test module):

- `demo`: the demo's sequence (held-out seed, 24 frames, 320x240, 2 Hz) with its sparse-depth and scan anchors, as
  `mgeo demo` writes it; with `--outliers F --factor K` a fraction F of each frame's depth anchors is multiplied by K
  (multipath, glass);
- `robot`: the robot-camera sequence (a camera at a fixed height, pitch and roll driving through a room, floor in
  view; mount in `camera_mount.json`), for `--scale-anchor ground:HEIGHT,PITCH,ROLL`.

    python test/scale_anchor_bags.py demo OUT_BAG [--outliers 0.2 --factor 3]
    python test/scale_anchor_bags.py robot OUT_BAG
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np


def _corrupt(messages, depth_topic: str, fraction: float, factor: float, seed: int):
    """`anchor_bag_topics`' message maker with `fraction` of each sparse depth image's anchors times `factor`."""
    from mgeo_ros.train.data.bag_writer import image_msg

    def corrupted(index, sample, stamp_ns):
        out = []
        for topic, msg in messages(index, sample, stamp_ns):
            if topic == depth_topic:
                depth = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width).copy()
                valid = np.flatnonzero(np.isfinite(depth.reshape(-1)))
                rng = np.random.default_rng(seed + index)
                bad = rng.choice(valid, size=int(round(fraction * valid.size)), replace=False)
                depth.reshape(-1)[bad] *= np.float32(factor)
                msg = image_msg(depth, '32FC1', stamp_ns, msg.header.frame_id)
            out.append((topic, msg))
        return out
    return corrupted


def demo_bag(out: Path, outliers: float = 0.0, factor: float = 3.0) -> Path:
    from mgeo_ros.demo import DEMO_KINDS, DEMO_SEED, GT_TOPIC, IMAGE_TOPIC, INFO_TOPIC
    from mgeo_ros.train.data import render_sequence, write_bag
    from mgeo_ros.train.data.synth.anchors import ANCHOR_DEPTH_TOPIC, anchor_bag_topics

    samples = render_sequence(DEMO_SEED, 24, size=(320, 240), kinds=DEMO_KINDS)
    topics, messages = anchor_bag_topics('camera_optical_frame', seed=DEMO_SEED)
    if outliers > 0:
        messages = _corrupt(messages, ANCHOR_DEPTH_TOPIC, outliers, factor, DEMO_SEED)
    return write_bag(samples, out, storage='mcap', image_topic=IMAGE_TOPIC, depth_topic=GT_TOPIC,
                     info_topic=INFO_TOPIC, rate_hz=2.0, extra_topics=topics, extra_messages=messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('kind', choices=('demo', 'robot'))
    parser.add_argument('out', type=Path)
    parser.add_argument('--outliers', type=float, default=0.0, help='demo: share of depth anchors made wrong')
    parser.add_argument('--factor', type=float, default=3.0, help='demo: what the wrong ones are multiplied by')
    parser.add_argument('--frames', type=int, default=24, help='robot: frames')
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    if args.kind == 'demo':
        bag = demo_bag(args.out, args.outliers, args.factor)
    else:
        from mgeo_ros.train.data.synth.robot import write_robot_bag

        bag = write_robot_bag(args.out, seed=2_000_000_011, frames=args.frames)
    print(bag)
    return 0


if __name__ == '__main__':
    sys.exit(main())
