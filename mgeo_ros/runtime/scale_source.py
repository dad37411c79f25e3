"""Which scale source a frame uses, and the anchors waiting for it.

`ScaleSourceChooser` walks the `scale_source` fallback list per frame and takes the first source with a usable
fit; it counts frames per source and reports a source's change between usable and unusable once (an event to log),
not every frame, and tells when the chosen source changed (the scale filter then restarts). `AnchorBuffer` keeps the
last few anchor messages by stamp and hands a frame the nearest one within `scale_anchor_max_age`; it never waits
for one that has not arrived. `ScaleAnchoring` puts them together for one camera. Times are float seconds.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.runtime.scale_anchors import (
    MESSAGE_SOURCES,
    MODEL,
    Anchors,
    ScaleFit,
    fit_anchors,
    fit_ground,
    parse_scale_sources,
)

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


@dataclass(frozen=True)
class AnchorSettings:
    """One camera's scale-anchor parameters (units as the node's parameters: s, m, deg)."""

    sources: tuple[str, ...] = (MODEL,)
    min_points: int = 20
    max_age: float = 0.1
    camera_height: float = 0.0
    camera_pitch: float = 0.0
    camera_roll: float = 0.0
    ground_max_tilt: float = 20.0

    @classmethod
    def from_text(cls, scale_source: str, **kwargs) -> AnchorSettings:
        return cls(parse_scale_sources(scale_source), **kwargs)


class ScaleAnchoring:
    """One camera's anchors and source choice: anchor messages go in (`add`, from any thread), and per frame
    `choose` gives the scale source, its fit and the events to log. Plain arrays only, for the node and for
    `mgeo eval`."""

    def __init__(self, settings: AnchorSettings) -> None:
        self.settings = settings
        self.chooser = ScaleSourceChooser(settings.sources)
        self.buffers: dict[str, AnchorBuffer[Anchors]] = {
            s: AnchorBuffer(settings.max_age) for s in settings.sources if s in MESSAGE_SOURCES}
        self.last: ScaleChoice | None = None

    def add(self, source: str, anchors: Anchors) -> None:
        """Store one message's anchors under its stamp (ignored for a source not in the list)."""
        buffer = self.buffers.get(source)
        if buffer is not None:
            buffer.add(anchors.stamp, anchors)

    def choose(self, stamp: float, intrinsics: Intrinsics, depth: np.ndarray, valid: np.ndarray | None,
               points: Callable[[], np.ndarray] | np.ndarray | None = None, model_scale: float = 1.0) -> ScaleChoice:
        """The frame's scale source and fit. depth: H x W predicted z-depth in any positive scale (multiply it by
        the fit's scale for anchored metres); valid: pixels that may be used; points: the H x W x 3 points of the
        same depth (or a function making them: only the ground source asks); model_scale: the model's own scale
        relative to `depth` (1 when depth is the model's metric depth), for the fit's ratio."""
        s = self.settings

        def fit(name: str) -> ScaleFit:
            if name == 'ground':
                if points is None:
                    return ScaleFit('ground', reason='no predicted points')
                return fit_ground(points, valid, s.camera_height, s.camera_pitch, s.camera_roll, s.ground_max_tilt,
                                  s.min_points, model_scale)
            anchors, reason = self.buffers[name].nearest(stamp)
            if anchors is None:
                return ScaleFit(name, reason=reason)
            return fit_anchors(anchors, intrinsics, depth, valid, s.min_points, model_scale)

        self.last = self.chooser.choose(fit)
        return self.last

    def diagnostics(self) -> dict[str, str]:
        """Key/values for a diagnostics status: the last frame's source and fit, frames per source, and why each
        source that is not in use is not."""
        out: dict[str, str] = {}
        if self.last is not None:
            f = self.last.fit
            out['scale_source'] = self.last.source
            if f.usable:
                out.update({'scale_anchor.matched': str(f.matched), 'scale_anchor.inliers': str(f.inliers),
                            'scale_anchor.residual': f'{f.residual:.4f}', 'scale_anchor.ratio': f'{f.ratio:.4f}'})
        for name, count in self.chooser.frames.items():
            out[f'scale_source.frames.{name}'] = str(count)
        for name, reason in self.chooser.reasons.items():
            if reason:
                out[f'scale_source.{name}.reason'] = reason
        return out
