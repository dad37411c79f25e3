"""Test helper: ONNX files in the MoGe authors' published layout, made from the project's own model.

The recipe (microsoft/MoGe `docs/onnx.md`): `onnx_compatible_mode` on, `forward` exported with input `image` float32
[batch, 3, height, width] (all three dynamic) and a scalar int64 input `num_tokens`; outputs `points`, `normal`,
`mask`, `metric_scale` at the input size. Made with torch's TorchScript exporter at opset 14 (as there) or the current
(dynamo) exporter.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

OUTPUTS = ('points', 'normal', 'mask', 'metric_scale')


def export_authors_layout(model, path: Path, exporter: str = 'torchscript', opset: int = 14,
                          size: tuple[int, int] = (112, 84), tokens: int = 48) -> Path:
    """Write `model` (a MoGeModel) to `path` in the authors' layout; `size` (W, H) and `tokens` are the trace
    example only (every axis but the channels stays dynamic)."""
    import torch

    class Recipe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image, num_tokens):
            out = self.model(image, num_tokens)
            return tuple(out[k] for k in OUTPUTS)

    was = model.onnx_compatible_mode
    model.onnx_compatible_mode = True
    image = torch.rand(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(0))
    args = (image, torch.tensor(tokens, dtype=torch.int64))
    names = dict(input_names=['image', 'num_tokens'], output_names=list(OUTPUTS))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter('ignore')
            if exporter == 'torchscript':
                axes = {'image': {0: 'batch_size', 2: 'height', 3: 'width'}}  # the recipe names the input's only
                torch.onnx.export(Recipe().eval(), args, str(path), dynamo=False, opset_version=opset,
                                  dynamic_axes=axes, **names)
            else:
                batch, height, width = (torch.export.Dim(n, min=1, max=4096) for n in ('batch', 'height', 'width'))
                shapes = {'image': {0: batch, 2: height, 3: width}, 'num_tokens': None}
                torch.onnx.export(Recipe().eval(), args, str(path), dynamo=True, opset_version=max(opset, 18),
                                  dynamic_shapes=shapes, external_data=False, **names)
    finally:
        model.onnx_compatible_mode = was
    return path


def wellposed_dynamic(seed: int):
    """The tiny model (seed `seed`) with a camera-like slanted plane added to its point map, like
    `runtime_wellposed.WellPosedTiny`, but built from tensor ops only so it exports with a dynamic size: the
    focal/shift recovery of the runtime is then well posed on an untrained network."""
    import torch

    from mgeo_ros.model import build_model, preset

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = build_model(preset('tiny')).eval()

    class WellPosedDynamic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.config = dict(model.config, test_wrapper='WellPosedDynamic')

        @property
        def onnx_compatible_mode(self) -> bool:
            return self.model.onnx_compatible_mode

        @onnx_compatible_mode.setter
        def onnx_compatible_mode(self, value: bool) -> None:
            self.model.onnx_compatible_mode = value

        def forward(self, image, num_tokens=1200, refine_steps: int = 0):
            out = dict(self.model(image, num_tokens))
            row, col = torch.ones_like(image[0, 0, 0, :]), torch.ones_like(image[0, 0, :, 0])
            w, h = row.sum(), col.sum()
            diagonal = (1 + (w / h) ** 2).sqrt()
            u = ((row.cumsum(0) - 0.5) / w * 2 - 1) * (w / h) / diagonal
            v = ((col.cumsum(0) - 0.5) / h * 2 - 1) / diagonal
            uu, vv = u[None, :] + 0 * v[:, None], v[:, None] + 0 * u[None, :]
            z = 2.0 + 1.5 * (vv + 0.6) + 0.5 * uu
            camera = torch.stack([uu / 1.2 * z, vv / 1.2 * z, z - 0.4], dim=-1)[None]
            out['points'] = camera + 0.05 * out['points']
            return out

    return WellPosedDynamic().eval()
