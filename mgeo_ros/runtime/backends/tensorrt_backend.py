"""TensorRT backend (TensorRT >= 10 and TensorRT-RTX Python API): named I/O tensors, `set_tensor_address`,
`execute_async_v3`. Device buffers, pinned host buffers and the stream come from NVIDIA's `cuda-python`
(`cuda.bindings.runtime`), so the node's TensorRT path needs neither PyTorch nor pycuda.

Every engine proves itself when it is loaded: it runs the probe written by `mgeo export` (carried beside the engine
by `mgeo build-engine`) and is refused (EngineProbeError) when its outputs are beyond the probe budgets.
"""
from __future__ import annotations

import ctypes
import json
import os

import numpy as np

from mgeo_ros.errors import BackendUnavailableError
from mgeo_ros.runtime.backends.base import OUTPUT_NAMES, Backend, RawOutput, log, split_raw_outputs
from mgeo_ros.runtime.devices import check_tensorrt_version, import_tensorrt, sidecar_path
from mgeo_ros.runtime.probe import ProbeCheck, ProbeError, check_backend, load_probe, probe_path


class EngineProbeError(BackendUnavailableError):
    """The engine's outputs on its probe are beyond budget: it computes something else than the exported model."""

    def __init__(self, message: str, check: ProbeCheck | None = None) -> None:
        super().__init__(message)
        self.check = check


