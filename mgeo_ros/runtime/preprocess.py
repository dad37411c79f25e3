"""Frame -> network input, shared by every backend: resize to the token grid (or a fixed size), then either scale to
[0,1] NCHW float (`Preprocessor.__call__`) or hand the resized bytes over as they are (`Preprocessor.pixels`, for a
graph that takes uint8 [N,H,W,3] and converts them itself: `mgeo export --input-form uint8`).

Buffers are kept between frames of the same size, so a steady camera stream allocates nothing per frame.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.runtime.model_layout import FLOAT_FORM, UINT8_FORM

PATCH = 14  # DINOv2 patch size: the network input is 14 px per token
PIXEL_SCALE = np.float32(1.0 / 255.0)  # byte -> [0,1]; a uint8-input graph multiplies by the same float32


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

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 H×W×3 -> the resized frame as uint8 [1,h,w,3] (the input of a uint8-input graph); reused by the
        next call (a view of `rgb` itself when no resize is needed)."""
        return self._resize(rgb)[None]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 H×W×3 -> float32 [1,3,h,w] in [0,1]; the returned array is reused by the next call."""
        resized = self._resize(rgb)
        # HWC -> CHW by OpenCV's SIMD split into reused planes, then one contiguous uint8 -> float32 pass per plane:
        # twice as fast as one numpy pass reading the transposed (strided) view, with the same values.
        cv2.split(resized, self._planes)
        for plane, out in zip(self._planes, self._tensor[0], strict=True):
            np.multiply(plane, PIXEL_SCALE, out=out, casting='unsafe')
        return self._tensor

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        """The frame at the network size, uint8 h×w×3 (in the reused buffer)."""
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
        return resized


def as_input_form(images: np.ndarray, form: str) -> np.ndarray:
    """A network input batch in either form -> `form`: float32 [N,3,H,W] in [0,1] (FLOAT_FORM) or uint8 [N,H,W,3]
    (UINT8_FORM). Unchanged when it already is; float -> uint8 rounds to the nearest byte (exact for a frame the
    Preprocessor made), uint8 -> float is the Preprocessor's own multiply."""
    is_bytes = images.dtype == np.uint8
    if form == UINT8_FORM:
        if is_bytes:
            return images
        return np.ascontiguousarray(np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    if form != FLOAT_FORM:
        raise BadInputError(f'input form must be {FLOAT_FORM!r} or {UINT8_FORM!r}, got {form!r}')
    if not is_bytes:
        return images
    n, h, w, c = images.shape
    out = np.empty((n, c, h, w), np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), PIXEL_SCALE, out=out, casting='unsafe')
    return out


def input_hw(images: np.ndarray) -> tuple[int, int]:
    """(H, W) of a network input batch of either form."""
    return tuple(images.shape[1:3]) if images.dtype == np.uint8 else tuple(images.shape[2:])
