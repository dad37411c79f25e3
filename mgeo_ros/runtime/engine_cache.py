"""ONNX -> TensorRT engine, with a cache that knows when an engine is stale.

This lives in the runtime layer because the Predictor (and so the node) builds an engine from an .onnx on first
start; `mgeo_ros.export.engine` re-exports it for `mgeo build-engine`.

The key (stored in a JSON sidecar `<engine>.json`) covers: ONNX sha256, TensorRT flavour, version and major.minor,
GPU name, compute capability, input shape, the typing mode, the *effective* precision and, for a dynamic-size ONNX
(the MoGe authors' layout or `mgeo export --dynamic`), the optimization profile.

A dynamic ONNX is built with `num_tokens` fixed at build time (the input becomes a constant of a build copy of the
graph) and one optimization profile over the network input sizes (min / opt / max, `EngineProfile`): by default the
token grids of every camera aspect ratio from 1:2 to 2:1, or exactly those of given camera sizes. Its probe is made
at build time by ONNX Runtime on the ONNX at the profile's opt size. A cached engine whose key
matches is reused; one that differs is rebuilt, or refused with the differences spelled out when rebuilding is
disabled.

One strongly typed build path (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) serves TensorRT 10.x, TensorRT 11
(where strong typing is the only mode and the FP16/INT8 flags are gone) and TensorRT-RTX: the engine computes in the
types of the ONNX, so its precision is the ONNX's (`onnx_precision`). FP16 comes from `mgeo export --precision
fp16`; asking for an FP16 engine from an FP32 ONNX is refused with that command. TensorRT < 10 is refused.

TensorRT is imported lazily, so this module imports anywhere. The TensorRT-RTX builder `tensorrt_rtx_bindings`
compiles ahead of time for a chosen compute capability without a GPU (the CI gate).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mgeo_ros.errors import BackendUnavailableError, BadInputError, MgeoError
from mgeo_ros.runtime.devices import (
    check_tensorrt_version,
    cuda_device,
    import_tensorrt,
    sidecar_path,
    tensorrt_flavour,
)
from mgeo_ros.runtime.model_layout import IMAGE, TOKENS, check_onnx_layout

log = logging.getLogger('mgeo_ros.runtime')
PRECISIONS = ('fp16', 'fp32')
TYPING = 'strong'
_HEAVY_OPS = ('Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Einsum')


class EngineCacheError(MgeoError):
    """A cached engine does not match this ONNX/GPU/TensorRT/precision and rebuilding was disabled."""


class PrecisionMismatchError(MgeoError):
    """An engine of one precision was asked for from an ONNX of the other (strongly typed builds keep ONNX types)."""


@dataclass
class EngineBuild:
    """Outcome of `build_engine`: where the engine is, its key, and whether it was (re)built now."""

    path: str
    key: dict
    built: bool
    seconds: float
    reason: str


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def onnx_input_shape(onnx_path: str) -> list:
    """Shape of the image input (ints; a dynamic axis is its symbolic name); ModelLayoutError for a graph that is
    not a MoGe layout."""
    return list(check_onnx_layout(onnx_path).image.shape)


@dataclass(frozen=True)
class EngineProfile:
    """The optimization profile of an engine built from a dynamic ONNX: network input sizes (W, H) it accepts
    (min/max, per axis) and is tuned for (opt), and the token count fixed at build time."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]
    num_tokens: int

    def key(self) -> dict:
        return {'min': list(self.min), 'opt': list(self.opt), 'max': list(self.max), 'num_tokens': self.num_tokens}

    def text(self) -> str:
        return (f'{self.min[0]}x{self.min[1]} .. {self.max[0]}x{self.max[1]} (opt {self.opt[0]}x{self.opt[1]}), '
                f'{self.num_tokens} tokens')


DEFAULT_OPT_CAMERA = (640, 480)
PROFILE_ASPECTS = (0.5, 2.0)  # default profile: every camera aspect ratio in [1:2, 2:1]


def engine_profile(num_tokens: int, camera_sizes: list[tuple[int, int]] | None = None) -> EngineProfile:
    """The profile for cameras of `camera_sizes` (W, H) at `num_tokens`: the token-grid network sizes the runtime
    will feed (opt: the first camera's). None: every aspect ratio from 1:2 to 2:1 (opt: 4:3)."""
    from mgeo_ros.runtime.preprocess import network_size

    if num_tokens <= 0:
        raise MgeoError(f'num_tokens must be positive, got {num_tokens}')
    if camera_sizes:
        sizes = [network_size(w, h, num_tokens) for w, h in camera_sizes]
        opt = sizes[0]
    else:
        sizes = [network_size(round(1000 * a), 1000, num_tokens) for a in PROFILE_ASPECTS]  # tallest, widest
        opt = network_size(*DEFAULT_OPT_CAMERA, num_tokens)
    lo_w, lo_h = min(s[0] for s in sizes + [opt]), min(s[1] for s in sizes + [opt])
    hi_w, hi_h = max(s[0] for s in sizes + [opt]), max(s[1] for s in sizes + [opt])
    return EngineProfile(min=(lo_w, lo_h), opt=opt, max=(hi_w, hi_h), num_tokens=int(num_tokens))


