"""A backend that replays recorded network outputs, so a benchmark times only the work around the network.

`mgeo bench --node` records a few frames' outputs with the real model once, then replays them: every frame goes
through the node's real preprocess, postprocess and publishing, and `forward` costs a copy instead of inference,
after waiting `forward_ms` with the GIL released (`time.sleep`): the shape of a GPU engine, whose Python thread
waits in a native call while the device works.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.runtime.backends.base import Backend, RawOutput
from mgeo_ros.runtime.preprocess import input_hw


def _copied(raw: RawOutput) -> RawOutput:
    """`raw` with arrays of its own."""
    return RawOutput(points=raw.points.copy(), mask=raw.mask.copy(), metric_scale=float(raw.metric_scale),
                     normal=None if raw.normal is None else raw.normal.copy())


def record(backend: Backend, images: Sequence[np.ndarray], num_tokens: int) -> list[RawOutput]:
    """Run `backend` on preprocessed [1,3,h,w] images and keep private copies of its outputs."""
    return [_copied(backend.forward(image, num_tokens)) for image in images]


class ReplayBackend(Backend):
    """Returns the recorded outputs in turn (cycling). Each call hands out fresh copies, as a real backend returns
    fresh arrays, so a consumer that works in place cannot change the next replay. The input must have the network
    size the outputs were recorded at: replaying one camera's outputs for another is refused."""

    name = 'replay'

    def __init__(self, outputs: Sequence[RawOutput], input_size: tuple[int, int] | None = None,
                 label: str = 'recorded outputs', forward_ms: float = 0.0, input_form: str = 'float') -> None:
        if not outputs:
            raise BadInputError('ReplayBackend needs at least one recorded output')
        self.outputs = list(outputs)
        self.device = label
        self.input_size = input_size  # the recording backend's fixed (W, H), or None: sized by the token budget
        self.metadata = {}
        self._next = 0
        self._shape = self.outputs[0].mask.shape
        self.forward_s = max(0.0, float(forward_ms)) / 1e3
        self.input_form = input_form  # the recording model's (a uint8-input file is handed the resized bytes)

    def seek(self, index: int) -> None:
        """The next `forward` returns recorded output `index` (mod their count): two paths compared on one frame."""
        self._next = index % len(self.outputs)

    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        h, w = input_hw(image)
        if (h, w) != self._shape:
            raise BadInputError(f'replay: input {w}x{h} but the outputs were recorded at '
                                f'{self._shape[1]}x{self._shape[0]}')
        raw = self.outputs[self._next]
        self._next = (self._next + 1) % len(self.outputs)
        if self.forward_s:
            time.sleep(self.forward_s)  # releases the GIL, as a device wait does
        return _copied(raw)
