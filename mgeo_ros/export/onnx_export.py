"""torch -> ONNX with the dynamo exporter: static batch 1, static input fixed per camera aspect ratio (or, with
`dynamic`, the MoGe authors' dynamic layout: any batch/height/width plus a scalar int64 `num_tokens` input), metadata
that the Predictor reads back, a parity check against PyTorch that fails the export over a threshold, optionally a
mixed-precision FP16 graph (`fp16.convert_to_fp16`), and the probe every engine built from it must reproduce.

`convert_onnx` gives an existing FP32 MoGe ONNX (the authors' release, or a project export) the same FP16 conversion,
parity budgets (against that FP32 ONNX on ONNX Runtime instead of PyTorch) and probe, with no PyTorch."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mgeo_ros.errors import BadInputError, MgeoError
from mgeo_ros.runtime.backends.base import INPUT_NAME
from mgeo_ros.runtime.model_layout import TOKENS, onnx_layout
from mgeo_ros.runtime.preprocess import PATCH, grid_tokens, network_size
from mgeo_ros.runtime.probe import mask_agreement, rel_l2, write_probe

log = logging.getLogger('mgeo_ros.export')
OPSETS = (17, 18, 19, 20)
# parity budgets against the fp32 PyTorch forward, per precision: (max rel L2 per output, max abs per output,
# min share of mask pixels on the same side of 0.5). FP16 budgets: measured errors (docs/deployment.md) times about 10.
PARITY_BUDGETS = {'fp32': (1e-4, 1e-2, 0.999), 'fp16': (1e-2, float('inf'), 0.99)}


class ParityError(MgeoError):
    """The exported ONNX disagrees with PyTorch beyond the allowed error."""


@dataclass
class ExportReport:
    """What was exported and how closely ONNX Runtime reproduces PyTorch (max abs / max rel error per output)."""

    path: str
    input_size: tuple[int, int]
    num_tokens: int
    opset: int
    seconds: float
    outputs: list[str]
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    precision: str = 'fp32'
    probe: str | None = None
    fp16: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def config_hash(config: dict) -> str:
    """Stable short hash of a model_config (sorted-key JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_input_size(size: tuple[int, int], num_tokens: int, exact: bool = False) -> tuple[int, int]:
    """Network input for a camera size: the token grid for its aspect ratio, or the size itself rounded to 14 px."""
    if exact:
        return max(PATCH, round(size[0] / PATCH) * PATCH), max(PATCH, round(size[1] / PATCH) * PATCH)
    return network_size(size[0], size[1], num_tokens)


def _output_names(model, image) -> list[str]:
    import torch

    with torch.inference_mode():
        out = model(image, num_tokens=grid_tokens(image.shape[3], image.shape[2]))
    return [k for k in ('points', 'mask', 'metric_scale', 'normal') if k in out]


def _wrapper(model, names: list[str], num_tokens: int, dynamic: bool = False):
    import torch

    class ExportWrapper(torch.nn.Module):
        """Fixed token count and a tuple of outputs in a fixed order (named in the ONNX graph)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model(image, num_tokens=num_tokens)
            return tuple(out[k] for k in names)

    class DynamicWrapper(ExportWrapper):
        """The token count as a graph input (the authors' dynamic layout)."""

        def forward(self, image, tokens):
            out = self.model(image, num_tokens=tokens)
            return tuple(out[k] for k in names)

    return (DynamicWrapper() if dynamic else ExportWrapper()).eval()


def _ort_session(onnx_path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # fp16 graphs make ORT CPU warn about every node it cannot constant-fold
    return ort.InferenceSession(onnx_path, sess_options=opts, providers=['CPUExecutionProvider'])


def parity_check(model, onnx_path: str, image: np.ndarray, names: list[str], num_tokens: int) -> dict:
    """Per output: max abs / max rel / relative L2 error of ONNX Runtime (CPU) against the PyTorch forward in
    `onnx_compatible_mode` on one input; for the mask also the share of pixels on the same side of 0.5."""
    import torch

    got = _ort_outputs(onnx_path, image, num_tokens)
    with torch.inference_mode():
        ref = {k: v.float().numpy() for k, v in model(torch.from_numpy(image), num_tokens=num_tokens).items()}
    return compare_outputs(got, ref, names)


def _ort_outputs(onnx_path: str, image: np.ndarray, num_tokens: int) -> dict[str, np.ndarray]:
    """ONNX Runtime (CPU) outputs of a MoGe ONNX on `image`; a dynamic graph also gets `num_tokens`."""
    sess = _ort_session(onnx_path)
    feed = {INPUT_NAME: image}
    if any(i.name == TOKENS for i in sess.get_inputs()):
        feed[TOKENS] = np.array(int(num_tokens), dtype=np.int64)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))


def compare_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: list[str]) -> dict:
    """Per output: max abs / max rel / relative L2 error of `got` against `ref`; the mask also its agreement."""
    result = {}
    for k in names:
        r = np.asarray(ref[k], np.float32)
        g = got[k].astype(np.float32)
        diff = np.abs(r - g)
        rel = diff / np.maximum(np.abs(r), 1e-6)
        result[k] = {'max_abs': float(diff.max()), 'max_rel': float(rel.max()), 'rel_l2': rel_l2(g, r)}
        if k == 'mask':
            result[k]['mask_agree'] = mask_agreement(g, r)
    return result


