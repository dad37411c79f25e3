"""torch -> ONNX with the dynamo exporter: static batch 1, static input fixed per camera aspect ratio, metadata that
the Predictor reads back, a parity check against PyTorch that fails the export over a threshold, optionally a
mixed-precision FP16 graph (`fp16.convert_to_fp16`), and the probe every engine built from it must reproduce."""
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
from mgeo_ros.runtime.preprocess import PATCH, grid_tokens, network_size
from mgeo_ros.runtime.probe import mask_agreement, rel_l2, write_probe

log = logging.getLogger('mgeo_ros.export')
OPSETS = (17, 18, 19, 20)
# parity budgets against the fp32 PyTorch forward, per precision: (max rel L2 per output, max abs per output,
# min share of mask pixels on the same side of 0.5). FP16 budgets: measured errors (README) times about 10.
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


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError as e:
        raise BadInputError(f'size must look like WxH (e.g. 640x480), got {text!r}') from e
    if w <= 0 or h <= 0:
        raise BadInputError(f'size must be positive, got {text!r}')
    return w, h


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


def _wrapper(model, names: list[str], num_tokens: int):
    import torch

    class ExportWrapper(torch.nn.Module):
        """Fixed token count and a tuple of outputs in a fixed order (named in the ONNX graph)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model(image, num_tokens=num_tokens)
            return tuple(out[k] for k in names)

    return ExportWrapper().eval()


def _ort_session(onnx_path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # fp16 graphs make ORT CPU warn about every node it cannot constant-fold
    return ort.InferenceSession(onnx_path, sess_options=opts, providers=['CPUExecutionProvider'])


def parity_check(model, onnx_path: str, image: np.ndarray, names: list[str], num_tokens: int) -> dict:
    """Per output: max abs / max rel / relative L2 error of ONNX Runtime (CPU) against the PyTorch forward in
    `onnx_compatible_mode` on one input; for the mask also the share of pixels on the same side of 0.5."""
    import torch

    sess = _ort_session(onnx_path)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {INPUT_NAME: image}), strict=True))
    with torch.inference_mode():
        ref = model(torch.from_numpy(image), num_tokens=num_tokens)
    result = {}
    for k in names:
        r = ref[k].float().numpy()
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


def _probe_outputs(onnx_path: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The probe frame at the ONNX's input size and what ONNX Runtime (CPU) makes of it."""
    from mgeo_ros.runtime.probe import probe_frame

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
                min_mask_agree: float | None = None, probe: bool = True, batch: int = 1) -> ExportReport:
    """Export a checkpoint (path or module) for camera frames of `size` = (W, H).

    The network input is the token grid for that aspect ratio and `num_tokens` (or `size` rounded to 14 px with
    `exact_size`). precision 'fp16' writes the mixed-precision graph of `fp16.convert_to_fp16` (I/O stay fp32).
    Parity: fails (ParityError) when any output's relative L2 error > `max_rel_l2`, its max abs error > `max_abs`
    (points are in affine-invariant units of order 1) or the mask agrees on fewer than `min_mask_agree` of its
    pixels; None takes PARITY_BUDGETS[precision]. `probe` writes `<name>.probe.npz` beside the ONNX (see
    `mgeo_ros.runtime.probe`). `batch`: the static batch of the graph (N cameras through one forward; the runtime
    pads a short batch); the parity input is then N different pictures.
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
        wrapper = _wrapper(model, names, tokens)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        sink = io.StringIO()
        redirect = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(sink)
        with redirect, torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(wrapper, (torch.from_numpy(image),), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=names, verbose=verbose,
                                        external_data=False)
        proto = program.model_proto
        config = getattr(model, 'config', {}) or {}
        metadata = {'mgeo_format': '1', 'input_width': str(in_w), 'input_height': str(in_h),
                    'num_tokens': str(tokens), 'requested_num_tokens': str(num_tokens),
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
            bad = {k: v for k, v in report.parity.items() if v['rel_l2'] > max_rel_l2 or v['max_abs'] > max_abs
                   or v.get('mask_agree', 1.0) < min_mask_agree}
            if bad:
                raise ParityError(f'ONNX Runtime ({precision} graph) disagrees with PyTorch beyond rel_l2 '
                                  f'{max_rel_l2} / abs {max_abs} / mask agreement {min_mask_agree}: {bad}; the file '
                                  f'is kept at {output} for inspection')
        if probe:
            report.probe = write_probe(output, _probe_outputs(output))
    finally:
        model.onnx_compatible_mode = was_compatible
    report.seconds = time.perf_counter() - t0
    return report
