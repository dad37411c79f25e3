"""Counters and timings of the node, summarized into one /diagnostics status.

`NodeStats` is plain Python (unit-testable); `to_diagnostic_status` builds the ROS message.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field

LEVEL_OK, LEVEL_WARN, LEVEL_ERROR, LEVEL_STALE = 0, 1, 2, 3


@dataclass(frozen=True)
class StageSummary:
    """One stage over the window: median, p95 (nearest rank), mean, max in ms, and how many frames it holds."""

    median: float
    p95: float
    mean: float
    max: float
    count: int


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values by nearest rank: always one of the measured values, no interpolation,
    so a p95 over 20 frames is the 19th-slowest frame rather than a blend."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stage_key_values(stage: str, st: StageSummary) -> list[tuple[str, str]]:
    """The diagnostics keys of one stage: `latency_ms.<stage>.median`, `.p95`, `.mean`, `.max` (ms) and `.count`."""
    key = f'latency_ms.{stage}'
    return [(f'{key}.median', f'{st.median:.3f}'), (f'{key}.p95', f'{st.p95:.3f}'), (f'{key}.mean', f'{st.mean:.3f}'),
            (f'{key}.max', f'{st.max:.3f}'), (f'{key}.count', str(st.count))]


def summarize(values) -> StageSummary:
    """StageSummary of a non-empty sequence of times in ms."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    median = ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    return StageSummary(median, nearest_rank(ordered, 0.95), sum(ordered) / n, ordered[-1], n)


class Timings:
    """Rolling window of per-stage wall times in ms (the last `window` frames of each stage)."""

    def __init__(self, window: int = 100) -> None:
        self.window = int(window)
        self._stages: dict[str, collections.deque] = {}

    def add(self, stage: str, ms: float) -> None:
        self._stages.setdefault(stage, collections.deque(maxlen=self.window)).append(float(ms))

    def clear(self) -> None:
        """Forget every stage's values (a benchmark's warm-up ends)."""
        self._stages.clear()

    def values(self, stage: str) -> list[float]:
        """The window's values of one stage, oldest first (empty when the stage was never timed)."""
        return list(self._stages.get(stage, ()))

    def summary(self) -> dict[str, StageSummary]:
        return {k: summarize(v) for k, v in self._stages.items() if v}


