"""The mailboxes of a camera's frame path: the newest-frame slot between the subscription callback and the model
stage, and the hand-over of one frame from the model stage to the publishing stage.

The newest frame wins: a frame put while another is still waiting replaces it, and the replaced one counts as a drop.
With one frame in flight and at most one waiting, the latency of a published frame is bounded by about two inference
times at any input rate, instead of growing with a queue.
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar('T')


class _Mailbox(Generic[T]):
    """At most one item behind a condition, and a close() that wakes every waiter (shared by both mailboxes)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early only when closed; True when closed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)

    def close(self) -> None:
        """Wake every waiter; later calls return at once (put drops its item, take returns None)."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class FrameSlot(_Mailbox[T]):
    """Thread-safe holder of at most one pending item, with put/drop counters."""

    def __init__(self) -> None:
        super().__init__()
        self.put_count = 0
        self.drop_count = 0

    def put(self, item: T) -> T | None:
        """Store `item`; return the frame it replaced (now dropped), or None."""
        with self._cond:
            replaced = self._item
            self._item = item
            self.put_count += 1
            if replaced is not None:
                self.drop_count += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to `timeout` seconds for an item and remove it; None on timeout or after close()."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def pending(self) -> bool:
        with self._cond:
            return self._item is not None


class SequenceGaps:
    """Frames lost before the node saw them (transport, a full subscription queue), from gaps in each publisher's
    publication sequence numbers (rclpy MessageInfo). Camera drivers do not number frames; DDS does."""

    def __init__(self) -> None:
        self._last: dict[object, int] = {}
        self.lost = 0

    def observe(self, publisher: object, sequence: int | None) -> int:
        """Record one received message; return how many of this publisher's messages were skipped before it."""
        if sequence is None or sequence <= 0:
            return 0
        last = self._last.get(publisher)
        self._last[publisher] = max(sequence, last or 0)
        gap = sequence - last - 1 if last is not None and sequence > last else 0
        self.lost += gap
        return gap


class HandOver(_Mailbox[T]):
    """One item passed from a producer stage to a consumer stage, in order, none lost, none twice.

    The producer waits for the hand-over to be free (`wait_free`) before it starts on its next item, so it never
    works on a frame that would then wait behind a full hand-over: with the model stage feeding the publishing
    stage, the frame the model runs is always the newest one, taken as late as possible."""

    def wait_free(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds until no item waits; False on timeout or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed, timeout)
            return self._item is None and not self._closed

    def put(self, item: T) -> None:
        """Hand `item` over, waiting while the previous one has not been taken (dropped after close())."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed)
            if not self._closed:
                self._item = item
                self._cond.notify_all()

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to `timeout` seconds for the item and remove it; None on timeout or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return None if self._closed else item


class StagePacer:
    """When the model stage should take its next frame: late enough that it finishes about when the outputs stage
    becomes free. When stage 2 is the slower one, a frame that stage 1 finished early would only wait in the
    hand-over, growing older; starting it later publishes a fresher frame at the same rate. Stage times are moving
    averages; `margin` starts stage 1 a little early, so a slow frame does not leave stage 2 idle. While either
    time is unknown, or stage 2 is idle, there is no delay (a GPU engine slower than stage 2 never waits)."""

    def __init__(self, weight: float = 0.2, margin: float = 1.2) -> None:
        self._lock = threading.Lock()
        self._weight, self._margin = weight, margin
        self._stage1: float | None = None  # seconds
        self._stage2: float | None = None
        self._free_at = 0.0  # time.perf_counter() when stage 2 is expected to be free (0: idle)

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else old + self._weight * (new - old)

    def stage1_done(self, seconds: float) -> None:
        with self._lock:
            self._stage1 = self._average(self._stage1, seconds)

    def stage2_started(self, now: float) -> None:
        with self._lock:
            self._free_at = now + self._stage2 if self._stage2 is not None else 0.0

    def stage2_done(self, seconds: float) -> None:
        with self._lock:
            self._stage2 = self._average(self._stage2, seconds)
            self._free_at = 0.0

    def lead(self) -> float:
        """How long before its consumer is free stage 1 should start (margin x its average; 0 while unknown)."""
        with self._lock:
            return 0.0 if self._stage1 is None else self._margin * self._stage1

    def delay(self, now: float) -> float:
        """Seconds stage 1 should wait before it takes a frame (0 = take one now)."""
        with self._lock:
            if self._stage1 is None or not self._free_at:
                return 0.0
            return max(0.0, self._free_at - now - self._margin * self._stage1)
