"""Engine probes: a fixed synthetic frame and what ONNX Runtime made of it at export, so that an engine can prove it
computes the same network before anyone trusts its depth (TensorRT 10.3 on Jetson is known to give wrong output for
DINOv2-class models, and nothing else would notice).

A probe is `<onnx stem>.probe.npz` (plain arrays, loadable with allow_pickle=False): `input` [1,3,H,W] float32,
`out_<name>` per network output, and `meta` (a JSON string). numpy only: the node's TensorRT path imports it.

Budgets (see BUDGETS) sit between what FP16 legitimately changes and what a wrong model or a broken engine does;
docs/deployment.md lists the measurements behind them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

PROBE_SUFFIX = '.probe.npz'
# output -> (metric, budget). rel_l2: ||got - ref|| / ||ref||; rel: |got - ref| / |ref| (scalars);
# disagree: share of pixels on the other side of 0.5. Measured FP16-vs-FP32 (mixed-precision graph) errors are
# about 1e-4 on ONNX Runtime CPU and below 3e-3 on TensorRT 10.16 (peer report); a different model is off by 0.3-1.
BUDGETS: dict[str, tuple[str, float]] = {
    'points': ('rel_l2', 0.03),
    'normal': ('rel_l2', 0.05),
    'metric_scale': ('rel', 0.02),
    'mask': ('disagree', 0.02),
}


class ProbeError(Exception):
    """A probe file is missing, unreadable or malformed."""


def probe_path(model_path: str) -> str:
    """The probe beside an .onnx or .engine: `<path without suffix>.probe.npz`."""
    return os.path.splitext(model_path)[0] + PROBE_SUFFIX


def probe_frame(width: int, height: int) -> np.ndarray:
    """The fixed synthetic frame ([1,3,H,W] float32 in [0,1]): smooth gradients, bars and a disc, deterministic."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    disc = ((u - 0.62) ** 2 + (v - 0.45) ** 2 < 0.04).astype(np.float32)
    bars = (np.floor(u * 9) % 2).astype(np.float32)
    r = 0.2 + 0.6 * v * (1 - disc) + 0.7 * disc
    g = 0.3 + 0.4 * np.sin(6.0 * u + 2.0 * v) ** 2 * (1 - 0.5 * bars)
    b = 0.8 - 0.6 * v + 0.1 * bars
    return np.clip(np.stack([r, g, b])[None], 0.0, 1.0).astype(np.float32)


def write_probe(onnx_path: str, frame_and_outputs: tuple[np.ndarray, dict[str, np.ndarray]],
                meta: dict | None = None) -> str:
    """Write the probe for `onnx_path`; returns its path."""
    frame, outputs = frame_and_outputs
    path = probe_path(onnx_path)
    arrays = {'input': np.ascontiguousarray(frame, dtype=np.float32)}
    arrays.update({f'out_{k}': np.asarray(v, dtype=np.float32) for k, v in outputs.items()})
    info = {'onnx': os.path.basename(onnx_path), 'outputs': sorted(outputs), **(meta or {})}
    arrays['meta'] = np.array(json.dumps(info, sort_keys=True))
    tmp = path + '.tmp.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


@dataclass
class Probe:
    frame: np.ndarray
    outputs: dict[str, np.ndarray]
    meta: dict


def load_probe(path: str) -> Probe:
    """Read a probe without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as data:
            frame = data['input']
            outputs = {k[4:]: data[k] for k in data.files if k.startswith('out_')}
            meta = json.loads(str(data['meta'])) if 'meta' in data.files else {}
    except (OSError, ValueError, KeyError) as e:
        raise ProbeError(f'cannot read probe {path}: {e}') from e
    if frame.ndim != 4 or frame.shape[:2] != (1, 3) or not outputs:
        raise ProbeError(f'{path} is not a probe (input {frame.shape}, outputs {sorted(outputs)})')
    return Probe(frame=frame, outputs=outputs, meta=meta)


def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref|| / ||ref|| (float64 sums)."""
    g, r = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12))


def mask_agreement(got: np.ndarray, ref: np.ndarray, threshold: float = 0.5) -> float:
    """Share of pixels on the same side of `threshold`."""
    return float(np.mean((np.asarray(got) > threshold) == (np.asarray(ref) > threshold)))


@dataclass
class ProbeCheck:
    """Per output (metric, error, budget), the worst output by error/budget, and the verdict."""

    errors: dict[str, tuple[str, float, float]]
    worst: str
    ok: bool
    problem: str = ''

    def lines(self) -> list[str]:
        out = [f'{k:13s} {m:8s} {e:.3g} (budget {b:g})' for k, (m, e, b) in self.errors.items()]
        if self.problem:
            out.append(self.problem)
        return out

    def summary(self) -> str:
        if self.problem and not self.errors:
            return self.problem
        m, e, b = self.errors[self.worst]
        return f'worst output {self.worst}: {m} {e:.3g} (budget {b:g})'


def compare(outputs: dict[str, np.ndarray], probe: Probe, budgets: dict[str, tuple[str, float]] | None = None
            ) -> ProbeCheck:
    """Compare a model's outputs on `probe.frame` with the probe's; any output beyond its budget, a missing or
    extra output or another shape fails."""
    budgets = budgets or BUDGETS
    errors: dict[str, tuple[str, float, float]] = {}
    problems = []
    if set(outputs) != set(probe.outputs):
        problems.append(f'outputs differ: model {sorted(outputs)}, probe {sorted(probe.outputs)}')
    for name in sorted(set(outputs) & set(probe.outputs)):
        got, ref = np.asarray(outputs[name], np.float32), probe.outputs[name]
        metric, budget = budgets.get(name, ('rel_l2', 0.03))
        if got.size != ref.size:
            errors[name] = (metric, float('inf'), budget)
            problems.append(f'{name}: shape {got.shape} != probe {ref.shape}')
            continue
        got = got.reshape(ref.shape)
        if metric == 'disagree':
            err = 1.0 - mask_agreement(got, ref)
        elif metric == 'rel':
            err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))
        else:
            err = rel_l2(got, ref)
        if not np.isfinite(got).all():
            err = float('inf')
        errors[name] = (metric, err, budget)
    worst = max(errors, key=lambda k: errors[k][1] / errors[k][2]) if errors else ''
    ok = not problems and all(e <= b for _, e, b in errors.values())
    return ProbeCheck(errors=errors, worst=worst, ok=ok, problem='; '.join(problems))


def check_backend(backend, probe: Probe) -> ProbeCheck:
    """Run a runtime Backend (ONNX Runtime or TensorRT) on the probe frame and compare; a probe made for another
    input size belongs to another model and fails."""
    frame = probe.frame
    size = (int(frame.shape[3]), int(frame.shape[2]))
    if backend.input_size is not None and tuple(backend.input_size) != size:
        return ProbeCheck(errors={}, worst='', ok=False,
                          problem=f'probe input {size[0]}x{size[1]} != model input '
                                  f'{backend.input_size[0]}x{backend.input_size[1]}: a probe of another model')
    # a probe of a dynamic graph records the token count it was made with; a fixed graph's is its own grid
    raw = backend.forward(frame, int(probe.meta.get('num_tokens', (size[0] // 14) * (size[1] // 14))))
    out = {'points': raw.points[None], 'mask': raw.mask[None], 'metric_scale': np.array([raw.metric_scale])}
    if raw.normal is not None:
        out['normal'] = raw.normal[None]
    return compare(out, probe)
