"""`Predictor`: preprocess -> Backend.forward -> postprocess, the same for every backend.

`backend='auto'` picks, by what is installed and has a device (logged at INFO):
  .engine               -> tensorrt
  .onnx                 -> tensorrt (engine built once into the cache dir) > onnxruntime CUDA > onnxruntime CPU
  checkpoint / module   -> torch CUDA > torch CPU
A checkpoint on a CPU-only machine runs on the torch backend, not through an automatic ONNX export: an export
needs a fixed input size (unknown until the first frame), takes seconds to minutes, and measured on this kind of
CPU ONNX Runtime is not reliably faster for this model (docs/benchmarks.md). Export explicitly with
`mgeo export` to use ONNX Runtime.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgeo_ros.errors import BackendUnavailableError, BadInputError
from mgeo_ros.geometry import Intrinsics
from mgeo_ros.runtime.backends.base import Backend, RawOutput, log
from mgeo_ros.runtime.devices import has_nvidia_gpu, tensorrt_available, torch_cuda_available
from mgeo_ros.runtime.frame_stage import postprocess
from mgeo_ros.runtime.model_layout import FLOAT_FORM, UINT8_FORM
from mgeo_ros.runtime.prediction import Prediction
from mgeo_ros.runtime.preprocess import Preprocessor, grid_tokens, input_hw

BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')


def model_kind(model_path) -> str:
    """'engine', 'onnx' or 'checkpoint' (a project checkpoint directory, an official .pt, or a torch module)."""
    if not isinstance(model_path, (str, os.PathLike)):
        return 'checkpoint'
    suffix = Path(model_path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return 'engine'
    if suffix == '.onnx':
        return 'onnx'
    return 'checkpoint'


def default_cache_dir() -> Path:
    """Where automatically built engines go: $MGEO_CACHE_DIR, else ~/.cache/mgeo_ros."""
    return Path(os.environ.get('MGEO_CACHE_DIR') or Path.home() / '.cache' / 'mgeo_ros')


def default_model_path() -> Path:
    """The packaged default model: the installed share/ copy (colcon/ament), else the one in the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory('mgeo_ros')) / 'models' / 'default'
        if shared.exists():
            return shared
    except Exception:  # not installed through colcon/pip: fall back to the source tree
        pass
    return Path(__file__).resolve().parents[1] / 'models' / 'default'


def choose_backend(kind: str) -> str:
    """The `auto` choice for a model kind on this machine (see the module docstring)."""
    if kind == 'engine':
        return 'tensorrt'
    if kind == 'onnx':
        if tensorrt_available() and has_nvidia_gpu():
            return 'tensorrt'
        return 'onnxruntime'
    return 'torch'


def _engine_from_onnx(onnx_path: str, cache_dir: Path, num_tokens: int) -> str:
    """Build (or reuse) a TensorRT engine for `onnx_path` in `cache_dir` (the cache key decides reuse); the engine
    computes in the ONNX's precision (strongly typed). A dynamic-size ONNX gets `num_tokens` fixed and the default
    profile (every aspect ratio from 1:2 to 2:1; `mgeo build-engine --camera-sizes` builds a narrower one)."""
    from mgeo_ros.runtime.engine_cache import build_engine, onnx_precision
    from mgeo_ros.runtime.model_layout import check_onnx_layout

    cache_dir.mkdir(parents=True, exist_ok=True)
    tokens = f'.n{int(num_tokens)}' if check_onnx_layout(onnx_path).dynamic else ''
    engine = cache_dir / (Path(onnx_path).stem + f'{tokens}.{onnx_precision(onnx_path)}.engine')
    build_engine(onnx_path, str(engine), rebuild=True, verify=False, num_tokens=num_tokens)  # probed on load
    return str(engine)


def _onnx_beside(engine_path: str) -> str | None:
    """The .onnx an engine was built from: the one its sidecar names, else `<stem>.onnx` beside it."""
    from mgeo_ros.runtime.engine_cache import read_sidecar

    side = read_sidecar(engine_path) or {}
    for candidate in (side.get('onnx_path'), str(Path(engine_path).with_suffix('.onnx'))):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _tensorrt_or_fallback(engine_path: str, onnx_path: str | None, device: str | None, fallback: bool,
                          threads: int | None) -> Backend:
    """The TensorRT backend; an engine that fails its probe falls back to ONNX Runtime on `onnx_path` if allowed."""
    from mgeo_ros.runtime.backends.tensorrt_backend import EngineProbeError, TensorRTBackend

    try:
        return TensorRTBackend(engine_path, device=device)
    except EngineProbeError as e:
        if not fallback or not onnx_path:
            raise
        from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        log.error('%s; falling back to ONNX Runtime on %s (engine_fallback)', e, onnx_path)
        backend = OnnxRuntimeBackend(onnx_path, device=device, threads=threads)
        backend.fallback_reason = str(e)
        return backend


