"""Several cameras, one model: a thread-safe front of one `Predictor` that runs frames waiting from different cameras
as one batch, fairly.

Policy. Each camera talks to the model through its own view (`SharedModel.view`) and blocks until its frame is done,
so a camera has at most one frame in the queue. The model thread takes the oldest waiting frame together with the next
waiting frames of the same network input size, up to the batch limit (the backend's `max_batch`, or less if asked);
frames of another size keep their place for the next forward. A camera re-queues only after its frame is served, so
the queue order is a round-robin over the cameras that have a frame waiting: no camera starves, and a frame waits at
most one round, ceil(N / batch) forwards plus the one in flight.

Filling batches. A camera just served spends a moment postprocessing and publishing before it queues its next frame.
Running at once without it would split the cameras into two half batches for good (measured: batches of 1 and 3
alternating with four cameras and a batch-4 model, which pads the 1 to 4 and costs as much). So when the batch is
not full and a camera served by the last forwards has not come back yet, the model waits for it, at most `linger`
(a quarter of the median forward time, at most 0.5 s) after it was handed its result. A lone camera, or cameras
that are all already waiting, never wait.

Preprocessing and postprocessing run on the cameras' own threads; only `Backend.forward_batch` is serialized.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mgeo_ros.errors import MgeoError
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.predictor import Predictor


@dataclass
class _Request:
    image: np.ndarray  # [1,3,h,w]; the caller keeps it untouched until `done` is set
    tokens: int
    camera: str
    queued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    raw: RawOutput | None = None
    error: BaseException | None = None
    wait_ms: float = 0.0
    forward_ms: float = 0.0
    batch_size: int = 0


@dataclass
class SharedModelStats:
    """What the shared model did, for the model's own diagnostics status (read under `lock`)."""

    forwards: int = 0
    frames: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    served: collections.Counter = field(default_factory=collections.Counter)  # camera -> frames run
    forward_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mean_batch(self) -> float:
        with self.lock:
            return self.frames / self.forwards if self.forwards else 0.0


class SharedModel:
    """One Predictor's backend serving several cameras (see the module docstring for the scheduling policy)."""

    def __init__(self, predictor: Predictor, max_batch: int = 0) -> None:
        self.predictor = predictor
        backend_max = max(1, int(getattr(predictor.backend, 'max_batch', 1)))
        self.max_batch = backend_max if max_batch <= 0 else min(int(max_batch), backend_max)
        self.stats = SharedModelStats()
        self._queue: list[_Request] = []
        self._returning: dict[str, float] = {}  # camera -> when it got its last result (expected back soon)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name='mgeo_shared_model', daemon=True)
        self._thread.start()

    def view(self, camera: str, warn: Callable[[str], None] | None = None) -> Predictor:
        """The Predictor one camera uses: the shared backend through this queue, with the camera's own preprocessing
        buffers, mask threshold and warnings; its timings gain `batch_wait` (queued behind other cameras' frames;
        `forward` is then the whole batch's). One per camera thread: not thread-safe."""
        base = self.predictor
        return Predictor.on_backend(base.backend, base.num_tokens, base.preprocessor.input_size, base.mask_threshold,
                                    warn if warn is not None else base.warn,
                                    run=lambda image, tokens: self.forward(image, tokens, camera))

    def forward(self, image: np.ndarray, tokens: int, camera: str) -> RawOutput:
        """One camera's preprocessed frame through the queue: its RawOutput, with `batch_wait` and the batch's
        `forward` time in its timings."""
        request = self.run(image, tokens, camera)
        raw = request.raw
        raw.timings_ms = {'batch_wait': request.wait_ms, 'forward': request.forward_ms}
        return raw

    def run(self, image: np.ndarray, tokens: int, camera: str) -> _Request:
        """Queue one preprocessed frame and wait for its RawOutput (raises what the backend raised)."""
        request = _Request(image, int(tokens), camera)
        with self._cond:
            if self._closed:
                raise MgeoError('the shared model is closed')
            self._returning.pop(camera, None)
            self._queue.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request

    def close(self, timeout: float = 5.0) -> None:
        """Stop the model thread; frames still queued fail with MgeoError."""
        with self._cond:
            self._closed = True
            pending, self._queue = self._queue, []
            self._cond.notify_all()
        for r in pending:
            r.error = MgeoError('the shared model closed before this frame ran')
            r.done.set()
        self._thread.join(timeout)

    def linger(self) -> float:
        """How long (s) a short batch may wait for a camera that was just served: a quarter of a forward."""
        with self.stats.lock:
            recent = sorted(self.stats.forward_ms)
        return min(0.5, 0.25 * recent[len(recent) // 2] / 1e3) if recent else 0.0

    def _same_input(self) -> list[_Request]:
        head = self._queue[0]
        return [r for r in self._queue if r.image.shape == head.image.shape and r.tokens == head.tokens]

    def _wait_for_returning(self, linger: float) -> None:
        """While the head's batch is not full, wait for cameras served less than `linger` ago (caller holds the
        lock; returns at once when there are none)."""
        while not self._closed and self._queue and len(self._same_input()) < self.max_batch:
            now = time.perf_counter()
            self._returning = {c: t for c, t in self._returning.items() if now - t < linger}
            if not self._returning:
                return
            self._cond.wait(min(t + linger for t in self._returning.values()) - now)

    def _take_batch(self) -> list[_Request]:
        """The oldest request and the next ones of the same input, up to max_batch (caller holds the lock)."""
        batch = self._same_input()[:self.max_batch]
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    def _loop(self) -> None:
        while True:
            linger = self.linger() if self.max_batch > 1 else 0.0
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                self._wait_for_returning(linger)
                if self._closed:
                    return
                batch = self._take_batch()
            t0 = time.perf_counter()
            try:
                images = batch[0].image if len(batch) == 1 else np.concatenate([r.image for r in batch])
                raws = self.predictor.backend.forward_batch(images, batch[0].tokens)
                error = None
            except Exception as exc:  # handed to every caller of this batch; the thread keeps serving
                raws, error = [None] * len(batch), exc
            ms = (time.perf_counter() - t0) * 1e3
            with self.stats.lock:
                self.stats.forwards += 1
                self.stats.frames += len(batch)
                self.stats.batch_sizes[len(batch)] += 1
                self.stats.forward_ms.append(ms)
                self.stats.errors += error is not None
                for r in batch:
                    self.stats.served[r.camera] += 1
            done = time.perf_counter()
            with self._cond:
                for r in batch:
                    self._returning[r.camera] = done
            for r, raw in zip(batch, raws, strict=True):
                r.raw, r.error = raw, error
                r.wait_ms = (t0 - r.queued) * 1e3
                r.forward_ms, r.batch_size = ms, len(batch)
                r.done.set()
