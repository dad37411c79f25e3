"""What a model file is, in one line (the node's load log) or a few (`mgeo inspect`): format and origin, inputs and
outputs, fixed or dynamic size, token count, precision, normal head, probe.

Reads ONNX graphs with `onnx` when it is installed, else through the ONNX Runtime session (the torch-free runtime);
engines through their JSON sidecar. Checkpoints (the torch path anyway) use the model layer's family rule;
safetensors are read through their header, a `.pt` with torch's weights_only loader.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from mgeo_ros.errors import MgeoError
from mgeo_ros.runtime.model_layout import TensorSpec, classify, onnx_layout, ort_specs
from mgeo_ros.runtime.probe import probe_path

AUTHORS_ONNX = "MoGe authors' ONNX layout"
ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')
REFINER_PREFIX = 'refiner.'  # MoGe-3's refiner tensors (the model layer's name for them, repeated: no torch here)
_SAFETENSORS_DTYPES = {'F32': 'fp32', 'F16': 'fp16', 'BF16': 'bf16', 'F64': 'fp64'}


@dataclass
class ModelInfo:
    """The facts `mgeo inspect` prints and the node logs."""

    path: str
    format: str
    origin: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    size: str = ''
    num_tokens: str = ''
    precision: str = ''
    normal_head: bool | None = None
    probe: str | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line: what the file is and how it will run."""
        normal = {True: 'normal head', False: 'no normal head', None: 'normal head unknown'}[self.normal_head]
        probe = 'probe yes' if self.probe else 'probe no'
        return (f'{Path(self.path).name}: {self.format}, {self.origin}; size {self.size}; tokens {self.num_tokens}; '
                f'{self.precision}; {normal}; {probe}')

    def lines(self) -> list[str]:
        out = [f'{self.path}', f'  format      {self.format}', f'  origin      {self.origin}']
        out += [f'  input       {t.text()}' for t in self.inputs]
        out += [f'  output      {t.text()}' for t in self.outputs]
        out += [f'  size        {self.size}', f'  num_tokens  {self.num_tokens}', f'  precision   {self.precision}',
                f'  normal head {"unknown" if self.normal_head is None else "yes" if self.normal_head else "no"}',
                f'  probe       {self.probe or "no"}']
        out += [f'  note        {n}' for n in self.notes]
        return out


def _probe(path: str) -> str | None:
    p = probe_path(path)
    return p if os.path.isfile(p) else None


def _onnx_family(meta: dict[str, str]) -> str:
    return meta.get('model_family', 'MoGe-2')


