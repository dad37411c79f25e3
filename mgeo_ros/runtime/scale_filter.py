"""Temporal smoothing of the metric scale, so that depth does not breathe from frame to frame (SLAM needs this).

The model predicts an affine-invariant geometry and a separate metric scale per frame; that scale jitters. Smoothing
it in log space treats a factor-of-two error up or down alike. A jump larger than `reset_ratio` (a cut, a new scene,
another camera) is taken as real and the filter restarts from it instead of creeping towards it over many frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ScaleUpdate:
    raw: float
    smoothed: float
    reset: bool


class ScaleFilter:
    """Log-space exponential moving average: log s_t = a * log s_(t-1) + (1 - a) * log raw_t, a = `smoothing`."""

    def __init__(self, smoothing: float = 0.0, reset_ratio: float = 1.5) -> None:
        self.configure(smoothing, reset_ratio)
        self._log_scale: float | None = None
        self.reset_count = 0

    def configure(self, smoothing: float, reset_ratio: float) -> None:
        """Change the settings without losing the state (safe while running)."""
        if not (0.0 <= smoothing < 1.0):
            raise ValueError(f'scale smoothing must be in [0, 1), got {smoothing!r}')
        if not (reset_ratio > 1.0):
            raise ValueError(f'scale reset ratio must be > 1, got {reset_ratio!r}')
        self.smoothing = float(smoothing)
        self.reset_ratio = float(reset_ratio)

    def reset(self) -> None:
        """Forget the history (camera changed, stream restarted): the next scale is taken as is."""
        if self._log_scale is not None:
            self.reset_count += 1
        self._log_scale = None

    @property
    def value(self) -> float | None:
        """The current smoothed scale, or None before the first frame."""
        return None if self._log_scale is None else math.exp(self._log_scale)

    def update(self, raw: float) -> ScaleUpdate:
        """Feed one frame's raw scale; a non-finite or non-positive one is passed through and leaves the state alone."""
        raw = float(raw)
        if not (math.isfinite(raw) and raw > 0.0):
            return ScaleUpdate(raw, raw, False)
        log_raw = math.log(raw)
        jumped = self._log_scale is not None and abs(log_raw - self._log_scale) > math.log(self.reset_ratio)
        if self._log_scale is None or jumped or self.smoothing == 0.0:
            if jumped:
                self.reset_count += 1
            self._log_scale = log_raw
        else:
            self._log_scale = self.smoothing * self._log_scale + (1.0 - self.smoothing) * log_raw
        return ScaleUpdate(raw, math.exp(self._log_scale), jumped)
