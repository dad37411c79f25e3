"""Which scale source a frame uses, and the anchors waiting for it.

`ScaleSourceChooser` walks the `scale_source` fallback list per frame and takes the first source with a usable
fit; it counts frames per source and reports a source's change between usable and unusable once (an event to log),
not every frame, and tells when the chosen source changed (the scale filter then restarts). `AnchorBuffer` keeps the
last few anchor messages by stamp and hands a frame the nearest one within `scale_anchor_max_age`; it never waits
for one that has not arrived. Times are float seconds.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mgeo_ros.runtime.scale_anchors import MODEL, ScaleFit, parse_scale_sources

T = TypeVar('T')


@dataclass(frozen=True)
class SourceEvent:
    """A source became usable or stopped being usable (reason says why); `message` is the log line."""

    source: str
    usable: bool
    reason: str

    @property
    def message(self) -> str:
        if self.usable:
            return f'scale source {self.source}: usable'
        return f'scale source {self.source}: not usable ({self.reason})'


@dataclass(frozen=True)
class ScaleChoice:
    """The frame's source and its fit (source 'model': scale None, the model's own scale applies); `changed`: the
    source differs from the previous frame's (restart the scale smoothing); events to log."""

    source: str
    fit: ScaleFit
    changed: bool
    events: tuple[SourceEvent, ...] = ()


class ScaleSourceChooser:
    """Per frame: the first source of the fallback list whose fit is usable, else the model's own scale."""

    def __init__(self, sources: str | Sequence[str]) -> None:
        self.sources = parse_scale_sources(sources)
        self.frames = {s: 0 for s in self.sources}
        self.reasons: dict[str, str] = {}
        self._usable: dict[str, bool] = {}
        self._last: str | None = None

    def choose(self, fit_source: Callable[[str], ScaleFit]) -> ScaleChoice:
        """`fit_source(name)` gives a source's fit for this frame; it is called in order until one is usable."""
        events: list[SourceEvent] = []
        chosen = ScaleFit(MODEL, reason='')
        for name in self.sources[:-1]:
            fit = fit_source(name)
            self.reasons[name] = fit.reason
            if self._usable.get(name) != fit.usable:
                self._usable[name] = fit.usable
                events.append(SourceEvent(name, fit.usable, fit.reason))
            if fit.usable:
                chosen = fit
                break
        self.frames[chosen.source] += 1
        changed = self._last is not None and chosen.source != self._last
        self._last = chosen.source
        return ScaleChoice(chosen.source, chosen, changed, tuple(events))


class AnchorBuffer(Generic[T]):
    """The last `capacity` anchors by stamp (thread-safe: filled by a subscription, read by a frame's stage)."""

    def __init__(self, max_age: float = 0.1, capacity: int = 16) -> None:
        if not max_age > 0:
            raise ValueError(f'scale_anchor_max_age must be > 0 s, got {max_age!r}')
        self.max_age = float(max_age)
        self.capacity = max(1, int(capacity))
        self._stamps: list[float] = []
        self._items: list[T] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp: float, item: T) -> None:
        """Store an anchor; the oldest is dropped beyond capacity (a repeated stamp replaces its anchor)."""
        with self._lock:
            k = bisect.bisect_left(self._stamps, stamp)
            if k < len(self._stamps) and self._stamps[k] == stamp:
                self._items[k] = item
                return
            self._stamps.insert(k, stamp)
            self._items.insert(k, item)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._items[0]

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()

    def nearest(self, stamp: float) -> tuple[T | None, str]:
        """(the stored anchor nearest to `stamp` within max_age, '') or (None, 'no messages' / 'stale (...)')."""
        with self._lock:
            if not self._stamps:
                return None, 'no messages'
            k = bisect.bisect_left(self._stamps, stamp)
            best = min((j for j in (k - 1, k) if 0 <= j < len(self._stamps)),
                       key=lambda j: abs(self._stamps[j] - stamp))
            dt = self._stamps[best] - stamp
            if abs(dt) > self.max_age:
                return None, (f'stale (nearest anchor {abs(dt):.3f} s {"after" if dt > 0 else "before"} the frame, '
                              f'scale_anchor_max_age {self.max_age:g} s)')
            return self._items[best], ''
