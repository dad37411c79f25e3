"""The tiny model in onnx_compatible_mode exports with the dynamo exporter and ONNX Runtime reproduces it."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from mgeo_ros.model import build_model, preset


class _Fixed(torch.nn.Module):
    """forward(image) at a constant token count, the static export variant."""

    def __init__(self, model, num_tokens: int):
        super().__init__()
        self.model, self.num_tokens = model, num_tokens

    def forward(self, image):
        out = self.model(image, num_tokens=self.num_tokens)
        return out['points'], out['normal'], out['mask'], out['metric_scale']


def test_dynamo_export_matches_ort(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = preset('tiny')             # trimmed further: export time grows with the number of modules
    cfg['encoder']['backbone']['depth'] = 2
    cfg['encoder']['intermediate_layers'] = [0, 1]
    for head in ('neck', 'points_head', 'mask_head', 'normal_head'):
        cfg[head]['num_res_blocks'] = [0, 1, 0, 0, 0]
    model = build_model(cfg).eval()
    model.onnx_compatible_mode = True
    wrapper = _Fixed(model, 200).eval()
    image = torch.rand(1, 3, 48, 64)
    path = tmp_path / 'tiny.onnx'
    with torch.no_grad():
        expected = wrapper(image)
        torch.onnx.export(wrapper, (image,), str(path), dynamo=True, input_names=['image'],
                          output_names=['points', 'normal', 'mask', 'metric_scale'])
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {'image': image.numpy()})
    for name, e, g in zip(['points', 'normal', 'mask', 'metric_scale'], expected, got):
        assert g.shape == tuple(e.shape), name
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
