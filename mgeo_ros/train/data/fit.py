"""Fitting a `Sample` to a training/evaluation size: a data operation shared by the batch stream and the held-out set
(it lives with the data, so neither of them imports the other)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from mgeo_ros.train.data.sample import Sample


def fit_sample(sample: Sample, width: int, height: int) -> Sample:
    """Centre-crop to the target aspect ratio, then resize (area for RGB, nearest for depth/mask); intrinsics follow."""
    h, w = sample.depth.shape
    if (w, h) == (width, height):
        return sample
    target = width / height
    if w / h > target:
        cw, ch = max(1, round(h * target)), h
    else:
        cw, ch = w, max(1, round(w / target))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    rgb = sample.rgb[y0:y0 + ch, x0:x0 + cw]
    depth = sample.depth[y0:y0 + ch, x0:x0 + cw]
    mask = sample.mask[y0:y0 + ch, x0:x0 + cw]
    intr = sample.intrinsics.cropped(x0, y0, cw, ch).resized(width, height)
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    rgb = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interp)
    depth = cv2.resize(np.ascontiguousarray(depth, dtype=np.float32), (width, height),
                       interpolation=cv2.INTER_NEAREST)
    mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return replace(sample, rgb=rgb, depth=depth, mask=mask, intrinsics=intr)
