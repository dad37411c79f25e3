"""ONNX -> TensorRT engine, with a cache that knows when an engine is stale.

This lives in the runtime layer because the Predictor (and so the node) builds an engine from an .onnx on first
start; `mgeo_ros.export.engine` re-exports it for `mgeo build-engine`.

The key (stored in a JSON sidecar `<engine>.json`) covers: ONNX sha256, TensorRT flavour and version, GPU name,
compute capability, input shape and precision. A cached engine whose key matches is reused; one that differs is
rebuilt, or refused with the differences spelled out when rebuilding is disabled.

TensorRT is imported lazily, so this module imports anywhere. The same code drives `tensorrt` (>= 10) and the
TensorRT-RTX builder `tensorrt_rtx_bindings` (used in CI as a "TensorRT parses and builds this graph" gate: it
compiles ahead of time for a chosen compute capability without a GPU, and is strongly typed, so the engine
precision follows the ONNX's types there).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mgeo_ros.errors import BackendUnavailableError, MgeoError
from mgeo_ros.runtime.devices import import_tensorrt

log = logging.getLogger('mgeo_ros.runtime')
PRECISIONS = ('fp16', 'fp32')


class EngineCacheError(MgeoError):
    """A cached engine does not match this ONNX/GPU/TensorRT/precision and rebuilding was disabled."""


@dataclass
class EngineBuild:
    """Outcome of `build_engine`: where the engine is, its key, and whether it was (re)built now."""

    path: str
    key: dict
    built: bool
    seconds: float
    reason: str


def sidecar_path(engine_path: str) -> str:
    """The JSON file next to an engine that records how (and for what) it was built."""
    return engine_path + '.json'


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def onnx_input_shape(onnx_path: str) -> list[int]:
    """Static input shape of the (single) image input, from the graph."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise MgeoError(f'{onnx_path}: expected one input, found {[i.name for i in inputs]}')
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField('dim_value') else -1 for d in dims]
    if any(d <= 0 for d in shape):
        raise MgeoError(f'{onnx_path}: input shape {shape} is not static; export with a fixed --size')
    return shape


def onnx_metadata(onnx_path: str) -> dict[str, str]:
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key != 'model_config'}


def parse_compute_capability(text: str) -> tuple[str, str]:
    """'SM89' or '8.9' -> ('SM89', '8.9')."""
    t = text.strip().upper().replace('SM_', 'SM')
    if t.startswith('SM'):
        digits = t[2:]
        return t, f'{digits[:-1]}.{digits[-1]}'
    major, minor = t.split('.')
    return f'SM{major}{minor}', f'{major}.{minor}'


def local_gpu() -> tuple[str, str]:
    """(GPU name, compute capability 'X.Y') of GPU 0, from torch or nvidia-smi; BackendUnavailableError if none."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), '{}.{}'.format(*torch.cuda.get_device_capability(0))
    except ImportError:
        pass
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name,compute_cap', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip().splitlines()
        if out:
            name, cc = (s.strip() for s in out[0].split(','))
            return name, cc
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    raise BackendUnavailableError('no NVIDIA GPU found (torch.cuda and nvidia-smi see none); a TensorRT engine '
                                  'must be built on the GPU that will run it, or give a compute capability for an '
                                  'ahead-of-time TensorRT-RTX build')


def engine_key(onnx_path: str, precision: str, trt, compute_capability: str | None = None) -> dict:
    """The cache key of an engine built from `onnx_path` here (or for `compute_capability`, AOT)."""
    if compute_capability:
        sm, cc = parse_compute_capability(compute_capability)
        gpu = f'any {sm} (ahead-of-time)'
    else:
        gpu, cc = local_gpu()
    return {'onnx_sha256': file_sha256(onnx_path), 'tensorrt_module': trt.__name__.split('.')[0],
            'tensorrt_version': str(trt.__version__), 'gpu_name': gpu, 'compute_capability': cc,
            'input_shape': onnx_input_shape(onnx_path), 'precision': precision}


def read_sidecar(engine_path: str) -> dict | None:
    try:
        with open(sidecar_path(engine_path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def key_differences(old: dict, new: dict) -> list[str]:
    return [f'{k}: cached {old.get(k)!r} != wanted {new[k]!r}' for k in new if old.get(k) != new[k]]


# ---------------------------------------------------------------------------------------------------------------
# progress reporting
class _Spinner:
    """Fallback progress for TensorRT versions without IProgressMonitor: a ticking elapsed-time line."""

    def __init__(self, label: str, stream=sys.stderr) -> None:
        self.label, self.stream, self._stop = label, stream, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0, frames, i = time.perf_counter(), '|/-\\', 0
        while not self._stop.wait(0.5):
            self.stream.write(f'\r{self.label} {frames[i % 4]} {time.perf_counter() - t0:6.1f} s')
            self.stream.flush()
            i += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.stream.write('\n')


def _progress_monitor(trt, stream=sys.stderr):
    """An IProgressMonitor printing nested build phases with step counts, or None when TensorRT lacks it."""
    if not hasattr(trt, 'IProgressMonitor'):
        return None

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._phases: dict[str, tuple[int, int, float]] = {}  # name -> (depth, steps, start)

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._phases[parent_phase][0] + 1 if parent_phase in self._phases else 0
            self._phases[phase_name] = (depth, int(num_steps), time.perf_counter())
            if depth <= 1:
                stream.write(f"{'  ' * depth}[build] {phase_name} (0/{num_steps})\n")
                stream.flush()

        def step_complete(self, phase_name, step):
            depth, steps, _ = self._phases.get(phase_name, (0, 0, 0.0))
            if depth == 0 and steps:
                stream.write(f"{'  ' * depth}[build] {phase_name} ({int(step) + 1}/{steps})\n")
                stream.flush()
            return True  # keep building

        def phase_finish(self, phase_name):
            depth, _, t0 = self._phases.pop(phase_name, (0, 0, time.perf_counter()))
            if depth <= 1:
                stream.write(f"{'  ' * depth}[build] {phase_name} done in {time.perf_counter() - t0:.1f} s\n")
                stream.flush()

    return PhasePrinter()


# ---------------------------------------------------------------------------------------------------------------
# the build itself
def trt_build(onnx_path: str, precision: str, trt, compute_capability: str | None = None,
              workspace_mib: int | None = None, progress: bool = True) -> tuple[bytes, str]:
    """Parse the ONNX and build a serialized engine; returns (bytes, effective precision)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise MgeoError(f'TensorRT ({trt.__name__}) cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    effective = 'fp32'
    if precision == 'fp16':
        if hasattr(trt.BuilderFlag, 'FP16'):
            config.set_flag(trt.BuilderFlag.FP16)
            effective = 'fp16'
        else:
            log.warning('%s builds strongly typed networks (no FP16 flag): the engine keeps the ONNX types (fp32)',
                        trt.__name__)
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if compute_capability:
        if not hasattr(config, 'set_compute_capability'):
            raise MgeoError(f'{trt.__name__} {trt.__version__} cannot target a compute capability; build on the GPU')
        sm, _ = parse_compute_capability(compute_capability)
        if not hasattr(trt.ComputeCapability, sm):
            raise MgeoError(f'{trt.__name__} cannot target {sm}; choose one of '
                            f'{[n for n in dir(trt.ComputeCapability) if n.startswith("SM")]}')
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, sm), 0)
    monitor = _progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
    elif progress:
        with _Spinner(f'building {os.path.basename(onnx_path)}'):
            serialized = builder.build_serialized_network(network, config)
    else:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MgeoError(f'TensorRT ({trt.__name__}) failed to build an engine from {onnx_path} (see its log above)')
    return bytes(serialized), effective


