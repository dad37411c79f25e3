"""How well the node's flying-pixel filter works, measured on frames with ground truth (held-out synthetic scenes).

Definitions:
- a GT *discontinuity* is a pair of 4-neighbours whose GT depths differ by more than 5 % and by more than 3x the
  steps next to them on the same line (an occlusion edge, not a steep but continuous slope such as a far floor);
- a predicted point is *flying* when it lies within 3 px of a GT discontinuity (7x7 window) and its depth is more
  than 5 % from both sides' GT (the nearest and the farthest GT depth in that window);
- *non-edge* points are valid points (GT and prediction) further than 3 px from any GT discontinuity.
The filter's figures are the share of flying points it removes and the share of non-edge points it removes (lost).

Predicted depth is scaled per frame by the median GT/prediction ratio first: flying is about shape, and a metric
scale that is off by 20 % would otherwise make almost every point near an edge "5 % from both sides".

`python -m mgeo_ros.eval.flying_pixels --root HELD_OUT [--model M] [--num-tokens N] [--jump 0.08 ...]` prints the
figures for the model and for a model-free reference: the GT itself sampled at the network resolution and upsampled
like the node upsamples a prediction (what a model that is exact on its own grid would give).
"""
from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np

from mgeo_ros.runtime.flying_pixels import DepthJumpTest
from mgeo_ros.runtime.postprocess import upsample_valid

EDGE_REL = 0.05    # a GT step larger than this (and than 3x its neighbours') is a discontinuity
EDGE_RATIO = 3.0
NEAR_PX = 3        # "within 3 px"
FLY_REL = 0.05     # "more than 5 % from both sides"


def gt_discontinuities(gt: np.ndarray) -> np.ndarray:
    """Pixels on either side of a GT occlusion edge (see the module docstring); gt: H x W metres, NaN invalid."""
    edges = np.zeros(gt.shape, bool)
    for axis in (0, 1):
        g = np.moveaxis(gt, axis, 0)
        with np.errstate(invalid='ignore', divide='ignore'):
            step = np.abs(np.diff(g, axis=0)) / np.fmin(g[1:], g[:-1])
        around = np.zeros_like(step)
        around[1:] = np.fmax(around[1:], np.nan_to_num(step[:-1]))
        around[:-1] = np.fmax(around[:-1], np.nan_to_num(step[1:]))
        with np.errstate(invalid='ignore'):
            jump = (step > EDGE_REL) & (step > EDGE_RATIO * around)
        side = np.zeros(g.shape, bool)
        side[1:] |= jump
        side[:-1] |= jump
        edges |= np.moveaxis(side, 0, axis)
    return edges


def classify(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flying, non_edge) masks of a scale-aligned prediction against GT (both H x W, NaN invalid)."""
    valid_gt = np.isfinite(gt) & (gt > 0)
    both = valid_gt & np.isfinite(pred)
    kernel = np.ones((2 * NEAR_PX + 1, 2 * NEAR_PX + 1), np.uint8)
    near = cv2.dilate(gt_discontinuities(np.where(valid_gt, gt, np.nan)).astype(np.uint8), kernel) > 0
    low = cv2.erode(np.where(valid_gt, gt, np.inf).astype(np.float32), kernel)
    high = cv2.dilate(np.where(valid_gt, gt, -np.inf).astype(np.float32), kernel)
    with np.errstate(invalid='ignore'):
        off_both = (np.abs(pred - low) > FLY_REL * low) & (np.abs(pred - high) > FLY_REL * high)
    return near & both & off_both, both & ~near


def scale_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pred x median(gt / pred) over the pixels valid in both."""
    both = np.isfinite(pred) & np.isfinite(gt) & (gt > 0) & (pred > 0)
    if not both.any():
        return pred
    return pred * np.float32(np.median(gt[both] / pred[both]))


def grid_reference(gt: np.ndarray, network_size: tuple[int, int]) -> np.ndarray:
    """The GT sampled at the network resolution and upsampled as postprocess upsamples depth."""
    nw, nh = network_size
    h, w = gt.shape
    valid = np.isfinite(gt) & (gt > 0)
    small = cv2.resize(np.where(valid, gt, 0).astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
    small_valid = cv2.resize(valid.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    depth, _ = upsample_valid(small, small_valid, w, h)
    return depth


def figures(pairs, jumps, radius: int = 1) -> list[dict]:
    """For each tolerance: flying points, share removed, non-edge points, share lost, over (pred, gt) pairs."""
    test = DepthJumpTest()
    totals = [{'max_rel_jump': j, 'radius': radius, 'flying': 0, 'removed': 0, 'non_edge': 0, 'lost': 0}
              for j in jumps]
    for pred, gt in pairs:
        pred = scale_aligned(pred, gt)
        flying, non_edge = classify(pred, gt)
        for row in totals:
            cut = test(pred, row['max_rel_jump'], radius) if row['max_rel_jump'] > 0 else np.zeros_like(flying)
            row['flying'] += int(flying.sum())
            row['removed'] += int((flying & cut).sum())
            row['non_edge'] += int(non_edge.sum())
            row['lost'] += int((non_edge & cut).sum())
    for row in totals:
        row['removed_share'] = row['removed'] / max(row['flying'], 1)
        row['lost_share'] = row['lost'] / max(row['non_edge'], 1)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m mgeo_ros.eval.flying_pixels', description=__doc__.split('\n')[0])
    parser.add_argument('--root', required=True, help='folder dataset with GT depth (e.g. `mgeo synth` output)')
    parser.add_argument('--model', default='', help='checkpoint / .onnx (default: the packaged default model)')
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--num-tokens', type=int, default=1200)
    parser.add_argument('--jump', type=float, action='append', help='tolerances to try (default 0.04 0.08 0.15)')
    parser.add_argument('--radius', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)

    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.predictor import default_model_path
    from mgeo_ros.train.data import FolderDataset

    jumps = args.jump or [0.04, 0.08, 0.15]
    dataset = FolderDataset(args.root)
    predictor = Predictor(args.model or str(default_model_path()), backend=args.backend, num_tokens=args.num_tokens,
                          threads=args.threads)
    model_pairs, grid_pairs = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        gt = np.where(sample.mask, sample.depth, np.nan).astype(np.float32)
        pred = predictor.predict(sample.rgb, intrinsics=sample.intrinsics)
        model_pairs.append((pred.depth, gt))
        h, w = gt.shape
        grid_pairs.append((grid_reference(gt, predictor.network_size(w, h)), gt))
    report = {'root': args.root, 'frames': len(dataset), 'num_tokens': args.num_tokens,
              'model': figures(model_pairs, jumps, args.radius), 'grid_reference': figures(grid_pairs, jumps,
                                                                                              args.radius)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['frames']} frames from {args.root}, num_tokens {args.num_tokens}, window radius {args.radius}")
    print(f"{'depth':<16} {'max_rel_jump':>12} {'flying':>8} {'removed':>8} {'non-edge':>9} {'lost':>7}")
    for name in ('model', 'grid_reference'):
        for row in report[name]:
            print(f"{name:<16} {row['max_rel_jump']:>12.3f} {row['flying']:>8d} {100 * row['removed_share']:>7.1f}% "
                  f"{row['non_edge']:>9d} {100 * row['lost_share']:>6.2f}%")
    return 0


if __name__ == '__main__':
    sys.exit(main())
