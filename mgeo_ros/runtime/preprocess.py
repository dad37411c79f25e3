"""Frame -> network input, shared by every backend: resize to the token grid (or a fixed size), scale to [0,1] NCHW.

Buffers are kept between frames of the same size, so a steady camera stream allocates nothing per frame.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from mgeo_ros.errors import BadInputError

PATCH = 14  # DINOv2 patch size: the network input is 14 px per token


def token_grid(width: int, height: int, num_tokens: int) -> tuple[int, int]:
    """MoGe's token grid (base_w, base_h) for an image aspect ratio and a token budget."""
    a = width / height
    base_h = max(1, round(math.sqrt(num_tokens / a)))
    base_w = max(1, round(math.sqrt(num_tokens * a)))
    return base_w, base_h


def network_size(width: int, height: int, num_tokens: int) -> tuple[int, int]:
    """Network input (W, H) in pixels for a frame size: 14 px per token of the grid."""
    bw, bh = token_grid(width, height, num_tokens)
    return PATCH * bw, PATCH * bh


def grid_tokens(net_width: int, net_height: int) -> int:
    """The token count that makes the model reproduce exactly this grid from a 14-multiple input.

    With a = bw/bh and N = bw*bh, round(sqrt(N/a)) = bh and round(sqrt(N*a)) = bw, so passing N to the model
    removes any rounding disagreement between our grid and the model's.
    """
    return (net_width // PATCH) * (net_height // PATCH)


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 H×W×3 frame (BadInputError names the problem)."""
    if not isinstance(rgb, np.ndarray):
        raise BadInputError(f'rgb must be a numpy array, got {type(rgb).__name__}')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BadInputError(f'rgb must be H×W×3, got shape {rgb.shape}')
    if rgb.dtype != np.uint8:
        raise BadInputError(f'rgb must be uint8, got {rgb.dtype}')
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise BadInputError(f'rgb is too small: {rgb.shape[1]}x{rgb.shape[0]}')
    return rgb


class Preprocessor:
    """Resize + normalize into a reused float32 [1,3,H,W] buffer."""

    def __init__(self, num_tokens: int = 1200, input_size: tuple[int, int] | None = None) -> None:
        if input_size is None and num_tokens <= 0:
            raise BadInputError(f'num_tokens must be positive, got {num_tokens}')
        self.num_tokens = int(num_tokens)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self._resized: np.ndarray | None = None
        self._planes: list[np.ndarray] = []
        self._tensor: np.ndarray | None = None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """Network (W, H) for a frame of width x height."""
        if self.input_size is not None:
            return self.input_size
        return network_size(width, height, self.num_tokens)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 H×W×3 -> float32 [1,3,h,w] in [0,1]; the returned array is reused by the next call."""
        check_rgb(rgb)
        h, w = rgb.shape[:2]
        nw, nh = self.target_size(w, h)
        if self._tensor is None or self._tensor.shape[2:] != (nh, nw):
            self._resized = np.empty((nh, nw, 3), np.uint8)
            self._planes = [np.empty((nh, nw), np.uint8) for _ in range(3)]
            self._tensor = np.empty((1, 3, nh, nw), np.float32)
        if (nw, nh) == (w, h):
            resized = np.ascontiguousarray(rgb)
        else:
            # Strong shrinking (< 1/2 per axis) needs antialiasing like MoGe's antialiased bilinear: INTER_AREA.
            # Milder shrinking or enlarging: bilinear, an order of magnitude cheaper than INTER_AREA at a non-integer
            # factor and alias-free enough at these factors.
            interp = cv2.INTER_AREA if (nw < w / 2 or nh < h / 2) else cv2.INTER_LINEAR
            resized = cv2.resize(rgb, (nw, nh), dst=self._resized, interpolation=interp)
        # HWC -> CHW by OpenCV's SIMD split into reused planes, then one contiguous uint8 -> float32 pass per plane:
        # twice as fast as one numpy pass reading the transposed (strided) view, with the same values.
        cv2.split(resized, self._planes)
        scale = np.float32(1.0 / 255.0)
        for plane, out in zip(self._planes, self._tensor[0], strict=True):
            np.multiply(plane, scale, out=out, casting='unsafe')
        return self._tensor
