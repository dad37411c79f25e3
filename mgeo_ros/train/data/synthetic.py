"""`SyntheticDataset`: procedural scenes as a map-style dataset, rendered on the fly (sample i uses seed + i)."""
from __future__ import annotations

from collections.abc import Sequence

from mgeo_ros.train.data.sample import Sample
from mgeo_ros.train.data.synth import KINDS, SynthBatch, render_batch


class SyntheticDataset:
    """`count` synthetic frames of size (W, H); deterministic per index whatever order or batch they are drawn in."""

    def __init__(self, count: int, seed: int = 0, size: tuple[int, int] = (160, 120), kinds: Sequence[str] = KINDS,
                 device='cpu', shadow_samples: int = 1) -> None:
        if count < 0:
            raise ValueError(f'count must be >= 0, got {count}')
        self.count, self.seed, self.size = int(count), int(seed), (int(size[0]), int(size[1]))
        self.kinds, self.device, self.shadow_samples = tuple(kinds), device, shadow_samples

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f'SyntheticDataset index {index} out of range 0..{self.count - 1}')
        return self.batch([index]).samples()[0]

    def batch(self, indices: Sequence[int]) -> SynthBatch:
        """Render several indices at once (faster than one by one); tensors stay on the dataset's device."""
        return render_batch([self.seed + int(i) for i in indices], self.size, self.kinds, self.device,
                            self.shadow_samples)
