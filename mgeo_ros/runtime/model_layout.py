"""Which MoGe graph layout an ONNX / engine has, read from its inputs and outputs, so every backend runs the files
users bring and refuses the others with what was found and what is expected.

Two layouts run:
- fixed: one input `image` float32 [N,3,H,W] with static H and W (`mgeo export`); the token count is baked in;
- dynamic: `image` float32 [batch,3,height,width] with dynamic height/width plus a scalar int64 input `num_tokens`
  (the MoGe authors' ONNX recipe, also written by `mgeo export --dynamic`); the graph resizes to the token grid and
  back inside.
Either layout's `image` may instead take the frame's bytes, uint8 [N,H,W,3] RGB (`mgeo export --input-form
uint8`): the graph converts them to float [N,3,H,W] in [0,1] itself. Readers older than this form refuse such a file
(their `image` must be float32), naming what they found.
Outputs (both): `points` [B,H,W,3], `mask` [B,H,W], `metric_scale` [B], optionally `normal` [B,H,W,3], at the
input size. Tensor types are given as numpy-style names ('float32', 'int64', ...). No onnx/torch import here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from mgeo_ros.errors import BackendUnavailableError, BadInputError

IMAGE = 'image'
TOKENS = 'num_tokens'
FLOAT_FORM = 'float'  # image float32 [N,3,H,W] in [0,1]: the host converts the pixels
UINT8_FORM = 'uint8'  # image uint8 [N,H,W,3] RGB: the graph converts them
REQUIRED_OUTPUTS = ('points', 'mask', 'metric_scale')
OPTIONAL_OUTPUTS = ('normal',)
EXPECTED = ("expected the fixed layout (input image float32 [N,3,H,W] with fixed H, W, from `mgeo export`) or the "
            "dynamic layout (inputs image float32 [batch,3,height,width] and num_tokens int64 scalar, the MoGe "
            "authors' ONNX recipe or `mgeo export --dynamic`), either one's image also as uint8 [N,H,W,3] "
            "(`mgeo export --input-form uint8`); outputs points, mask, metric_scale and optionally normal")


class ModelLayoutError(BackendUnavailableError):
    """A model file's inputs or outputs match neither MoGe layout."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (int or symbolic name per axis), element type name."""

    name: str
    shape: tuple
    dtype: str

    def text(self) -> str:
        dims = ','.join(str(d) for d in self.shape)
        return f'{self.name} {self.dtype} [{dims}]'