Builder = Callable[..., tuple[bytes, str]]


def build_engine(onnx_path: str, output: str, precision: str = 'fp16', rebuild: bool = True,
                 trt_module: str | None = None, compute_capability: str | None = None,
                 workspace_mib: int | None = None, progress: bool = True, builder: Builder | None = None,
                 trt=None) -> EngineBuild:
    """Build `output` from `onnx_path` unless a cached engine with the same key is already there.

    rebuild=False refuses (EngineCacheError) a cached engine whose key differs instead of rebuilding it.
    `builder`/`trt` are injectable (tests use a fake builder; CI uses trt_module='tensorrt_rtx_bindings').
    """
    if precision not in PRECISIONS:
        raise MgeoError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    if not os.path.isfile(onnx_path):
        raise MgeoError(f'no ONNX file at {onnx_path}')
    if trt is None:
        try:
            trt = import_tensorrt(trt_module)
        except Exception as e:
            raise BackendUnavailableError(f'cannot build an engine: {trt_module or "tensorrt"} is not importable '
                                          f'({e}); install TensorRT (JetPack on Jetson, NVIDIA\'s pip index on '
                                          'desktop)') from e
    key = engine_key(onnx_path, precision, trt, compute_capability)
    cached = read_sidecar(output) if os.path.isfile(output) else None
    if cached is not None and cached.get('key') == key:
        log.info('engine cache hit: %s', output)
        return EngineBuild(output, key, built=False, seconds=0.0, reason='cache hit')
    if cached is not None or os.path.isfile(output):
        diffs = key_differences(cached.get('key', {}), key) if cached else ['no sidecar (unknown origin)']
        if not rebuild:
            raise EngineCacheError(f'{output} does not match and rebuilding is disabled: ' + '; '.join(diffs)
                                   + ' — rerun without --no-rebuild (or delete the engine) to rebuild it')
        reason = 'stale: ' + '; '.join(diffs)
    else:
        reason = 'not built yet'
    log.info('building engine %s (%s)', output, reason)
    t0 = time.perf_counter()
    build = builder or trt_build
    data, effective = build(onnx_path, precision, trt, compute_capability=compute_capability,
                            workspace_mib=workspace_mib, progress=progress)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, output)
    sidecar = {'key': key, 'effective_precision': effective, 'build_seconds': round(seconds, 3),
               'onnx_path': os.path.abspath(onnx_path), 'onnx_metadata': onnx_metadata(onnx_path),
               'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    with open(sidecar_path(output) + '.tmp', 'w') as f:
        json.dump(sidecar, f, indent=2, sort_keys=True)
    os.replace(sidecar_path(output) + '.tmp', sidecar_path(output))
    return EngineBuild(output, key, built=True, seconds=seconds, reason=reason)