def create_backend(model_path, backend: str = 'auto', device: str | None = None, precision: str = 'fp32',
                   cache_dir: str | os.PathLike | None = None, torch_reference_mode: bool = False,
                   threads: int | None = None, engine_fallback: bool = False, num_tokens: int = 1200) -> Backend:
    """Instantiate a backend for a model; raises BackendUnavailableError with the reason when it cannot run.
    `num_tokens`: the token count an engine built here from a dynamic-size ONNX has fixed.
    A `Backend` instance given as the model is used as it is (a benchmark's replay, a caller's own backend)."""
    if isinstance(model_path, Backend):
        return model_path
    if backend not in BACKENDS:
        raise BadInputError(f'backend must be one of {BACKENDS}, got {backend!r}')
    kind = model_kind(model_path)
    if kind != 'checkpoint' and not os.path.exists(model_path):
        raise BadInputError(f'model {model_path}: no such file (expected a checkpoint directory, .pt, .onnx or '
                            '.engine); check the path')
    chosen = choose_backend(kind) if backend == 'auto' else backend
    if backend == 'auto':  # torch is asked about only for checkpoints: the ONNX/engine path never imports it
        cuda = torch_cuda_available() if kind == 'checkpoint' else 'not asked'
        log.info('backend auto: %s model -> %s (tensorrt=%s, nvidia_gpu=%s, torch_cuda=%s)', kind, chosen,
                 tensorrt_available(), has_nvidia_gpu(), cuda)
    if chosen == 'torch':
        if kind != 'checkpoint':
            raise BackendUnavailableError(f'torch backend needs a checkpoint, got a {kind} file ({model_path}); run '
                                          'it with backend onnxruntime or tensorrt (or auto)')
        from mgeo_ros.runtime.backends.torch_backend import TorchBackend

        return TorchBackend(model_path, device=device, precision=precision, reference_mode=torch_reference_mode,
                            threads=threads)
    if chosen == 'onnxruntime':
        if kind != 'onnx':
            raise BackendUnavailableError(f'onnxruntime backend needs an .onnx file, got a {kind} ({model_path}); '
                                          'create one with `mgeo export`')
        from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(str(model_path), device=device, threads=threads)
    if kind == 'onnx':
        engine = _engine_from_onnx(str(model_path), Path(cache_dir) if cache_dir else default_cache_dir(), num_tokens)
        return _tensorrt_or_fallback(engine, str(model_path), device, engine_fallback, threads)
    if kind != 'engine':
        raise BackendUnavailableError(f'tensorrt backend needs an .engine or .onnx file, got a {kind}; run '
                                      '`mgeo export` then `mgeo build-engine`')
    return _tensorrt_or_fallback(str(model_path), _onnx_beside(str(model_path)), device, engine_fallback, threads)


@dataclass(frozen=True)
class ModelInput:
    """One frame's network input made by `Predictor.prepare` (valid until the prepare after next)."""

    image: np.ndarray  # float32 [1,3,h,w] in [0,1], or uint8 [1,h,w,3] for a uint8-input model
    tokens: int  # the ViT token grid of that size
    preprocess_ms: float
    preprocess_cpu_ms: float


