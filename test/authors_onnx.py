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
                axes = {'image': {0: 'batch_size', 2: 'height', 3: 'width'}, 'points': {0: 'batch_size', 1: 'height',
                        2: 'width'}, 'normal': {0: 'batch_size', 1: 'height', 2: 'width'},
                        'mask': {0: 'batch_size', 1: 'height', 2: 'width'}, 'metric_scale': {0: 'batch_size'}}
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