def fixed_tokens_onnx(onnx_path: str, num_tokens: int, out_path: str) -> str:
    """A copy of a dynamic ONNX whose `num_tokens` input is the constant `num_tokens` (what the engine is built
    from: TensorRT then sees the token grid as shape arithmetic on the image size only)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    keep = [i for i in model.graph.input if i.name != TOKENS]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.append(numpy_helper.from_array(np.array(int(num_tokens), dtype=np.int64), TOKENS))
    onnx.save(model, out_path)
    return out_path


def write_dynamic_probe(onnx_path: str, engine_path: str, profile: EngineProfile) -> str:
    """The probe of an engine from a dynamic ONNX: ONNX Runtime (CPU) on the ONNX, the probe frame at the profile's
    opt size, the build's token count (recorded in the probe, which `check_backend` passes on)."""
    import numpy as np
    import onnxruntime as ort

    from mgeo_ros.runtime.probe import probe_frame, write_probe

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(onnx_path, sess_options=opts, providers=['CPUExecutionProvider'])
    frame = probe_frame(*profile.opt)
    values = sess.run(None, {IMAGE: frame, TOKENS: np.array(profile.num_tokens, dtype=np.int64)})
    outputs = {o.name: v for o, v in zip(sess.get_outputs(), values, strict=True)}
    return write_probe(engine_path, (frame, outputs), meta={'num_tokens': profile.num_tokens,
                                                            'source_onnx': os.path.basename(onnx_path)})


def onnx_metadata(onnx_path: str) -> dict[str, str]:
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key != 'model_config'}


