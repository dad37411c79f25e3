"""`Sample`: one training/evaluation frame; every dataset yields these."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics


@dataclass
class Sample:
    """rgb: H×W×3 uint8. depth: H×W float32 metres, NaN invalid. mask: H×W bool (valid depth).

    metric: whether the depth's absolute scale is trustworthy (synthetic, calibrated sensors) or only up to scale.
    source: an id that names where the frame came from (file stem, bag + stamp, synth seed + index).
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: Intrinsics
    mask: np.ndarray
    metric: bool = True
    source: str = ''