@dataclass
class NodeStats:
    """Everything the node counts. Mutated from the callback thread and the worker; guarded by `lock`."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    lost_before_node: int = 0
    skipped_no_subscribers: int = 0
    bad_input: collections.Counter = field(default_factory=collections.Counter)
    size_changes: int = 0
    camera_changes: int = 0
    scale_raw: float = math.nan
    scale_smoothed: float = math.nan
    scale_resets: int = 0
    shift: float = math.nan
    fov_x_deg: float = math.nan
    fov_y_deg: float = math.nan
    intrinsics_source: str = 'none yet'
    resolution: str = 'none yet'
    decoded: str = 'none yet'  # WxH the frame was decoded at (smaller than resolution with output_scale < 1)
    output_size: str = 'none yet'  # WxH of the outputs
    model_status: str = 'loading'  # unconfigured (lifecycle) | loading | ready | error
    active: bool = False  # subscribed to the camera (a lifecycle node is not until activated)
    model_error: str = ''
    backend: str = ''
    scale_anchor: dict = field(default_factory=dict)  # ScaleAnchoring.diagnostics() of the last frame
    timings: Timings = field(default_factory=Timings)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _publish_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    def count_bad(self, reason: str) -> None:
        with self.lock:
            self.bad_input[reason] += 1

    def mark_published(self, now: float | None = None) -> None:
        with self.lock:
            self.processed += 1
            self._publish_times.append(time.monotonic() if now is None else now)

    def output_rate(self, now: float | None = None, horizon: float = 5.0) -> float:
        """Published frames per second over the last `horizon` seconds."""
        now = time.monotonic() if now is None else now
        with self.lock:
            recent = [t for t in self._publish_times if now - t <= horizon]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0

    def level_and_message(self) -> tuple[int, str]:
        if self.model_status == 'error':
            return LEVEL_ERROR, f'model not loaded: {self.model_error}'
        if self.model_status == 'loading':
            return LEVEL_WARN, 'loading model'
        if self.model_status == 'unconfigured':
            return LEVEL_WARN, 'unconfigured (lifecycle): configure and activate it'
        if not self.active:
            return LEVEL_WARN, 'inactive (lifecycle): not subscribed to the camera'
        if self.received == 0:
            return LEVEL_WARN, 'no image received yet'
        if sum(self.bad_input.values()) and self.processed == 0:
            return LEVEL_ERROR, 'every frame so far was rejected as bad input'
        return LEVEL_OK, 'running'

    def key_values(self) -> list[tuple[str, str]]:
        """Flat (key, value) pairs for DiagnosticStatus.values. Timings: per stage `latency_ms.<stage>.median`, `.p95`,
        `.mean`, `.max` (ms, plain numbers) and `.count` (frames in the window so far). With scale anchors: the
        last frame's `scale_source`, its fit (`scale_anchor.matched`, `.inliers`, `.residual`, `.ratio` = anchored
        / model scale), `scale_source.frames.<source>` and `scale_source.<source>.reason` for a source not used."""
        with self.lock:
            kv = [
                ('frames_received', self.received),
                ('frames_published', self.processed),
                ('frames_dropped', self.dropped),
                ('frames_lost_before_node', self.lost_before_node),
                ('frames_skipped_no_subscribers', self.skipped_no_subscribers),
                ('bad_input_total', sum(self.bad_input.values())),
            ]
            kv += [(f'bad_input.{k}', v) for k, v in sorted(self.bad_input.items())]
            kv += [
                ('output_rate_hz', f'{self.output_rate():.2f}'),
                ('image_size_changes', self.size_changes),
                ('camera_changes', self.camera_changes),
                ('metric_scale_raw', f'{self.scale_raw:.5g}'),
                ('metric_scale_smoothed', f'{self.scale_smoothed:.5g}'),
                ('scale_filter_resets', self.scale_resets),
                ('recovered_shift', f'{self.shift:.5g}'),
                ('intrinsics_source', self.intrinsics_source),
                ('fov_x_deg', f'{self.fov_x_deg:.2f}'),
                ('fov_y_deg', f'{self.fov_y_deg:.2f}'),
                ('resolution', self.resolution),
                ('decoded', self.decoded),
                ('output_size', self.output_size),
                ('model_status', self.model_status),
                ('active', self.active),
                ('backend', self.backend),
            ]
            kv += sorted(self.scale_anchor.items())
            kv.append(('latency_window_frames', self.timings.window))
            for stage, st in sorted(self.timings.summary().items()):
                kv += stage_key_values(stage, st)
        return [(k, str(v)) for k, v in kv]


def to_diagnostic_status(stats: NodeStats, name: str, hardware_id: str):
    """One DiagnosticStatus for the node (level by health, values = counters, timings, scale, FOV)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    level, message = stats.level_and_message()
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, message=message)
    status.level = bytes([level])
    status.values = [KeyValue(key=k, value=v) for k, v in stats.key_values()]
    return status


class ThrottledLog:
    """Per-reason log throttling: the first occurrence is logged, then at most one line per `period` seconds that
    says how many were suppressed. A plain per-call-site throttle would hide a new reason behind an old one."""

    def __init__(self, emit, period: float = 5.0) -> None:
        self._emit = emit
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, reason: str, text: str, now: float | None = None) -> bool:
        """Log `text` under `reason` unless throttled; return whether it was emitted."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.period:
                self._suppressed[reason] += 1
                return False
            skipped = self._suppressed.pop(reason, 0)
            self._last[reason] = now
        self._emit(text + (f' ({skipped} similar messages suppressed)' if skipped else ''))
        return True
