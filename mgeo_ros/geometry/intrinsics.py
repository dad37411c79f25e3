"""Pinhole intrinsics in pixels, with the conversions every layer needs.

Pixel convention: integer pixel centres (OpenCV/ROS), so the image centre is ((W-1)/2, (H-1)/2).
MoGe's normalized form uses pixel-centre uv in [0,1]: u = (x + 0.5) / W, so cx_norm = (cx + 0.5) / W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mgeo_ros.errors import BadInputError


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera: focal lengths and principal point in pixels for an image of width x height pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ('fx', 'fy'):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise BadInputError(f'Intrinsics.{name} must be a positive finite focal length in pixels, got {v!r}')
        for name in ('cx', 'cy'):
            if not math.isfinite(getattr(self, name)):
                raise BadInputError(f'Intrinsics.{name} must be finite, got {getattr(self, name)!r}')
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise BadInputError(f'Intrinsics size must be positive, got {self.width}x{self.height}')

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_K(cls, K, width: int, height: int) -> Intrinsics:
        """From a 3x3 (or row-major 9-element, as in CameraInfo.k) camera matrix in pixels."""
        k = np.asarray(K, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise BadInputError(f'K must have 9 elements, got {k.size}')
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    @classmethod
    def from_fov(cls, fov_x_rad: float, width: int, height: int, fov_y_rad: float | None = None) -> Intrinsics:
        """Centred camera from a horizontal FOV (and optionally vertical; square pixels otherwise)."""
        fx = width / (2.0 * math.tan(fov_x_rad / 2.0))
        fy = fx if fov_y_rad is None else height / (2.0 * math.tan(fov_y_rad / 2.0))
        return cls(fx, fy, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    @classmethod
    def from_normalized(cls, K_norm, width: int, height: int) -> Intrinsics:
        """From MoGe's normalized 3x3 (fx/W, fy/H, principal point in pixel-centre uv)."""
        k = np.asarray(K_norm, dtype=np.float64).reshape(3, 3)
        return cls(k[0, 0] * width, k[1, 1] * height, k[0, 2] * width - 0.5, k[1, 2] * height - 0.5,
                   int(width), int(height))

    # ---- views --------------------------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """3x3 float64 camera matrix in pixels."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians."""
        return 2.0 * math.atan(self.width / (2.0 * self.fx))

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return 2.0 * math.atan(self.height / (2.0 * self.fy))

    def normalized(self) -> np.ndarray:
        """MoGe's normalized 3x3: fx/W, fy/H, principal point in pixel-centre uv units."""
        return np.array([[self.fx / self.width, 0.0, (self.cx + 0.5) / self.width],
                         [0.0, self.fy / self.height, (self.cy + 0.5) / self.height],
                         [0.0, 0.0, 1.0]])

    def moge_focal(self) -> float:
        """Focal relative to the half image diagonal (MoGe's `focal`); sqrt(fx*fy) for non-square pixels."""
        return 2.0 * math.sqrt(self.fx * self.fy) / math.hypot(self.width, self.height)

    # ---- transforms ---------------------------------------------------------------------------------------------
    def resized(self, width: int, height: int, scale: tuple[float, float] | None = None) -> Intrinsics:
        """The same camera after resizing the whole image to width x height (pixel-centre exact).

        scale: (sx, sy) when it is not width/W, height/H: a JPEG decoded at 1/f of a size that is not a multiple of
        f (libjpeg maps each f x f block to one pixel and rounds the size up; `image_codec.ReducedFrame.scale`)."""
        sx, sy = (width / self.width, height / self.height) if scale is None else (float(scale[0]), float(scale[1]))
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          int(width), int(height))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Intrinsics:
        """The same camera after cropping (x0, y0, width, height); negative offsets mean padding (uncrop)."""
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, int(width), int(height))

    def decimated(self, stride: int) -> Intrinsics:
        """The camera seen by every stride-th pixel from (0, 0), i.e. image[::stride, ::stride] (sampling, not a
        resize: pixel u of the result is pixel stride·u of the original)."""
        stride = int(stride)
        if stride < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        return Intrinsics(self.fx / stride, self.fy / stride, self.cx / stride, self.cy / stride,
                          -(-self.width // stride), -(-self.height // stride))

    def flipped_horizontally(self) -> Intrinsics:
        """The camera seen in a left-right mirrored image."""
        return Intrinsics(self.fx, self.fy, self.width - 1 - self.cx, self.cy, self.width, self.height)
