"""Is an ONNX file a MoGe model this project can run? One check, made before any long work (an engine build, an
inference session) so that another network is refused with what it has and what a MoGe export has."""
from __future__ import annotations

import os

from mgeo_ros.errors import BadInputError

REQUIRED_OUTPUTS = ('points', 'mask', 'metric_scale')


def check_onnx_layout(onnx_path: str) -> None:
    """BadInputError unless `onnx_path` is a readable ONNX graph with one image input (N x 3 x H x W) and the
    outputs points, mask and metric_scale (what `mgeo export` writes)."""
    import onnx

    if not os.path.isfile(onnx_path):
        raise BadInputError(f'{onnx_path}: no such file (expected an .onnx from `mgeo export`)')
    try:
        model = onnx.load(onnx_path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/ValueError/... for a file that is not a protobuf model
        raise BadInputError(f'{onnx_path} is not a readable ONNX model ({type(exc).__name__}); expected an .onnx '
                            'written by `mgeo export`') from exc
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    outputs = [o.name for o in graph.output]
    dims = [[d.dim_value if d.HasField('dim_value') else d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in inputs]
    missing = [n for n in REQUIRED_OUTPUTS if n not in outputs]
    image_input = len(inputs) == 1 and len(dims[0]) == 4 and dims[0][1] == 3
    if missing or not image_input:
        has = ', '.join(f'{i.name}{d}' for i, d in zip(inputs, dims)) or 'none'
        raise BadInputError(f'{onnx_path} is not a MoGe model: inputs {has}, outputs {outputs}; expected one image '
                            f'input [N, 3, H, W] and outputs {", ".join(REQUIRED_OUTPUTS)} (export one with '
                            '`mgeo export CHECKPOINT --output OUT.onnx --size WxH`)')