class Predictor:
    """One model on one backend; `predict(rgb, intrinsics)` -> `Prediction` at the frame's resolution.

    model_path: project checkpoint directory, official MoGe-2 .pt, `.onnx`, `.engine` (or an in-memory torch model,
      or a ready `Backend` instance).
    backend: 'auto' | 'torch' | 'onnxruntime' | 'tensorrt'.
    num_tokens: ViT token budget (1200–3600 typical) deciding the network input for each aspect ratio; a dynamic-size
      ONNX (the MoGe authors' layout, `mgeo export --dynamic`) gets it as its `num_tokens` input, an engine built from
      one here has it fixed; a fixed-size ONNX/engine has its own.
    input_size: fixed network (W, H) for checkpoints and dynamic files; fixed-size ONNX/engine files carry their own
      and ignore this. Unset, each frame goes in at its token-grid size (14 px per token), which is also the largest
      input a dynamic file is fed.
    precision: 'fp32' | 'fp16': torch autocast on CUDA. ONNX Runtime and TensorRT compute in the ONNX's own types
      (an engine built from an .onnx is strongly typed: FP16 comes from `mgeo export --precision fp16`).
    mask_threshold: validity probability above which a pixel is kept.
    warn: where warnings about the frames go (once per new frame size), e.g. the ROS node's logger; default the
      `mgeo_ros.runtime` Python logger.
    device: 'cpu', 'cuda', 'cuda:1'... (None: the backend's best).
    cache_dir: where engines built from an .onnx are cached (default $MGEO_CACHE_DIR or ~/.cache/mgeo_ros).
    torch_reference_mode: torch backend only: run the reference MoGe-2 graph instead of the exported one (see
      `TorchBackend`); off by default so every backend gives the same Prediction.
    threads: intra-op CPU threads of one inference: ONNX Runtime's intra_op_num_threads, PyTorch's set_num_threads
      (process-wide); TensorRT ignores it (the GPU runs the network). None keeps the library's default (all cores),
      0 = `devices.default_intra_op_threads()` (usable cores - 1, at least 1: what the node uses). On a shared or
      busy CPU, fewer threads than cores avoids barrier stalls and spin-waiting (measured: 5-10x slower torch at 2
      threads on a loaded 2-core machine than at 1).
    engine_fallback: a TensorRT engine that fails its probe (see `mgeo_ros.runtime.probe`) is replaced by ONNX
      Runtime on the .onnx it was built from, when that file is there; off: the failure is raised.
    """

    def __init__(self, model_path, backend: str = 'auto', num_tokens: int = 1200,
                 input_size: tuple[int, int] | None = None, precision: str = 'fp32', device: str | None = None,
                 mask_threshold: float = 0.5, cache_dir: str | os.PathLike | None = None,
                 torch_reference_mode: bool = False, threads: int | None = None,
                 engine_fallback: bool = False, warn: Callable[[str], None] | None = None) -> None:
        if precision not in ('fp32', 'fp16'):
            raise BadInputError(f'precision must be fp32 or fp16, got {precision!r}')
        if not 0.0 <= mask_threshold <= 1.0:
            raise BadInputError(f'mask_threshold must be in [0, 1], got {mask_threshold}')
        self._setup(create_backend(model_path, backend, device=device, precision=precision, cache_dir=cache_dir,
                                   torch_reference_mode=torch_reference_mode, threads=threads,
                                   engine_fallback=engine_fallback, num_tokens=num_tokens),
                    num_tokens, input_size, mask_threshold, warn)
        log.info('Predictor: backend=%s device=%s precision=%s input=%s num_tokens=%d threads=%s', self.backend.name,
                 self.backend.device, self.backend.precision, self.preprocessor.input_size or 'per-frame token grid',
                 self.num_tokens, self.backend.threads or 'library default')

    @classmethod
    def on_backend(cls, backend: Backend, num_tokens: int, input_size: tuple[int, int] | None = None,
                   mask_threshold: float = 0.5, warn: Callable[[str], None] | None = None,
                   run: Callable[[np.ndarray, int], RawOutput] | None = None) -> Predictor:
        """A Predictor on a loaded `backend` (nothing loaded again), with its own preprocessing buffers and
        warnings: one per camera of a shared model. `run(image, tokens)` runs the network (default: the backend's
        forward; a shared model's queue for a camera) and may leave timings of its own in the RawOutput."""
        self = cls.__new__(cls)
        self._setup(backend, num_tokens, input_size, mask_threshold, warn, run)
        return self

    def _setup(self, backend: Backend, num_tokens: int, input_size, mask_threshold: float, warn, run=None) -> None:
        self.backend = backend
        fixed = self.backend.input_size or (None if input_size is None else tuple(input_size))
        if fixed is not None and (fixed[0] % 14 or fixed[1] % 14):
            raise BadInputError(f'input_size must be multiples of 14 (the ViT patch), got {fixed[0]}x{fixed[1]}')
        meta_tokens = self.backend.metadata.get('num_tokens')
        self.num_tokens = int(meta_tokens) if meta_tokens else int(num_tokens)
        self.mask_threshold = float(mask_threshold)
        self.preprocessor = Preprocessor(self.num_tokens, fixed)
        # `prepare` alternates between two buffers: one frame's input can be made while the frame before it runs
        self._buffers = (self.preprocessor, Preprocessor(self.num_tokens, fixed))
        self._next_buffer = 0
        self.warn = warn if warn is not None else log.warning
        self._run = run  # None: the backend's own forward
        self._sizes_seen: set[tuple[int, int]] = set()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def network_size(self, width: int, height: int) -> tuple[int, int]:
        """The network input (W, H) a width x height frame is resized to."""
        return self.preprocessor.target_size(width, height)

    def prepare(self, rgb: np.ndarray) -> ModelInput:
        """Preprocessing of a frame (RGB uint8 H×W×3) into the network's input, on the caller's thread. Two
        buffers alternate: the input stays valid while the next one is prepared, until the one after that (a
        pipeline that prepares frame n+1 while frame n runs, and n+2 only after n has run, never overwrites one in
        use)."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        pre = self._buffers[self._next_buffer]
        self._next_buffer ^= 1
        # a uint8-input model (`mgeo export --input-form uint8`) takes the resized bytes and does uint8 -> float and
        # the normalization in its graph, where it runs; a float-input model gets the float tensor made here
        if getattr(self.backend, 'input_form', FLOAT_FORM) == UINT8_FORM:
            image = pre.pixels(rgb)  # validates the frame
        else:
            image = pre(rgb)
        h, w = rgb.shape[:2]
        nh, nw = input_hw(image)
        self._warn_aspect(w, h, nw, nh)
        return ModelInput(image, grid_tokens(nw, nh), (time.perf_counter() - t0) * 1e3,
                          (time.thread_time() - cpu0) * 1e3)

    def run(self, prepared: ModelInput) -> RawOutput:
        """The network on a prepared input -> RawOutput at the network size, its `timings_ms` holding 'preprocess'
        and 'forward' (and their CPU ms). Stage 2 is a `FrameStage` (runtime/frame_stage.py)."""
        t1, cpu1 = time.perf_counter(), time.thread_time()
        raw = (self._run or self.backend.forward)(prepared.image, prepared.tokens)
        # a shared model's queue leaves its own timings (batch_wait, the batch's forward): they are kept. *_cpu: the
        # preparing and this thread's CPU ms (a forward on a GPU or another thread costs this one only its hand-over)
        raw.timings_ms = {'preprocess': prepared.preprocess_ms, 'forward': (time.perf_counter() - t1) * 1e3,
                          'preprocess_cpu': prepared.preprocess_cpu_ms,
                          'forward_cpu': (time.thread_time() - cpu1) * 1e3, **raw.timings_ms}
        return raw

    def forward(self, rgb: np.ndarray) -> RawOutput:
        """Stage 1 of a frame: preprocess + the network on RGB uint8 H×W×3 -> RawOutput at the network size."""
        return self.run(self.prepare(rgb))

    def predict(self, rgb: np.ndarray, intrinsics: Intrinsics | None = None) -> Prediction:
        """RGB uint8 H×W×3 (+ optional pixel intrinsics for this frame) -> Prediction in metres at H×W."""
        t0 = time.perf_counter()
        if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
            raise BadInputError(f'intrinsics must be an Intrinsics or None, got {type(intrinsics).__name__}')
        raw = self.forward(rgb)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        fields = postprocess(raw, (w, h), intrinsics, self.mask_threshold)
        t3 = time.perf_counter()
        timings = {**raw.timings_ms, 'postprocess': (t3 - t2) * 1e3, 'total': (t3 - t0) * 1e3}
        return Prediction(timings_ms=timings, **fields)

    def _warn_aspect(self, w: int, h: int, nw: int, nh: int) -> None:
        """Once per new frame size: warn through `warn` when a fixed-size model stretches the frame."""
        if (w, h) in self._sizes_seen or self.preprocessor.input_size is None:
            return
        self._sizes_seen.add((w, h))
        if abs((w / h) / (nw / nh) - 1.0) > 0.02:
            self.warn(f'frame {w}x{h} has another aspect ratio than the model input {nw}x{nh}: it is stretched, '
                      f'which degrades accuracy; export for this camera (mgeo export --size {w}x{h})')