def import_cudart():
    """cuda-python's runtime module (`cuda.bindings.runtime`, or `cuda.cudart` in releases before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def numpy_dtype(trt, dt) -> np.dtype:
    """numpy dtype of a TensorRT DataType (I/O tensors of our engines are float32/float16; ints for completeness)."""
    table = {'FLOAT': np.float32, 'HALF': np.float16, 'INT32': np.int32, 'INT8': np.int8, 'BOOL': np.bool_,
             'INT64': np.int64, 'UINT8': np.uint8}
    for name, np_dt in table.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return np.dtype(np_dt)
    raise BackendUnavailableError(f'tensorrt backend: unsupported I/O tensor type {dt}')


def io_table(engine, trt) -> list[tuple[str, bool, tuple[int, ...], np.dtype]]:
    """(name, is_input, shape, numpy dtype) of every I/O tensor; an input's dynamic dims take profile 0's opt."""
    rows = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if is_input and any(d < 0 for d in shape):
            shape = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[1])
        rows.append((name, is_input, shape, numpy_dtype(trt, engine.get_tensor_dtype(name))))
    return rows


def sidecar_problems(key: dict, trt_version: str, gpu_name: str, compute_capability: str) -> list[str]:
    """Why an engine recorded in `key` cannot run here (empty when it can)."""
    problems = []
    if key.get('tensorrt_version') not in (None, trt_version):
        problems.append(f"TensorRT {key['tensorrt_version']} (here {trt_version})")
    if key.get('gpu_name') not in (None, gpu_name) and not str(key.get('gpu_name', '')).startswith('any SM'):
        problems.append(f"GPU {key['gpu_name']!r} (here {gpu_name!r})")
    if key.get('compute_capability') not in (None, compute_capability):
        problems.append(f"compute capability {key['compute_capability']} (here {compute_capability})")
    return problems


def probe_refusal(trt_version: str, gpu: str, check: ProbeCheck, jetson: bool) -> str:
    """The one line that refuses an engine failing its probe: TensorRT, GPU, worst output and error, advice."""
    advice = 'rebuild the engine from the same ONNX (mgeo build-engine), or use backend: onnxruntime'
    try:
        major, minor = (int(v) for v in trt_version.split('.')[:2])
    except ValueError:
        major, minor = 0, 0
    if major == 10 and minor < 14:
        where = 'on Jetson (JetPack 6) ' if jetson else ''
        advice = (f'TensorRT 10.x before 10.14 {where}is known to give wrong or unstable output for DINOv2-class '
                  'models: upgrade TensorRT (JetPack 7.2 brings 11.x) or use backend: onnxruntime')
    return (f'engine refused: TensorRT {trt_version} on {gpu} does not reproduce the probe ({check.summary()}); '
            f'{advice}')


class _Cuda:
    """The few cuda-python runtime calls the backend makes, each checked."""

    def __init__(self, cudart) -> None:
        self.rt = cudart

    def __call__(self, fn: str, *args):
        result = getattr(self.rt, fn)(*args)
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(err) != 0:
            _, text = self.rt.cudaGetErrorString(err)
            raise BackendUnavailableError(f'tensorrt backend: CUDA {fn} failed: {text.decode(errors="replace")}')
        return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    """Runs a serialized engine built for this GPU and TensorRT version (`mgeo build-engine`)."""

    name = 'tensorrt'

    def __init__(self, engine_path: str, device: str | None = None, trt_module: str | None = None,
                 probe: str | None = None, check_probe: bool = True) -> None:
        try:
            trt = import_tensorrt(trt_module)
        except Exception as e:
            raise BackendUnavailableError(f'tensorrt backend: TensorRT Python package is not installed ({e}); on '
                                          'Jetson use JetPack\'s python3-libnvinfer, on desktop pip install tensorrt '
                                          'from NVIDIA\'s index') from e
        try:
            cuda = _Cuda(import_cudart())
        except ImportError as e:
            raise BackendUnavailableError(f'tensorrt backend: needs NVIDIA cuda-python for device buffers ({e}); '
                                          'pip install cuda-python') from e
        if not os.path.isfile(engine_path):
            raise BackendUnavailableError(f'tensorrt backend: no engine file at {engine_path}; build one with `mgeo '
                                          'build-engine MODEL.onnx -o ENGINE`, or give the .onnx (the node builds '
                                          'and caches the engine)')
        try:
            check_tensorrt_version(trt)
        except Exception as e:
            raise BackendUnavailableError(f'tensorrt backend: {e}') from e
        self._trt, self._cuda = trt, cuda
        self._buffers: list[tuple[str, int]] = []
        index = int(device.split(':')[1]) if device and ':' in device else 0
        cuda('cudaSetDevice', index)
        props = cuda('cudaGetDeviceProperties', index)
        name = props.name.decode(errors='replace').rstrip('\x00') if isinstance(props.name, bytes) else str(props.name)
        self.gpu_name, self.compute_capability = name, f'{props.major}.{props.minor}'
        self.jetson = bool(getattr(props, 'integrated', 0))
        self.metadata = self._check_sidecar(engine_path, trt.__version__)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with open(engine_path, 'rb') as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise BackendUnavailableError(f'tensorrt backend: TensorRT {trt.__version__} could not deserialize '
                                          f'{engine_path}; it was built for another GPU or TensorRT version — rebuild '
                                          'it on this machine with `mgeo build-engine`')
        self.context = self.engine.create_execution_context()
        self.stream = cuda('cudaStreamCreate')
        self._device_bufs: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._flat: dict[str, np.ndarray] = {}
        self._inputs, self._outputs = [], []
        table = io_table(self.engine, trt)
        self._inputs = [name for name, is_input, _, _ in table if is_input]
        self._outputs = [name for name, is_input, _, _ in table if not is_input]
        if len(self._inputs) != 1:
            raise BackendUnavailableError(f'tensorrt backend: {engine_path} has inputs {self._inputs}; expected one '
                                          'image input (an engine from a dynamic ONNX has num_tokens fixed at build: '
                                          'build it with `mgeo build-engine`)')
        self._input_name = self._inputs[0]
        # a dynamic engine (from a dynamic ONNX): buffers for the profile's largest input, views per frame size
        self.dynamic = any(int(d) < 0 for d in self.engine.get_tensor_shape(self._input_name))
        in_shape = next(shape for name, _, shape, _ in table if name == self._input_name)
        if self.dynamic:
            in_shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(self._input_name, 0)[2])
        self.context.set_input_shape(self._input_name, in_shape)
        for tensor, is_input, shape, dtype in table:
            if not is_input:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(tensor))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            dev = cuda('cudaMalloc', nbytes)
            self._buffers.append(('cudaFree', dev))
            self._device_bufs[tensor] = dev
            self.context.set_tensor_address(tensor, int(dev))
            if is_input or tensor in OUTPUT_NAMES:  # only what postprocess needs comes back to the host
                self._flat[tensor] = self._pinned((int(np.prod(shape)),), dtype)
                self._host[tensor] = self._flat[tensor].reshape(shape)
        self._shape = in_shape
        shape = self._host[self._input_name].shape
        self.input_size = None if self.dynamic else (int(shape[3]), int(shape[2]))
        self.max_batch = 1 if self.dynamic else int(shape[0])  # `mgeo export --batch N`: N frames per forward
        self.precision = self.metadata.get('precision', 'unknown')
        self.device = f'cuda:{index} ({self.gpu_name})'
        self.probe_check: ProbeCheck | None = None
        if check_probe:
            self._verify(probe or probe_path(engine_path), engine_path)
        log.debug('tensorrt backend: %s, input %s, outputs %s', engine_path, self.input_size, self._outputs)

    def _pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = self._cuda('cudaMallocHost', nbytes)
        self._buffers.append(('cudaFreeHost', ptr))
        raw = (ctypes.c_char * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def _check_sidecar(self, engine_path: str, trt_version: str) -> dict:
        """Refuse early, with a clear reason, an engine whose recorded TensorRT version or GPU differ from here."""
        path = sidecar_path(engine_path)
        if not os.path.isfile(path):
            return {}
        with open(path) as f:
            meta = json.load(f)
        key = meta.get('key', {})
        problems = sidecar_problems(key, trt_version, self.gpu_name, self.compute_capability)
        if problems:
            raise BackendUnavailableError(f'tensorrt backend: {engine_path} was built for ' + ', '.join(problems)
                                          + '; rebuild it here with `mgeo build-engine`')
        flat = {k: str(v) for k, v in meta.get('onnx_metadata', {}).items()}
        flat['precision'] = str(key.get('precision', 'unknown'))
        return flat

    def _verify(self, probe_file: str, engine_path: str) -> None:
        if not os.path.isfile(probe_file):
            log.warning('tensorrt backend: %s has no probe (%s): its output is unverified; re-export with `mgeo '
                        'export` and rebuild to get one', engine_path, probe_file)
            return
        try:
            probe = load_probe(probe_file)
        except ProbeError as e:
            raise EngineProbeError(f'tensorrt backend: {e}') from e
        self.probe_check = check_backend(self, probe)
        if not self.probe_check.ok:
            raise EngineProbeError(probe_refusal(self._trt.__version__, self.gpu_name, self.probe_check, self.jetson),
                                   self.probe_check)
        log.info('tensorrt backend: %s reproduces its probe (%s)', engine_path, self.probe_check.summary())

    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        return self.forward_batch(image, num_tokens)[0]

    def forward_batch(self, images: np.ndarray, num_tokens: int) -> list[RawOutput]:
        """[B,3,h,w] in chunks of the engine's batch; a short chunk is padded with its last frame (outputs dropped)."""
        cuda, stream = self._cuda, self.stream
        h2d = self._cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        results: list[RawOutput] = []
        for start in range(0, images.shape[0], self.max_batch):
            chunk = images[start:start + self.max_batch]
            if self.dynamic and chunk.shape != self._shape:
                self._set_input_shape(tuple(chunk.shape))
            host_in = self._host[self._input_name]
            count = chunk.shape[0]
            host_in[:count] = chunk
            host_in[count:] = chunk[-1:]
            cuda('cudaMemcpyAsync', self._device_bufs[self._input_name], host_in.ctypes.data, host_in.nbytes, h2d,
                 stream)
            if not self.context.execute_async_v3(int(stream)):
                raise RuntimeError('tensorrt backend: execute_async_v3 failed')
            for name in self._outputs:
                if name in self._host:
                    out = self._host[name]
                    cuda('cudaMemcpyAsync', out.ctypes.data, self._device_bufs[name], out.nbytes, d2h, stream)
            cuda('cudaStreamSynchronize', stream)
            out = {k: v.astype(np.float32) for k, v in self._host.items() if k in OUTPUT_NAMES}
            results += split_raw_outputs(out['points'], out['mask'], out['metric_scale'], out.get('normal'), count)
        return results

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        """A dynamic engine: run the next frames at `shape`; the host buffers become views of that size."""
        lo, _, hi = (tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(self._input_name, 0))
        if any(d < a or d > b for d, a, b in zip(shape, lo, hi, strict=True)):
            raise BackendUnavailableError(
                f'tensorrt backend: network input {shape} is outside the engine\'s profile {lo} .. {hi}; rebuild it '
                'for these cameras (`mgeo build-engine MODEL.onnx -o MODEL.engine --camera-sizes WxH,...`) and '
                'pass that engine as the model')
        self.context.set_input_shape(self._input_name, shape)
        for name in self._host:
            now = shape if name == self._input_name else tuple(int(d) for d in self.context.get_tensor_shape(name))
            self._host[name] = self._flat[name][:int(np.prod(now))].reshape(now)
        self._shape = shape

    def synchronize(self) -> None:
        self._cuda('cudaStreamSynchronize', self.stream)

    def peak_device_memory_bytes(self) -> int | None:
        activations = int(getattr(self.engine, 'device_memory_size_v2', 0) or
                          getattr(self.engine, 'device_memory_size', 0))
        io = sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in self._host.values())
        return activations + io

    def __del__(self) -> None:
        cuda = getattr(self, '_cuda', None)
        for fn, ptr in reversed(getattr(self, '_buffers', [])):
            try:
                getattr(cuda.rt, fn)(ptr)
            except Exception:  # interpreter shutdown: nothing left to free into
                pass
