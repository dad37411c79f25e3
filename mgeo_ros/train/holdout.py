"""Held-out evaluation during training: the model against a constant-depth baseline.

The depth metrics are handed in (`holdout_evaluator(metrics)`; `mgeo train` hands in `mgeo_ros.eval.metrics.
depth_metrics`): training never imports the evaluation layer, which itself depends on training's data.

Metric depth (no alignment) and scale-aligned depth are scored. The metric baseline predicts one constant for every
pixel of every frame (the median GT depth of the held-out set — an oracle constant); the scale-aligned baseline is a
constant per frame after the same per-frame scale alignment the model gets.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mgeo_ros.train.data.sample import Sample

if TYPE_CHECKING:
    import torch

# depth_metrics(pred, gt, mask, alignment=...) -> {'abs_rel': ..., 'delta1': ..., ...}; alignment 'none' or 'scale'
DepthMetrics = Callable[..., dict]
# evaluator(model, samples, num_tokens) -> the METRIC_KEYS scores; what the trainer is handed
Evaluator = Callable[['torch.nn.Module', Sequence[Sample], int], dict[str, float]]

# what evaluate_holdout returns (besides 'step', which the trainer adds); light to import, so the config can check
# `keep_best` against it before a run starts
METRIC_KEYS = tuple(f'{who}_{tag}_{key}' for who in ('model', 'baseline') for tag in ('metric', 'scale')
                    for key in ('abs_rel', 'delta1'))


def higher_is_better(key: str) -> bool:
    """δ1 is a hit rate (maximized); AbsRel is an error (minimized)."""
    return key.endswith('delta1')


def holdout_samples(count: int, seed: int, size: tuple[int, int], root: str | None = None) -> list[Sample]:
    """`count` synthetic scenes (seed disjoint from training) or the first `count` frames of a folder dataset."""
    from mgeo_ros.train.data.fit import fit_sample

    if root:
        from mgeo_ros.train.data import FolderDataset
        ds = FolderDataset(root)
        return [fit_sample(ds[i], *size) for i in range(min(count, len(ds)))]
    from mgeo_ros.train.data import SyntheticDataset
    ds = SyntheticDataset(count=count, seed=seed, size=tuple(size))
    return [fit_sample(ds[i], *size) for i in range(len(ds))]


def holdout_evaluator(metrics: DepthMetrics) -> Evaluator:
    """The trainer's evaluator: `evaluate_holdout` scoring with `metrics`."""
    return functools.partial(evaluate_holdout, metrics=metrics)


def evaluate_holdout(model: torch.nn.Module, samples: Sequence[Sample], num_tokens: int, *,
                     metrics: DepthMetrics) -> dict[str, float]:
    """Mean AbsRel/δ1 over frames for the model and the constant baseline: keys `{model,baseline}_{metric,scale}_
    {abs_rel,delta1}`, each scored by `metrics`."""
    from mgeo_ros.train.teacher import infer_depth

    was_training = model.training
    model.eval()
    try:
        gts = [np.where(s.mask, s.depth, np.nan).astype(np.float32) for s in samples]
        valid_all = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in gts])
        constant = float(np.median(valid_all)) if valid_all.size else 1.0
        rows: dict[str, list[float]] = {}
        for sample, gt in zip(samples, gts):
            mask = np.isfinite(gt) & (gt > 0)
            if not mask.any():
                continue
            pred = infer_depth(model, sample.rgb, num_tokens, sample.intrinsics).depth  # GT FOV, no model mask
            base = np.full_like(gt, constant)
            for who, depth in (('model', pred), ('baseline', base)):
                for tag, alignment in (('metric', 'none'), ('scale', 'scale')):
                    m = metrics(depth, gt, mask, alignment=alignment)
                    for key in ('abs_rel', 'delta1'):
                        rows.setdefault(f'{who}_{tag}_{key}', []).append(m[key])
        return {k: float(np.nanmean(v)) for k, v in rows.items()}
    finally:
        model.train(was_training)