def onnx_precision(onnx_path: str) -> str:
    """'fp16' when most convolution/matmul weights of the graph are FP16 (a mixed-precision export), else 'fp32':
    what a strongly typed build computes in."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    inits = {t.name: t.data_type for t in model.graph.initializer}
    weights = [inits[n.input[1]] for n in model.graph.node
               if n.op_type in _HEAVY_OPS and len(n.input) > 1 and n.input[1] in inits]
    half = sum(w == onnx.TensorProto.FLOAT16 for w in weights)
    return 'fp16' if weights and 2 * half > len(weights) else 'fp32'


def export_command(onnx_path: str, precision: str) -> str:
    """The `mgeo export` command that writes an ONNX of `precision` for the same model and camera size."""
    meta = onnx_metadata(onnx_path)
    stem = os.path.splitext(onnx_path)[0]
    # FP16 from an FP32 graph needs no checkpoint (the only way for a file that came without one)
    from_onnx = f'mgeo export --from-onnx {onnx_path} --output {stem}.fp16.onnx --precision fp16'
    if precision == 'fp16' and 'mgeo_format' not in meta:
        return from_onnx
    size = f"{meta.get('camera_width', 'W')}x{meta.get('camera_height', 'H')}"
    tokens = meta.get('requested_num_tokens', meta.get('num_tokens', '1200'))
    command = (f'mgeo export CHECKPOINT --output {stem}.{precision}.onnx --size {size} --num-tokens {tokens} '
               f'--precision {precision}')
    return command + (f' (or, without PyTorch: {from_onnx})' if precision == 'fp16' else '')


def parse_compute_capability(text: str) -> tuple[str, str]:
    """'SM89' or '8.9' -> ('SM89', '8.9'); anything else is a BadInputError saying which forms are accepted."""
    t = text.strip().upper().replace('SM_', 'SM')
    sm = re.fullmatch(r'SM(\d{1,2})(\d)', t)
    dotted = re.fullmatch(r'(\d{1,2})\.(\d)', t)
    if sm is None and dotted is None:
        raise BadInputError(f'compute capability {text!r}: expected SM<major><minor> or <major>.<minor> (e.g. SM89 '
                            'or 8.9 for an RTX 40xx/L4, SM90 or 9.0 for an H100)')
    major, minor = (sm or dotted).groups()
    return f'SM{major}{minor}', f'{major}.{minor}'


def local_gpu() -> tuple[str, str]:
    """(GPU name, compute capability 'X.Y') of GPU 0, from cuda-python, torch when it is already imported, or
    nvidia-smi; BackendUnavailableError if none. Never imports torch: the TensorRT path must not need it."""
    found = cuda_device()
    if found is not None:
        return found
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name,compute_cap', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip().splitlines()
        if out:
            name, cc = (s.strip() for s in out[0].split(','))
            return name, cc
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    raise BackendUnavailableError('no NVIDIA GPU found (cuda-python and nvidia-smi see none); a TensorRT engine '
                                  'must be built on the GPU that will run it, or give a compute capability for an '
                                  'ahead-of-time TensorRT-RTX build')


def engine_key(onnx_path: str, precision: str | None, trt, compute_capability: str | None = None,
               profile: EngineProfile | None = None) -> dict:
    """The cache key of an engine built from `onnx_path` here (or for `compute_capability`, AOT); precision None
    (or anything) is replaced by what the engine will really compute in: the ONNX's precision. A dynamic ONNX's
    engine also keys on its optimization profile."""
    if compute_capability:
        sm, cc = parse_compute_capability(compute_capability)
        gpu = f'any {sm} (ahead-of-time)'
    else:
        gpu, cc = local_gpu()
    _, (major, minor) = tensorrt_flavour(trt)
    return {'onnx_sha256': file_sha256(onnx_path), 'tensorrt_module': trt.__name__.split('.')[0],
            'tensorrt_version': str(trt.__version__), 'tensorrt_major_minor': f'{major}.{minor}', 'gpu_name': gpu,
            'compute_capability': cc, 'input_shape': onnx_input_shape(onnx_path),
            'precision': onnx_precision(onnx_path), 'typing': TYPING,
            **({'profile': profile.key()} if profile is not None else {})}


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
              workspace_mib: int | None = None, progress: bool = True,
              profile: EngineProfile | None = None) -> tuple[bytes, str, dict]:
    """Parse the ONNX into a strongly typed network and build a serialized engine; returns (bytes, effective
    precision read from the network's convolution/matmul layer types, those types counted). No precision flag
    is set: TensorRT 11 and TensorRT-RTX have none, and on TensorRT 10 a strongly typed network ignores them."""
    check_tensorrt_version(trt)
    flags = getattr(trt, 'NetworkDefinitionCreationFlag', None)
    if flags is None or not hasattr(flags, 'STRONGLY_TYPED'):
        raise MgeoError(f'{trt.__name__} {trt.__version__} has no strongly typed networks; use TensorRT >= 10')
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(flags.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise MgeoError(f'TensorRT ({trt.__name__}) cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    counts = heavy_layer_types(network, trt)
    effective = 'fp16' if counts.get('HALF', 0) * 2 > sum(counts.values()) else 'fp32'
    log.info('strongly typed network: convolution/matmul layers by output type %s -> %s engine', counts, effective)
    if profile is not None:  # a dynamic-size graph: batch 1, the network sizes of the profile
        shapes = [(1, 3, size[1], size[0]) for size in (profile.min, profile.opt, profile.max)]
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(IMAGE, *shapes)
        config.add_optimization_profile(opt_profile)
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
    return bytes(serialized), effective, counts


def heavy_layer_types(network, trt) -> dict[str, int]:
    """Output type name -> count over the convolution, deconvolution and matmul layers of a parsed network: in a
    strongly typed network these are the types TensorRT will compute in."""
    heavy = {getattr(trt.LayerType, n) for n in ('CONVOLUTION', 'DECONVOLUTION', 'MATRIX_MULTIPLY')
             if hasattr(trt.LayerType, n)}
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in heavy:
            name = str(layer.get_output(0).dtype).split('.')[-1]
            counts[name] = counts.get(name, 0) + 1
    return counts


Builder = Callable[..., tuple[bytes, str]]


def build_engine(onnx_path: str, output: str, precision: str | None = None, rebuild: bool = True,
                 trt_module: str | None = None, compute_capability: str | None = None,
                 workspace_mib: int | None = None, progress: bool = True, builder: Builder | None = None,
                 trt=None, verify: bool = True, num_tokens: int | None = None,
                 camera_sizes: list[tuple[int, int]] | None = None) -> EngineBuild:
    """Build `output` from `onnx_path` unless a cached engine with the same key is already there.

    The engine's precision is the ONNX's; `precision` (None: whatever the ONNX is) only states what the caller
    expects, and a mismatch is refused (PrecisionMismatchError) with the export command that writes the right ONNX.
    rebuild=False refuses (EngineCacheError) a cached engine whose key differs instead of rebuilding it.
    `builder`/`trt` are injectable (tests use a fake builder; CI uses trt_module='tensorrt_rtx_bindings').
    verify: after a build on this GPU, load the engine and run its probe (EngineProbeError when beyond budget);
    an ahead-of-time build (compute_capability) cannot run here, and its sidecar says so.
    A dynamic-size ONNX is built with `num_tokens` (default 1200) fixed and the profile of `engine_profile` for
    `camera_sizes`; an ONNX of neither MoGe layout is refused (ModelLayoutError) before anything is built.
    """
    if precision is not None and precision not in PRECISIONS:
        raise MgeoError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    if not os.path.isfile(onnx_path):
        raise MgeoError(f'{onnx_path}: no such file (expected an .onnx from `mgeo export` or the MoGe authors); '
                        'check the path')
    layout = check_onnx_layout(onnx_path)
    profile = engine_profile(int(num_tokens or 1200), camera_sizes) if layout.dynamic else None
    if camera_sizes and not layout.dynamic:
        log.warning('%s has a fixed input size: camera sizes are ignored (the engine takes what the ONNX takes)',
                    onnx_path)
    have = onnx_precision(onnx_path)
    if precision is not None and precision != have:
        raise PrecisionMismatchError(
            f'{onnx_path} is an {have.upper()} graph and TensorRT builds strongly typed (the engine computes in the '
            f'ONNX\'s types), so it cannot give an {precision.upper()} engine. Export the right one: '
            f'{export_command(onnx_path, precision)}')
    if trt is None:
        try:
            trt = import_tensorrt(trt_module)
        except Exception as e:
            raise BackendUnavailableError(f'cannot build an engine: {trt_module or "tensorrt"} is not importable '
                                          f'({e}); install TensorRT (JetPack on Jetson, NVIDIA\'s pip index on '
                                          'desktop)') from e
    check_tensorrt_version(trt)
    key = engine_key(onnx_path, precision, trt, compute_capability, profile)
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
    if profile is None:
        data, effective, *layer_types = build(onnx_path, precision, trt, compute_capability=compute_capability,
                                              workspace_mib=workspace_mib, progress=progress)
    else:
        import tempfile

        log.info('dynamic ONNX: building for network inputs %s', profile.text())
        with tempfile.TemporaryDirectory(prefix='mgeo_engine_') as tmp_dir:
            fixed = fixed_tokens_onnx(onnx_path, profile.num_tokens, os.path.join(tmp_dir, 'fixed_tokens.onnx'))
            data, effective, *layer_types = build(fixed, precision, trt, compute_capability=compute_capability,
                                                  workspace_mib=workspace_mib, progress=progress, profile=profile)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, output)
    probe = _copy_probe(onnx_path, output) if profile is None else write_dynamic_probe(onnx_path, output, profile)
    metadata = onnx_metadata(onnx_path)
    if profile is not None:  # what the runtime needs to feed this engine: its token count, any size in the profile
        metadata.update(num_tokens=str(profile.num_tokens), dynamic='1', profile=profile.text())
    sidecar = {'key': key, 'effective_precision': effective, 'typing': TYPING, 'build_seconds': round(seconds, 3),
               'heavy_layer_types': layer_types[0] if layer_types else None,
               'probe': os.path.basename(probe) if probe else None,
               'onnx_path': os.path.abspath(onnx_path), 'onnx_metadata': metadata,
               'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    _write_sidecar(output, sidecar)
    if verify and builder is None:
        sidecar['probe_check'] = _verify_built(output, trt, compute_capability, probe)
        _write_sidecar(output, sidecar)
    return EngineBuild(output, key, built=True, seconds=seconds, reason=reason)


def _write_sidecar(engine_path: str, sidecar: dict) -> None:
    """Write the engine's JSON sidecar atomically (a reader never sees half a file)."""
    path = sidecar_path(engine_path)
    with open(path + '.tmp', 'w') as f:
        json.dump(sidecar, f, indent=2, sort_keys=True)
    os.replace(path + '.tmp', path)


def _verify_built(engine_path: str, trt, compute_capability: str | None, probe: str | None) -> str:
    """Run a freshly built engine on its probe; the verdict for the sidecar (raises EngineProbeError on failure)."""
    if compute_capability:
        return 'not run: ahead-of-time build (no GPU of that kind here); runs when the engine is first loaded'
    if not probe:
        return 'not run: no probe'
    from mgeo_ros.runtime.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(engine_path, trt_module=trt.__name__.split('.')[0])
    return 'ok: ' + backend.probe_check.summary() if backend.probe_check else 'not run'



def _copy_probe(onnx_path: str, engine_path: str) -> str | None:
    """Put the ONNX's probe beside the engine (`<engine stem>.probe.npz`), so the engine carries its own proof."""
    import shutil

    from mgeo_ros.runtime.probe import probe_path

    src, dst = probe_path(onnx_path), probe_path(engine_path)
    if not os.path.isfile(src):
        log.warning('%s has no probe (%s): the engine cannot prove itself; re-export with `mgeo export` to get one',
                    onnx_path, src)
        return None
    if os.path.abspath(src) != os.path.abspath(dst):
        shutil.copyfile(src, dst)
    return dst
