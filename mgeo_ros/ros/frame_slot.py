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


class FrameSlot(Generic[T]):
    """Thread-safe holder of at most one pending item, with put/drop counters."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
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

    def close(self) -> None:
        """Wake every waiter; later take() calls return None at once."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


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


class HandOver(Generic[T]):
    """One item passed from a producer stage to a consumer stage, in order, none lost, none twice.

    The producer waits for the hand-over to be free (`wait_free`) before it starts on its next item, so it never
    works on a frame that would then wait behind a full hand-over: with the model stage feeding the publishing
    stage, the frame the model runs is always the newest one, taken as late as possible."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

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

    def close(self) -> None:
        """Wake every waiter; later calls return at once (put drops its item, take returns None)."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
