"""The uint8-input form of a MoGe ONNX: the graph takes the resized frame's pixels as they are (uint8 [N,H,W,3], RGB)
and turns them into the network's float [N,3,H,W] in [0,1] itself, so the host hands over one byte per channel and
does no layout change or float pass.

The added nodes compute exactly what the host's preprocessing computes (a float32 multiply of each byte by
float32(1/255)), so the two forms see bitwise the same network input. Files of this form carry the metadata
`input_form=uint8`; `runtime.model_layout` reads the form from the graph input's type.
"""
from __future__ import annotations

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.runtime.model_layout import IMAGE
from mgeo_ros.runtime.preprocess import PIXEL_SCALE

_FLOAT_NAME = 'mgeo_image_float'
_SCALE_NAME = 'mgeo_pixel_scale'


def to_uint8_input(model):
    """An onnx ModelProto whose `image` input is float [N,3,H,W] -> the same model (changed in place and returned)
    taking uint8 [N,H,W,3]: Transpose (on bytes), Cast to float, Mul by 1/255 feed what `image` fed."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    index = next((i for i, v in enumerate(graph.input) if v.name == IMAGE), None)
    if index is None:
        raise BadInputError(f'the graph has no input {IMAGE!r} to give the uint8 form')
    old = graph.input[index]
    tensor = old.type.tensor_type
    if tensor.elem_type != TensorProto.FLOAT or len(tensor.shape.dim) != 4:
        raise BadInputError(f'input {IMAGE!r} is not float32 [N,3,H,W] (elem type {tensor.elem_type}, '
                            f'{len(tensor.shape.dim)} axes): already uint8, or not a MoGe graph')

    def dim(i):
        d = tensor.shape.dim[i]
        return d.dim_value if d.HasField('dim_value') else (d.dim_param or None)

    for node in graph.node:
        node.input[:] = [_FLOAT_NAME if name == IMAGE else name for name in node.input]
    for out in graph.output:
        if out.name == IMAGE:
            raise BadInputError(f'the graph passes its input {IMAGE!r} straight to an output')
    graph.input.remove(old)
    graph.input.insert(index, helper.make_tensor_value_info(IMAGE, TensorProto.UINT8,
                                                            [dim(0), dim(2), dim(3), 3]))
    graph.initializer.append(numpy_helper.from_array(np.array(PIXEL_SCALE, dtype=np.float32), _SCALE_NAME))
    added = [helper.make_node('Transpose', [IMAGE], ['mgeo_image_nchw'], perm=[0, 3, 1, 2], name='mgeo_to_nchw'),
             helper.make_node('Cast', ['mgeo_image_nchw'], ['mgeo_image_cast'], to=TensorProto.FLOAT,
                              name='mgeo_to_float'),
             helper.make_node('Mul', ['mgeo_image_cast', _SCALE_NAME], [_FLOAT_NAME], name='mgeo_to_unit')]
    for node in reversed(added):
        graph.node.insert(0, node)
    return model