def parity_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, deterministic test picture ([1,3,H,W] in [0,1]) so the parity check sees image-like input."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = [0.5 + 0.4 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c) + rng.uniform(0, 6)) for c in range(3)]
    return np.clip(np.stack(chans)[None], 0, 1).astype(np.float32)


def _probe_outputs(onnx_path: str, dynamic_size: tuple[int, int] | None = None, num_tokens: int = 0
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The probe frame at the ONNX's input size (a dynamic ONNX: at `dynamic_size` with `num_tokens`) and what ONNX
    Runtime (CPU) makes of it."""
    from mgeo_ros.runtime.probe import probe_frame

    if dynamic_size is not None:
        frame = probe_frame(*dynamic_size)
        return frame, _ort_outputs(onnx_path, frame, num_tokens)
    sess = _ort_session(onnx_path)
    shape = sess.get_inputs()[0].shape
    frame = probe_frame(int(shape[3]), int(shape[2]))
    batch = int(shape[0]) if isinstance(shape[0], int) else 1  # a batch-N export: the probe is its first frame
    values = sess.run(None, {INPUT_NAME: np.repeat(frame, batch, axis=0)})
    return frame, {o.name: v[:1] for o, v in zip(sess.get_outputs(), values, strict=True)}


def load_model(checkpoint):
    """A torch module (as is) or a checkpoint path -> model in eval mode on CPU."""
    import torch

    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint.eval()
    from mgeo_ros.model import load_checkpoint

    return load_checkpoint(str(checkpoint), device='cpu')


def export_onnx(checkpoint, output: str, size: tuple[int, int], num_tokens: int = 1200, opset: int = 18,
                exact_size: bool = False, parity: bool = True, max_rel_l2: float | None = None,
                max_abs: float | None = None, verbose: bool = False, precision: str = 'fp32',
                min_mask_agree: float | None = None, probe: bool = True, batch: int = 1,
                dynamic: bool = False) -> ExportReport:
    """Export a checkpoint (path or module) for camera frames of `size` = (W, H).

    The network input is the token grid for that aspect ratio and `num_tokens` (or `size` rounded to 14 px with
    `exact_size`). precision 'fp16' writes the mixed-precision graph of `fp16.convert_to_fp16` (I/O stay fp32).
    Parity: fails (ParityError) when any output's relative L2 error > `max_rel_l2`, its max abs error > `max_abs`
    (points are in affine-invariant units of order 1) or the mask agrees on fewer than `min_mask_agree` of its
    pixels; None takes PARITY_BUDGETS[precision]. `probe` writes `<name>.probe.npz` beside the ONNX (see
    `mgeo_ros.runtime.probe`). `batch`: the static batch of the graph (N cameras through one forward; the runtime
    pads a short batch); the parity input is then N different pictures. `dynamic`: the authors' dynamic layout (any
    batch/height/width, `num_tokens` an int64 input); `size` then only picks the parity and probe input.
    """
    import onnx
    import torch

    if opset not in OPSETS:
        raise BadInputError(f'opset must be one of {OPSETS}, got {opset}')
    if not 1 <= int(batch) <= 64:
        raise BadInputError(f'batch must be in [1, 64], got {batch}')
    if precision not in PARITY_BUDGETS:
        raise BadInputError(f'precision must be one of {tuple(PARITY_BUDGETS)}, got {precision!r}')
    budget = PARITY_BUDGETS[precision]
    max_rel_l2 = budget[0] if max_rel_l2 is None else max_rel_l2
    max_abs = budget[1] if max_abs is None else max_abs
    min_mask_agree = budget[2] if min_mask_agree is None else min_mask_agree
    t0 = time.perf_counter()
    model = load_model(checkpoint)
    in_w, in_h = export_input_size(size, num_tokens, exact_size)
    tokens = grid_tokens(in_w, in_h)
    image = np.concatenate([parity_image(in_w, in_h, seed=i) for i in range(int(batch))])
    was_compatible = getattr(model, 'onnx_compatible_mode', False)
    model.onnx_compatible_mode = True
    try:
        names = _output_names(model, torch.from_numpy(image))
        wrapper = _wrapper(model, names, tokens, dynamic)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        sink = io.StringIO()
        redirect = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(sink)
        args, inputs, shapes = (torch.from_numpy(image),), [INPUT_NAME], None
        if dynamic:
            args += (torch.tensor(tokens, dtype=torch.int64),)
            inputs.append(TOKENS)
            axes = {0: torch.export.Dim('batch', min=1, max=64), 2: torch.export.Dim('height', min=14, max=8192),
                    3: torch.export.Dim('width', min=14, max=8192)}
            shapes = {'image': axes, 'tokens': None}
        with redirect, torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(wrapper, args, dynamo=True, opset_version=opset, input_names=inputs,
                                        output_names=names, verbose=verbose, external_data=False,
                                        dynamic_shapes=shapes)
        proto = program.model_proto
        config = getattr(model, 'config', {}) or {}
        metadata = {'mgeo_format': '1', 'input_width': str(in_w), 'input_height': str(in_h),
                    **({'dynamic': '1'} if dynamic else {'num_tokens': str(tokens)}),
                    'requested_num_tokens': str(num_tokens),
                    'camera_width': str(size[0]), 'camera_height': str(size[1]), 'opset': str(opset),
                    'model_config_hash': config_hash(config), 'model_config': json.dumps(config, sort_keys=True),
                    'outputs': ','.join(names), 'onnx_compatible_mode': '1', 'precision': precision,
                    'batch': str(int(batch)),
                    'model_family': 'MoGe-3' if getattr(model, 'family', '') == 'moge-3' else 'MoGe-2'}
        fp16_report = None
        if precision == 'fp16':
            from mgeo_ros.export.fp16 import convert_to_fp16

            proto, rep = convert_to_fp16(proto)
            fp16_report = asdict(rep)
        del proto.metadata_props[:]
        for k, v in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, output)
        report = ExportReport(path=output, input_size=(in_w, in_h), num_tokens=tokens, opset=opset,
                              seconds=0.0, outputs=names, metadata={k: v for k, v in metadata.items()
                                                                    if k != 'model_config'},
                              precision=precision, fp16=fp16_report)
        if parity:
            report.parity = parity_check(model, output, image, names, tokens)
            _check_budgets(report, precision, max_rel_l2, max_abs, min_mask_agree)
        if probe:
            probed = _probe_outputs(output, (in_w, in_h) if dynamic else None, tokens)
            report.probe = write_probe(output, probed, meta={'num_tokens': tokens} if dynamic else None)
    finally:
        model.onnx_compatible_mode = was_compatible
    report.seconds = time.perf_counter() - t0
    return report


def convert_onnx(source: str, output: str, precision: str = 'fp16', size: tuple[int, int] = (640, 480),
                 num_tokens: int = 1200, parity: bool = True, probe: bool = True) -> ExportReport:
    """An FP32 MoGe ONNX (the authors' dynamic release or a project export) -> the project's FP16 mixed-precision
    form (`fp16.convert_to_fp16`, I/O stay FP32) with its probe, without PyTorch. Parity: ONNX Runtime on the new
    graph against ONNX Runtime on `source`, with the FP16 budgets of `export_onnx` (ParityError beyond them). A
    dynamic source stays dynamic; `size` (camera W, H) and `num_tokens` pick its parity and probe input."""
    import onnx

    from mgeo_ros.export.fp16 import convert_to_fp16
    from mgeo_ros.runtime.engine_cache import onnx_precision

    if precision != 'fp16':
        raise BadInputError(f'--from-onnx converts to fp16 only (the source is the fp32 form), got {precision!r}')
    if not os.path.isfile(source):
        raise BadInputError(f'--from-onnx {source}: no such file (expected an fp32 MoGe ONNX); check the path')
    t0 = time.perf_counter()
    src = onnx.load(source)
    layout = onnx_layout(src, source)
    if onnx_precision(source) != 'fp32':
        raise BadInputError(f'{source} is already a mixed-precision (fp16) graph; convert its fp32 form')
    meta = {p.key: p.value for p in src.metadata_props}
    if layout.dynamic:
        in_w, in_h = network_size(size[0], size[1], num_tokens)
        tokens = grid_tokens(in_w, in_h)
    else:
        in_w, in_h = layout.input_size
        tokens = int(meta.get('num_tokens') or grid_tokens(in_w, in_h))
    proto, rep = convert_to_fp16(src)
    origin = meta.get('mgeo_format') and 'project export' or "MoGe authors' ONNX layout"
    meta.update({'mgeo_format': '1', 'precision': 'fp16', 'converted_from': os.path.basename(source),
                 'converted_from_origin': origin, 'outputs': ','.join(layout.output_names),
                 'onnx_compatible_mode': '1', 'model_family': meta.get('model_family', 'MoGe-2')})
    if layout.dynamic:
        meta.update(dynamic='1', input_width=str(in_w), input_height=str(in_h), requested_num_tokens=str(num_tokens))
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    onnx.save(proto, output)
    batch = layout.batch or 1
    image = np.concatenate([parity_image(in_w, in_h, seed=i) for i in range(batch)])
    report = ExportReport(path=output, input_size=(in_w, in_h), num_tokens=tokens, opset=_opset(proto), seconds=0.0,
                          outputs=list(layout.output_names), metadata={k: v for k, v in meta.items()
                                                                      if k != 'model_config'},
                          precision='fp16', fp16=asdict(rep))
    if parity:
        names = list(layout.output_names)
        report.parity = compare_outputs(_ort_outputs(output, image, tokens), _ort_outputs(source, image, tokens),
                                        names)
        _check_budgets(report, 'fp16', *PARITY_BUDGETS['fp16'], against=f'ONNX Runtime on {source}')
    if probe:
        probed = _probe_outputs(output, (in_w, in_h) if layout.dynamic else None, tokens)
        report.probe = write_probe(output, probed, meta={'num_tokens': tokens} if layout.dynamic else None)
    report.seconds = time.perf_counter() - t0
    return report


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), default=0)


def _check_budgets(report: ExportReport, precision: str, max_rel_l2: float, max_abs: float, min_mask_agree: float,
                   against: str = 'PyTorch') -> None:
    """ParityError when an output of `report.parity` is beyond the budgets."""
    bad = {k: v for k, v in report.parity.items() if v['rel_l2'] > max_rel_l2 or v['max_abs'] > max_abs
           or v.get('mask_agree', 1.0) < min_mask_agree}
    if bad:
        raise ParityError(f'ONNX Runtime ({precision} graph) disagrees with {against} beyond rel_l2 {max_rel_l2} / '
                          f'abs {max_abs} / mask agreement {min_mask_agree}: {bad}; the file is kept at '
                          f'{report.path} for inspection')
