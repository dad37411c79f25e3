"""Build a serialized TensorRT engine from an ONNX, showing the build's progress.

The cache around it (key, sidecar, reuse or refusal, probe) is `mgeo_ros.runtime.engine_cache`; this module only
turns one ONNX into engine bytes: a strongly typed network (the engine computes in the ONNX's types), one
optimization profile for a dynamic-size graph (`EngineProfile`, with `num_tokens` made a constant of a build copy by
`fixed_tokens_onnx`), an optional ahead-of-time compute capability, and the build phases printed as they run.

One strongly typed build path (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`) serves TensorRT 10.x, TensorRT 11
(where strong typing is the only mode and the FP16/INT8 flags are gone) and TensorRT-RTX; TensorRT < 10 is refused.
The profile (min / opt / max network input sizes) covers by default the token grids of every camera aspect ratio from
1:2 to 2:1, or exactly those of given camera sizes.

TensorRT is passed in as a module, so this module imports anywhere. The TensorRT-RTX builder
`tensorrt_rtx_bindings` compiles ahead of time for a chosen compute capability without a GPU (the CI gate).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass

from mgeo_ros.errors import BadInputError, MgeoError
from mgeo_ros.runtime.devices import check_tensorrt_version
from mgeo_ros.runtime.model_layout import IMAGE, TOKENS

log = logging.getLogger('mgeo_ros.runtime')


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




# ---------------------------------------------------------------------------------------------------------------
# progress display
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
