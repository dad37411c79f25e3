"""The byte arrays the node's output messages are written into, kept from one frame to the next.

rclpy's `publish` copies a message into its C form and serializes it before it returns (rclpy/publisher.py ->
`_rclpy.Publisher.publish`: convert_from_py copies a buffer-protocol `data` with PyBuffer_ToContiguous into a new
uint8 sequence, then rcl_publish serializes it), and the generated message classes store an `array('B')` assigned
to `data` as it is (no copy, no per-element check). So once `publish` has returned, nothing refers to the array any
more and the next frame may write into it again: no frame-sized allocation, no zero fill, no page faults (a
1280x720 xyzrgb cloud is 14.7 MB). Only the node's worker thread uses these; do not hand them to anything that
keeps a message after `publish`.
"""
from __future__ import annotations

import array

import numpy as np


class OutputBuffers:
    """One `array('B')` per output name, replaced only when the size it must hold changes."""

    def __init__(self) -> None:
        self._store: dict[str, tuple[array.array, np.ndarray]] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> tuple[array.array, np.ndarray]:
        """(bytes for the message, a writable C-contiguous `shape` view of them in `dtype`). The contents are
        whatever the previous frame left: write every element."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        held = self._store.get(name)
        if held is None or len(held[0]) != nbytes:
            data = array.array('B', bytes(nbytes))
            held = (data, np.frombuffer(data, np.uint8))
            self._store[name] = held
        data, raw = held
        return data, raw.view(dtype).reshape(shape)

    def bytes_for(self, name: str, nbytes: int) -> array.array:
        """Just the bytes (for a message whose layout the caller's converter writes itself, e.g. a cloud)."""
        return self.take(name, (int(nbytes),), np.uint8)[0]
