"""Image -> summed multi-layer ViT features on the token grid, plus the CLS token (MoGe-2's `DINOv2Encoder`)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mgeo_ros.model.configs import vit_spec
from mgeo_ros.model.vit import VisionTransformer


class DINOv2Encoder(nn.Module):
    """Resize to 14 px per token, ImageNet-normalise, tap ViT layers, 1x1-project each and sum them."""

    def __init__(self, backbone: str | dict, intermediate_layers: int | Sequence[int], dim_out: int, **ignored):
        super().__init__()
        if ignored:  # the reference accepts (and ignores) deprecated encoder keys; so do we, loudly
            warnings.warn(f'model_config.encoder: ignoring unknown keys {sorted(ignored)}', stacklevel=2)
        spec = vit_spec(backbone)
        self.intermediate_layers = intermediate_layers if isinstance(intermediate_layers, int) \
            else [int(i) for i in intermediate_layers]
        self.backbone = VisionTransformer.from_spec(spec)
        # one projection per listed layer (as the reference; a repeated index yields one tap, extra projections idle)
        taps = intermediate_layers if isinstance(intermediate_layers, int) else len(self.intermediate_layers)
        self.output_projections = nn.ModuleList(
            nn.Conv2d(spec['embed_dim'], dim_out, kernel_size=1) for _ in range(taps))
        self.register_buffer('image_mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer('image_std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self._onnx_compatible_mode = False

    @property
    def onnx_compatible_mode(self) -> bool:
        return self._onnx_compatible_mode

    @onnx_compatible_mode.setter
    def onnx_compatible_mode(self, value: bool) -> None:
        self._onnx_compatible_mode = bool(value)
        self.backbone.onnx_compatible_mode = bool(value)

    def forward(self, image: torch.Tensor, rows, cols) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B,3,H,W] in [0,1] -> (features [B,dim_out,rows,cols], cls [B,D] of the last tapped layer)."""
        patch = self.backbone.patch_size
        x = F.interpolate(image, (rows * patch, cols * patch), mode='bilinear', align_corners=False,
                          antialias=not self._onnx_compatible_mode)
        x = (x - self.image_mean) / self.image_std
        taps = self.backbone.get_intermediate_layers(x, self.intermediate_layers)
        features = None
        for proj, (tokens, _) in zip(self.output_projections, taps):
            grid = tokens.permute(0, 2, 1).unflatten(2, (rows, cols)).contiguous()
            y = proj(grid)
            features = y if features is None else features + y
        return features, taps[-1][1]