@dataclass(frozen=True)
class ModelLayout:
    """The layout of a MoGe graph: dynamic or fixed, its input size when fixed, its outputs."""

    dynamic: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def image(self) -> TensorSpec:
        return next(t for t in self.inputs if t.name == IMAGE)

    @property
    def input_form(self) -> str:
        """FLOAT_FORM (float32 [N,3,H,W] in [0,1]) or UINT8_FORM (the frame's bytes, uint8 [N,H,W,3])."""
        return UINT8_FORM if self.image.dtype == 'uint8' else FLOAT_FORM

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(W, H) of a fixed graph, None for a dynamic one."""
        if self.dynamic:
            return None
        h, w = _spatial(self.image)
        return int(w), int(h)

    @property
    def batch(self) -> int | None:
        """The static batch, or None when the batch axis is dynamic."""
        b = self.image.shape[0]
        return int(b) if isinstance(b, int) and b > 0 else None

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def has_normal(self) -> bool:
        return 'normal' in self.output_names


def _static(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _spatial(image: TensorSpec) -> tuple:
    """The (H, W) axes of an image input of either form."""
    return tuple(image.shape[1:3]) if image.dtype == 'uint8' else tuple(image.shape[2:])


def _image_problem(image: TensorSpec) -> str:
    if len(image.shape) == 4 and image.dtype == 'float32' and image.shape[1] == 3:
        return ''
    if len(image.shape) == 4 and image.dtype == 'uint8' and image.shape[3] == 3:
        return ''
    return f'input {IMAGE!r} is neither float32 [B,3,H,W] nor uint8 [B,H,W,3]'


def found_text(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    return ('found inputs ' + '; '.join(t.text() for t in inputs) + ' and outputs '
            + '; '.join(t.text() for t in outputs))


def classify(inputs: list[TensorSpec], outputs: list[TensorSpec], source: str) -> ModelLayout:
    """The layout of a graph with these inputs/outputs; ModelLayoutError (naming what was found and what is expected)
    when it is neither MoGe layout. `source` names the file in the message."""
    names = [t.name for t in inputs]
    out_names = [t.name for t in outputs]
    problems = []
    image = next((t for t in inputs if t.name == IMAGE), None)
    if image is None:
        problems.append(f'no input named {IMAGE!r}')
    elif _image_problem(image):
        problems.append(_image_problem(image))
    tokens = next((t for t in inputs if t.name == TOKENS), None)
    if tokens is not None and (tokens.dtype != 'int64' or len(tokens.shape) != 0):
        problems.append(f'input {TOKENS!r} is not an int64 scalar')
    extra = [n for n in names if n not in (IMAGE, TOKENS)]
    if extra:
        problems.append(f'unexpected inputs {extra}')
    missing = [n for n in REQUIRED_OUTPUTS if n not in out_names]
    if missing:
        problems.append(f'missing outputs {missing}')
    unknown = [n for n in out_names if n not in REQUIRED_OUTPUTS + OPTIONAL_OUTPUTS]
    if unknown:
        problems.append(f'unexpected outputs {unknown}')
    dynamic = False
    if image is not None and not problems:
        spatial_static = all(_static(d) for d in _spatial(image))
        dynamic = not spatial_static
        if dynamic and tokens is None:
            problems.append(f'input {IMAGE!r} has a dynamic size {list(image.shape)} but there is no {TOKENS!r} '
                            'input to set the token grid')
        if spatial_static and tokens is not None:
            problems.append(f'a fixed-size {IMAGE!r} with a {TOKENS!r} input')
    if problems:
        raise ModelLayoutError(f'{source}: not a MoGe model graph ({"; ".join(problems)}): '
                               f'{found_text(inputs, outputs)}; {EXPECTED}')
    order = [n for n in ('points', 'mask', 'metric_scale', 'normal') if n in out_names]
    by_name = {t.name: t for t in outputs}
    return ModelLayout(dynamic=dynamic, inputs=tuple(inputs), outputs=tuple(by_name[n] for n in order))


_ORT_TYPES = {'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(int64)': 'int64',
              'tensor(int32)': 'int32', 'tensor(double)': 'float64', 'tensor(bool)': 'bool', 'tensor(uint8)': 'uint8'}


def ort_specs(args) -> list[TensorSpec]:
    """TensorSpecs of ONNX Runtime NodeArgs (`session.get_inputs()` / `get_outputs()`)."""
    return [TensorSpec(a.name, tuple(d if isinstance(d, int) else str(d) for d in a.shape),
                       _ORT_TYPES.get(a.type, a.type)) for a in args]


def onnx_specs(values) -> list[TensorSpec]:
    """TensorSpecs of onnx ValueInfoProtos (graph inputs/outputs)."""
    import numpy as np
    from onnx import helper

    specs = []
    for v in values:
        tt = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or '?') for d in tt.shape.dim)
        specs.append(TensorSpec(v.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name))
    return specs


def onnx_layout(model, source: str) -> ModelLayout:
    """The layout of an onnx ModelProto (initializers listed as inputs by old exporters are skipped)."""
    inits = {i.name for i in model.graph.initializer}
    return classify(onnx_specs([i for i in model.graph.input if i.name not in inits]),
                    onnx_specs(model.graph.output), source)


def check_onnx_layout(onnx_path: str) -> ModelLayout:
    """The layout of the ONNX file at `onnx_path`, checked before any long work (an engine build, a session):
    BadInputError for a missing or unreadable file, ModelLayoutError for a graph of neither MoGe layout."""
    import onnx

    if not os.path.isfile(onnx_path):
        raise BadInputError(f'{onnx_path}: no such file (expected an .onnx from `mgeo export` or the MoGe authors)')
    try:
        model = onnx.load(onnx_path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/ValueError/... for a file that is not a protobuf model
        raise BadInputError(f'{onnx_path} is not a readable ONNX model ({type(exc).__name__}); expected an .onnx '
                            'written by `mgeo export` or the MoGe authors\' ONNX release') from exc
    return onnx_layout(model, onnx_path)
