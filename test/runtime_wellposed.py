"""Test helper: an untrained tiny model made well posed for focal/shift recovery (shared by runtime tests)."""
from __future__ import annotations

import torch


class WellPosedTiny(torch.nn.Module):
    """The tiny MoGe-2 model with a camera-like point map added to its (random-weight) output.

    An untrained network's point map is not the image of any pinhole camera, so focal/shift recovery on it is
    ill-posed (tiny input changes move the optimum arbitrarily far). A trained model's map is well posed; this
    wrapper makes the untrained one so while every output still flows through the whole network (and the export).
    """

    def __init__(self, model, focal: float = 1.2, perturb: float = 0.05) -> None:
        super().__init__()
        self.model, self.focal, self.perturb = model, focal, perturb
        self.config = dict(model.config, test_wrapper='WellPosedTiny')

    @property
    def onnx_compatible_mode(self) -> bool:
        return self.model.onnx_compatible_mode

    @onnx_compatible_mode.setter
    def onnx_compatible_mode(self, value: bool) -> None:
        self.model.onnx_compatible_mode = value

    def forward(self, image, num_tokens=1200):
        from mgeo_ros.geometry import normalized_view_plane_uv_torch

        out = dict(self.model(image, num_tokens=num_tokens))
        h, w = image.shape[2:]
        uv = normalized_view_plane_uv_torch(w, h, dtype=image.dtype, device=image.device)[None]
        z = 2.0 + 1.5 * (uv[..., 1:2] + 0.6) + 0.5 * uv[..., 0:1]  # a slanted plane
        camera = torch.cat([uv / self.focal * z, z - 0.4], dim=-1)
        out['points'] = camera + self.perturb * out['points']
        return out


def wellposed_tiny(seed: int) -> WellPosedTiny:
    """The runtime tests' model: the tiny preset seeded with `seed`, in eval mode, on one torch thread."""
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    return WellPosedTiny(build_model(preset('tiny')).eval())
