"""One frame through a model's reference `infer`, for the training tools that need a model's own depth: the held-out
evaluation during training, refinement's teacher and distillation's pseudo-labels."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mgeo_ros.geometry.intrinsics import Intrinsics


@dataclass
class TeacherDepth:
    """depth: H×W float32 metres as the model gives them (no mask applied); valid: mask head (if any) & finite & > 0;
    intrinsics: the given camera, or the one the model recovered."""

    depth: np.ndarray
    valid: np.ndarray
    intrinsics: Intrinsics

    def masked(self) -> np.ndarray:
        """Depth with NaN where the model is not valid."""
        return np.where(self.valid, self.depth, np.float32(np.nan)).astype(np.float32)


@torch.no_grad()
def infer_depth(model: torch.nn.Module, rgb: np.ndarray, num_tokens: int,
                intrinsics: Intrinsics | None = None) -> TeacherDepth:
    """RGB uint8 H×W×3 -> the model's metric depth; with `intrinsics` its horizontal FOV is given to the model."""
    h, w = rgb.shape[:2]
    device = next(model.parameters()).device
    image = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).float().div(255.0)
    fov_x = None if intrinsics is None else math.degrees(intrinsics.fov_x)
    out = model.infer(image, num_tokens=num_tokens, fov_x=fov_x, apply_mask=False, use_fp16=False)
    depth = out['depth'].float().cpu().numpy().astype(np.float32, copy=False)
    valid = np.isfinite(depth) & (depth > 0)
    if 'mask' in out:
        valid &= out['mask'].cpu().numpy().astype(bool)
    if intrinsics is None:
        intrinsics = Intrinsics.from_normalized(out['intrinsics'].float().cpu().numpy(), w, h)
    return TeacherDepth(depth=depth, valid=valid, intrinsics=intrinsics)
