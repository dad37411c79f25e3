"""Frame-size arrays kept from one frame to the next, stored in bytes a ROS message can carry without a copy.

rclpy's `publish` copies a message into its C form and serializes it before it returns (rclpy/publisher.py ->
`_rclpy.Publisher.publish`: convert_from_py copies a buffer-protocol `data` with PyBuffer_ToContiguous into a new
uint8 sequence, then rcl_publish serializes it), and the generated message classes store an `array('B')` assigned
to `data` as it is (no copy, no per-element check). So once `publish` has returned, nothing refers to the array any
more and the next frame may write into it again: no frame-sized allocation, no zero fill, no page faults (a
1280x720 xyzrgb cloud is 14.7 MB). The contract: one thread writes and publishes a frame's arrays before it starts
the next frame; do not hand them to anything that keeps them after that.
"""
from __future__ import annotations

import array

import numpy as np


class FrameBuffers:
    """One `array('B')` per name, replaced only when the size it must hold changes."""

    def __init__(self) -> None:
        self._store: dict[str, tuple[array.array, np.ndarray]] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> tuple[array.array, np.ndarray]:
        """(the bytes, a writable C-contiguous `shape` view of them in `dtype`). The contents are whatever the
        previous frame left: write every element."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        held = self._store.get(name)
        if held is None or len(held[0]) != nbytes:
            data = array.array('B', bytes(nbytes))
            held = (data, np.frombuffer(data, np.uint8))
            self._store[name] = held
        data, raw = held
        return data, raw.view(dtype).reshape(shape)

    def array(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """Just the view (a working array nobody publishes)."""
        return self.take(name, shape, dtype)[1]

    def bytes_for(self, name: str, nbytes: int) -> array.array:
        """Just the bytes (for a message whose layout the caller's converter writes itself, e.g. a cloud)."""
        return self.take(name, (int(nbytes),), np.uint8)[0]
