"""From `Sample`s to training batches: size fitting, tensor conversion, and an endless mixed stream per DDP rank.

Each batch has one image size (drawn per batch), so variable-size training needs no padding. Sources are mixed by
weight per sample; synthetic sources render on the fly with seeds that differ per rank and per DataLoader worker, so
ranks never see the same scene (the streaming equivalent of a DistributedSampler).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mgeo_ros.geometry.projection import unproject
from mgeo_ros.train.config import DatasetSpec, TrainConfig
from mgeo_ros.train.data.fit import fit_sample
from mgeo_ros.train.data.sample import Sample

LABEL_TYPES = ('A', 'B', 'C')
_RANK_SEED_STRIDE = 1_000_003
_WORKER_SEED_STRIDE = 7919


def sample_tensors(sample: Sample) -> dict[str, torch.Tensor]:
    """One sample as tensors: image [3,H,W] in [0,1], points [H,W,3] m (NaN invalid), mask [H,W], focal [] (MoGe's
    normalized focal 1/√((W/fx)² + (H/fy)²) = focal relative to the image diagonal), metric []."""
    depth = np.asarray(sample.depth, dtype=np.float32)
    valid = np.asarray(sample.mask, dtype=bool) & np.isfinite(depth) & (depth > 0)
    points = unproject(np.where(valid, depth, np.nan).astype(np.float32), sample.intrinsics)
    intr = sample.intrinsics
    focal = 1.0 / math.sqrt((intr.width / intr.fx) ** 2 + (intr.height / intr.fy) ** 2)
    return {
        'image': torch.from_numpy(np.ascontiguousarray(sample.rgb)).permute(2, 0, 1).float().div_(255.0),
        'points': torch.from_numpy(points),
        'mask': torch.from_numpy(valid),
        'focal': torch.tensor(focal, dtype=torch.float32),
        'metric': torch.tensor(bool(sample.metric)),
    }


def collate(items: list[dict[str, torch.Tensor]], label_types: list[str]) -> dict[str, Any]:
    batch: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch['label_type'] = list(label_types)
    return batch


class _Source:
    """One DatasetSpec bound to a rank/worker: yields Samples at a requested size (before augmentation)."""

    def __init__(self, spec: DatasetSpec, seed: int):
        self.spec = spec
        self.seed = seed
        self._index = 0
        self._synthetic: dict[tuple[int, int], Any] = {}
        self._folder = None
        self._order: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)
        self._pool: list[Sample] = []

    def take(self, count: int, size: tuple[int, int]) -> list[Sample]:
        if self.spec.type == 'synthetic':
            samples = self._take_synthetic(count, size)
        else:
            samples = [fit_sample(self._next_folder(), *size) for _ in range(count)]
        if self.spec.metric is not None:
            samples = [replace(s, metric=bool(self.spec.metric)) for s in samples]
        return samples

    def _render(self, count: int, size: tuple[int, int]) -> list[Sample]:
        from mgeo_ros.train.data import SyntheticDataset

        ds = self._synthetic.get(size)
        if ds is None:
            ds = SyntheticDataset(count=2 ** 31 - 1, seed=self.seed, size=size, **self.spec.options)
            self._synthetic[size] = ds
        indices = list(range(self._index, self._index + count))
        self._index += count
        samples = ds.batch(indices).samples()
        return [s if s.depth.shape == (size[1], size[0]) else fit_sample(s, *size) for s in samples]

    def _take_synthetic(self, count: int, size: tuple[int, int]) -> list[Sample]:
        pool_size = int(self.spec.pool_size)
        if pool_size <= 0:
            return self._render(count, size)
        if len(self._pool) < pool_size:                      # fill the pool once
            self._pool.extend(self._render(pool_size - len(self._pool), size))
        fresh = int(self._rng.binomial(count, min(1.0, max(0.0, self.spec.pool_refresh))))
        if fresh:
            slots = self._rng.choice(pool_size, size=fresh, replace=False)
            for slot, sample in zip(slots, self._render(fresh, size)):
                self._pool[int(slot)] = sample
        picks = self._rng.choice(pool_size, size=count, replace=count > pool_size)
        return [fit_sample(self._pool[int(i)], *size) for i in picks]

    def _next_folder(self) -> Sample:
        from mgeo_ros.train.data import FolderDataset

        if self._folder is None:
            self._folder = FolderDataset(self.spec.root, split=self.spec.split, **self.spec.options)
            if len(self._folder) == 0:
                raise ValueError(f'datasets.root: {self.spec.root} holds no frames')
        if self._order is None or self._index >= len(self._order):
            self._order = self._rng.permutation(len(self._folder))
            self._index = 0
        sample = self._folder[int(self._order[self._index])]
        self._index += 1
        return sample


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches for one rank. Each DataLoader worker renders with its own seed; sizes are drawn per batch."""

    def __init__(self, cfg: TrainConfig, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size

    def _draw_size(self, rng: np.random.Generator) -> tuple[int, int]:
        w0, h0 = (int(v) for v in self.cfg.image_size)
        if not self.cfg.image_size_max:
            return w0, h0
        w1, h1 = (int(v) for v in self.cfg.image_size_max)
        t = rng.uniform(0.0, 1.0)
        w = int(round(w0 + t * (w1 - w0)))
        h = int(round(h0 + t * (h1 - h0)))
        return max(16, w // 2 * 2), max(16, h // 2 * 2)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from mgeo_ros.train.augment import AugmentConfig, augment

        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        base = self.cfg.seed + _RANK_SEED_STRIDE * self.rank + _WORKER_SEED_STRIDE * worker
        rng = np.random.default_rng(base)
        # training scenes start far from the held-out seeds (eval_seed) and differ per rank/worker
        sources = [_Source(spec, spec.seed + 10 * _RANK_SEED_STRIDE * (1 + self.rank) + base) for spec in
                   self.cfg.datasets]
        aug_cfgs = [AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in spec.augment_config.items()}) for spec in self.cfg.datasets]
        weights = np.array([s.spec.weight for s in sources], dtype=np.float64)
        weights /= weights.sum()
        while True:
            size = self._draw_size(rng)
            counts = np.bincount(rng.choice(len(sources), size=self.cfg.batch_size, p=weights),
                                 minlength=len(sources))
            items, labels = [], []
            for src, aug_cfg, count in zip(sources, aug_cfgs, counts):
                if count == 0:
                    continue
                for sample in src.take(int(count), size):
                    if src.spec.augment:
                        sample = augment(sample, rng, size, aug_cfg)
                    items.append(sample_tensors(sample))
                    labels.append(src.spec.label_type)
            yield collate(items, labels)
