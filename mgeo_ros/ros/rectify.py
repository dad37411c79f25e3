"""Undistort (rectify) a raw camera image in the node, for cameras that publish only image_raw with D != 0.

What image_proc's rectify does, with OpenCV maps built once per CameraInfo (K, D, R, P, model, size) and reused for
every frame: one cv2.remap per frame. The rectified image is described by P (K when P is not filled in), which is
what `convert.camera_info_intrinsics` then reads.
"""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo

from mgeo_ros.errors import BadInputError
from mgeo_ros.ros.convert import projection_is_valid, resize_camera_info

PINHOLE_MODELS = ('plumb_bob', 'rational_polynomial')
FISHEYE_MODELS = ('equidistant',)


def has_distortion(msg: CameraInfo) -> bool:
    """Whether D holds any non-zero coefficient (an empty D means no distortion)."""
    d = np.asarray(msg.d, np.float64)
    return bool(d.size) and bool(np.any(np.abs(d) > 1e-12))


def looks_unrectified(msg: CameraInfo) -> bool:
    """D != 0 but P equals K (and R = I): a driver that calibrated the raw image without describing a rectified one,
    so an image on this topic is most likely still distorted."""
    if not has_distortion(msg) or not projection_is_valid(msg):
        return False
    k = np.asarray(msg.k, np.float64).reshape(3, 3)
    p = np.asarray(msg.p, np.float64).reshape(3, 4)
    return bool(np.allclose(p[:, :3], k, rtol=1e-6, atol=1e-6))


def _key(msg: CameraInfo, width: int, height: int) -> tuple:
    return (width, height, int(msg.width), int(msg.height), msg.distortion_model, tuple(msg.d), tuple(msg.k),
            tuple(msg.r), tuple(msg.p), int(msg.binning_x), int(msg.binning_y), int(msg.roi.x_offset),
            int(msg.roi.y_offset), int(msg.roi.width), int(msg.roi.height))


class Rectifier:
    """Remaps frames to the rectified image their CameraInfo describes; maps cached for the last few cameras."""

    def __init__(self, cache_size: int = 4) -> None:
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_size
        self.builds = 0  # how many map pairs were computed (a steady camera: one)

    def maps(self, msg: CameraInfo, width: int, height: int,
             scale: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(map1, map2) for cv2.remap from a width x height raw image (CameraInfo rescaled to it if needed;
        `scale`: the CameraInfo's pixels -> the image's when not width/W, height/H, as `resize_camera_info`)."""
        key = (*_key(msg, width, height), scale)
        cached = self._maps.get(key)
        if cached is not None:
            return cached
        info = msg if (int(msg.width), int(msg.height)) == (width, height) and not _has_window(msg) \
            else resize_camera_info(msg, width, height, scale)
        model = info.distortion_model or 'plumb_bob'
        k = np.asarray(info.k, np.float64).reshape(3, 3)
        d = np.asarray(info.d, np.float64)
        r = np.asarray(info.r, np.float64).reshape(3, 3)
        if not np.any(r):  # an unset R means identity (image_geometry does the same)
            r = np.eye(3)
        new = np.asarray(info.p, np.float64).reshape(3, 4)[:, :3] if projection_is_valid(info) else k
        if model in PINHOLE_MODELS:
            maps = cv2.initUndistortRectifyMap(k, d, r, new, (width, height), cv2.CV_16SC2)
        elif model in FISHEYE_MODELS:
            if d.size < 4:
                raise BadInputError(f'camera_info.d has {d.size} coefficients; equidistant needs 4')
            maps = cv2.fisheye.initUndistortRectifyMap(k, d[:4], r, new, (width, height), cv2.CV_16SC2)
        else:
            raise BadInputError(f'camera_info.distortion_model {model!r} cannot be rectified; one of '
                                f'{", ".join(PINHOLE_MODELS + FISHEYE_MODELS)}')
        if len(self._maps) >= self._cache_size:
            self._maps.pop(next(iter(self._maps)))
        self._maps[key] = maps
        self.builds += 1
        return maps

    def __call__(self, rgb: np.ndarray, msg: CameraInfo, scale: tuple[float, float] | None = None) -> np.ndarray:
        """The rectified frame (same size; pixels outside the raw image are black, as image_proc leaves them);
        `scale` as in `maps` (a frame decoded at a reduced size)."""
        height, width = rgb.shape[:2]
        map1, map2 = self.maps(msg, width, height, scale)
        return cv2.remap(rgb, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _has_window(msg: CameraInfo) -> bool:
    roi = msg.roi
    windowed = roi.width > 0 and roi.height > 0 and (roi.width, roi.height) != (msg.width, msg.height)
    return windowed or max(int(msg.binning_x), 1) > 1 or max(int(msg.binning_y), 1) > 1