def describe_onnx(path: str, backend=None) -> ModelInfo:
    """An .onnx: layout from the graph (or from a loaded ONNX Runtime `backend`), origin from its metadata."""
    layout, meta, precision = None, {}, None
    if backend is not None and getattr(backend, 'layout', None) is not None:
        layout, meta = backend.layout, dict(backend.metadata)
    else:
        try:
            import onnx

            from mgeo_ros.runtime.engine_cache import onnx_precision

            model = onnx.load(path, load_external_data=False)
            layout = onnx_layout(model, path)
            meta = {p.key: p.value for p in model.metadata_props}
            precision = onnx_precision(path)
        except ImportError:  # the torch-free runtime has ONNX Runtime, not onnx
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
            layout = classify(ort_specs(sess.get_inputs()), ort_specs(sess.get_outputs()), path)
            meta = dict(sess.get_modelmeta().custom_metadata_map)
    precision = precision or meta.get('precision', 'fp32')
    project = 'mgeo_format' in meta
    if layout.dynamic:
        origin = f'project export (dynamic), {_onnx_family(meta)}' if project else f'{AUTHORS_ONNX} (MoGe-2)'
        size, tokens = 'dynamic (any 14-multiple; the runtime feeds the token grid of each frame)', 'input num_tokens'
    else:
        origin = (f'project export, {_onnx_family(meta)}' if project
                  else 'fixed MoGe layout without project metadata')
        w, h = layout.input_size
        size = f'fixed {w}x{h}' + (f' (batch {layout.batch})' if (layout.batch or 1) > 1 else '')
        tokens = meta.get('num_tokens') or str((w // 14) * (h // 14))
    return ModelInfo(path=path, format='ONNX', origin=origin, inputs=list(layout.inputs),
                     outputs=list(layout.outputs), size=size, num_tokens=tokens, precision=precision,
                     normal_head=layout.has_normal, probe=_probe(path))


def describe_engine(path: str) -> ModelInfo:
    """A TensorRT engine, from its sidecar (what it was built from, for which TensorRT/GPU, its profile)."""
    from mgeo_ros.runtime.engine_cache import read_sidecar

    side = read_sidecar(path)
    if side is None:
        return ModelInfo(path=path, format='TensorRT engine', origin='unknown (no sidecar <engine>.json)',
                         size='unknown', num_tokens='unknown', precision='unknown', probe=_probe(path),
                         notes=['built outside `mgeo build-engine`: its origin and cache key are unknown'])
    key, meta = side.get('key', {}), side.get('onnx_metadata', {})
    profile = key.get('profile')
    outputs = [TensorSpec(n, (), 'float32') for n in meta.get('outputs', '').split(',') if n]
    source = side.get('onnx_path', '')
    if not outputs and source and os.path.isfile(source):
        try:
            outputs = describe_onnx(source).outputs
        except (MgeoError, ImportError, OSError):
            outputs = []
    shape = tuple(key.get('input_shape', ()))
    if profile:
        size = f"dynamic: profile {profile['min'][0]}x{profile['min'][1]} .. {profile['max'][0]}x{profile['max'][1]}" \
               f" (opt {profile['opt'][0]}x{profile['opt'][1]})"
        tokens = f"{profile['num_tokens']} (fixed at build)"
        origin = 'built from ' + ('a project export (dynamic)' if 'mgeo_format' in meta else AUTHORS_ONNX)
        shape = (1, 3, 'height', 'width')
    else:
        size = f'fixed {shape[3]}x{shape[2]}' if len(shape) == 4 else 'unknown'
        tokens = meta.get('num_tokens', 'unknown')
        origin = 'built from a project export'
    notes = [f"TensorRT {key.get('tensorrt_version')} ({key.get('tensorrt_module')}), GPU {key.get('gpu_name')} "
             f"(compute capability {key.get('compute_capability')})", f'source ONNX {source or "unknown"}']
    return ModelInfo(path=path, format='TensorRT engine', origin=f"{origin}, {meta.get('model_family', 'MoGe-2')}",
                     inputs=[TensorSpec('image', shape, 'float32')], outputs=outputs, size=size, num_tokens=tokens,
                     precision=str(side.get('effective_precision', key.get('precision', 'unknown'))),
                     normal_head=any(t.name == 'normal' for t in outputs) if outputs else None, probe=_probe(path),
                     notes=notes)


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes) without loading any tensor."""
    with open(path, 'rb') as f:
        (length,) = struct.unpack('<Q', f.read(8))
        if length > 100 << 20:
            raise MgeoError(f'{path}: not a safetensors file (header of {length} bytes)')
        return json.loads(f.read(length))


def _checkpoint_info(path: str, fmt: str, config: dict, dtypes: dict[str, str], refiner: int,
                     origin_prefix: str) -> ModelInfo:
    """The facts of a checkpoint from its model_config and its tensors' dtypes (only the torch path gets here)."""
    from mgeo_ros.model.moge2 import model_family

    if model_family(config) == 'moge-3':
        family = 'MoGe-3 (base path' + (f'; {refiner} refiner tensors not run)' if refiner else ')')
    else:
        family = f"MoGe-2 (remap {config.get('remap_output')})"
    kinds = sorted({d for k, d in dtypes.items() if d in ('fp32', 'fp16', 'bf16', 'fp64')})
    lo, hi = config.get('num_tokens_range', (1200, 3600))
    outputs = [TensorSpec(n, ('B', 'H', 'W', 3) if n in ('points', 'normal') else ('B', 'H', 'W') if n == 'mask'
                          else ('B',), 'float32')
               for n, head in (('points', 'points_head'), ('mask', 'mask_head'), ('metric_scale', 'scale_head'),
                               ('normal', 'normal_head')) if head in config]
    return ModelInfo(path=path, format=fmt, origin=f'{origin_prefix}, {family}',
                     inputs=[TensorSpec('image', ('B', 3, 'H', 'W'), 'float32'), TensorSpec('num_tokens', (), 'int')],
                     outputs=outputs, size='any (the token grid of each frame)',
                     num_tokens=f'any (trained range {lo}..{hi})', precision='/'.join(kinds) or 'unknown',
                     normal_head='normal_head' in config, probe=None)


def describe_checkpoint(path: str, model=None) -> ModelInfo:
    """A project checkpoint (directory, config.json, .safetensors) or an official .pt (read weights_only). `model`: an
    already loaded MoGeModel for that file (the torch backend's), so the file is not read twice."""
    p = Path(path)
    project = p.is_dir() or p.suffix == '.safetensors' or p.name == 'config.json'
    if model is not None and hasattr(model, 'config') and not project:  # a .pt already loaded: do not read it again
        dtypes = {k: _torch_dtype(v) for k, v in model.state_dict().items()}
        return _checkpoint_info(path, 'PyTorch checkpoint (.pt)', dict(model.config), dtypes,
                                int(getattr(model, 'refiner_tensors_set_aside', 0)), 'official checkpoint')
    if project:
        folder = p if p.is_dir() else p.parent
        config = json.loads((folder / 'config.json').read_text())
        config = config.get('model_config', config)
        header = _safetensors_header(folder / 'model.safetensors')
        dtypes = {k: _SAFETENSORS_DTYPES.get(v.get('dtype'), v.get('dtype')) for k, v in header.items()
                  if k != '__metadata__'}
        return _checkpoint_info(path, 'safetensors (project checkpoint)', config, dtypes,
                                sum(k.startswith(REFINER_PREFIX) for k in dtypes), 'project checkpoint')
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            payload = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: say so
            raise MgeoError(f'{path}: not a readable weights-only PyTorch checkpoint ({type(exc).__name__})') from None
    if not isinstance(payload, dict) or not isinstance(payload.get('model_config'), dict):
        raise MgeoError(f'{path}: expected the official {{"model_config", "model"}} envelope')
    state = payload.get('model', {})
    dtypes = {k: _torch_dtype(v) for k, v in state.items() if hasattr(v, 'dtype')}
    return _checkpoint_info(path, 'PyTorch checkpoint (.pt)', payload['model_config'], dtypes,
                            sum(k.startswith(REFINER_PREFIX) for k in state), 'official checkpoint')


def _torch_dtype(tensor) -> str:
    return {'torch.float32': 'fp32', 'torch.float16': 'fp16', 'torch.bfloat16': 'bf16'}.get(str(tensor.dtype),
                                                                                           str(tensor.dtype))


def describe_model(path: str | os.PathLike, backend=None) -> ModelInfo:
    """The ModelInfo of any model file; `backend`: the Backend it was loaded into, when there is one (reuses what it
    read)."""
    path = str(path)
    if not os.path.exists(path):
        raise MgeoError(f'{path}: no such file or directory (expected a checkpoint directory, .pt, .onnx or '
                        '.engine); check the path')
    suffix = Path(path).suffix.lower()
    if suffix == '.onnx':
        return describe_onnx(path, backend)
    if suffix in ENGINE_SUFFIXES:
        return describe_engine(path)
    return describe_checkpoint(path, getattr(backend, 'model', None))


def model_line(path: str | os.PathLike, backend=None) -> str:
    """The one line the node logs when it loads a model (the same facts as `mgeo inspect`)."""
    try:
        return describe_model(path, backend).line()
    except (MgeoError, OSError, ValueError) as exc:
        return f'{Path(path).name}: cannot describe ({exc})'
