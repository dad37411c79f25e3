"""The one small interface every inference backend implements, and what it returns."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger('mgeo_ros.runtime')

OUTPUT_NAMES = ('points', 'mask', 'metric_scale', 'normal')  # ONNX/engine output order; 'normal' only if present
INPUT_NAME = 'image'


@dataclass
class RawOutput:
    """Network outputs at the network input resolution (h×w), as numpy float32 on the host.

    points: h×w×3 affine-invariant point map (before shift and metric scale).
    mask: h×w validity probability in [0, 1].
    metric_scale: scalar that turns the shifted map into metres.
    normal: h×w×3 unit normals or None.
    timings_ms: per-stage wall times of the frame so far ('preprocess', 'forward').
    """

    points: np.ndarray
    mask: np.ndarray
    metric_scale: float
    normal: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict, repr=False)  # filled by Predictor.forward


class Backend(ABC):
    """Runs the network on a preprocessed [1,3,h,w] float32 image in [0,1].

    `input_size` is the fixed (W, H) the model was built for (ONNX / engine) or None when any 14-multiple works
    (PyTorch). `device` is a short human-readable description used in logs and benchmarks.
    """

    name: str = 'base'
    input_size: tuple[int, int] | None = None
    device: str = 'cpu'
    precision: str = 'fp32'
    metadata: dict[str, str] = {}
    max_batch: int = 1  # frames one forward_batch call runs at once (several cameras); 1 = one after another
    threads: int | None = None  # intra-op CPU threads it was set to (None: the library's default, or not applicable)
    # what `forward` is best handed: 'float' (float32 [N,3,h,w] in [0,1], `Preprocessor.__call__`) or 'uint8' (the
    # resized frame's bytes [N,h,w,3], `Preprocessor.pixels`: the graph converts them). A backend whose form is
    # 'uint8' also takes the float form (converted back to bytes), so older callers keep working.
    input_form: str = 'float'

    @abstractmethod
    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        """image: float32 [1,3,h,w] (or uint8 [1,h,w,3] where `input_form` is 'uint8'); num_tokens: the grid's token
        count (ignored by fixed-shape backends)."""

    def forward_batch(self, images: np.ndarray, num_tokens: int) -> list[RawOutput]:
        """images: float32 [B,3,h,w] of one size -> one RawOutput per frame. This default runs them one by one;
        backends that batch (torch natively, an ONNX/engine exported with a batch) override it."""
        return [self.forward(images[i:i + 1], num_tokens) for i in range(images.shape[0])]

    def synchronize(self) -> None:
        """Wait for queued device work (GPU backends); a no-op on CPU."""
        return None

    def peak_device_memory_bytes(self) -> int | None:
        """Peak device memory since the backend was created, when the backend can tell."""
        return None


def split_raw_outputs(points, mask, metric_scale, normal=None, count: int | None = None) -> list[RawOutput]:
    """Batched network outputs ([B,...]; metric_scale [B] or [B,1]) -> the first `count` frames' RawOutputs (the rest
    of a padded static batch is dropped)."""
    n = points.shape[0] if count is None else int(count)
    scales = np.asarray(metric_scale, dtype=np.float32).reshape(points.shape[0], -1)[:, 0]
    return [as_raw_output(points[i:i + 1], mask[i:i + 1], scales[i], None if normal is None else normal[i:i + 1])
            for i in range(n)]


def as_raw_output(points, mask, metric_scale, normal=None) -> RawOutput:
    """Squeeze batch-1 outputs into a RawOutput (host float32)."""
    pts = np.asarray(points, dtype=np.float32).reshape(points.shape[-3:])
    m = np.asarray(mask, dtype=np.float32).reshape(mask.shape[-2:])
    nrm = None if normal is None else np.asarray(normal, dtype=np.float32).reshape(normal.shape[-3:])
    return RawOutput(points=pts, mask=m, metric_scale=float(np.asarray(metric_scale).reshape(-1)[0]), normal=nrm)
