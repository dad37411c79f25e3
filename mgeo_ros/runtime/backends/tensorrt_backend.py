"""TensorRT backend (TensorRT >= 10 Python API): named I/O tensors, `set_input_shape`, `set_tensor_address`,
`execute_async_v3` on a torch CUDA stream; device buffers are torch CUDA tensors (no pycuda)."""
from __future__ import annotations

import json
import os

import numpy as np

from mgeo_ros.errors import BackendUnavailableError
from mgeo_ros.runtime.backends.base import Backend, RawOutput, as_raw_output, log
from mgeo_ros.runtime.devices import import_tensorrt
from mgeo_ros.runtime.engine_cache import sidecar_path


def _torch_dtype(trt, torch, dt):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    for name, tdt in (('INT64', torch.int64), ('BF16', torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if dt not in table:
        raise BackendUnavailableError(f'tensorrt backend: unsupported tensor type {dt}')
    return table[dt]


class TensorRTBackend(Backend):
    """Runs a serialized engine built for this GPU and TensorRT version (`mgeo build-engine`)."""

    name = 'tensorrt'

    def __init__(self, engine_path: str, device: str | None = None, trt_module: str | None = None) -> None:
        try:
            trt = import_tensorrt(trt_module)
        except Exception as e:
            raise BackendUnavailableError(f'tensorrt backend: TensorRT Python package is not installed ({e}); on '
                                          'Jetson use JetPack\'s python3-libnvinfer, on desktop pip install tensorrt '
                                          'from NVIDIA\'s index') from e
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailableError('tensorrt backend: needs PyTorch with CUDA for device buffers') from e
        if not torch.cuda.is_available():
            raise BackendUnavailableError('tensorrt backend: no NVIDIA GPU visible to CUDA (torch.cuda.is_available() '
                                          'is False)')
        if not os.path.isfile(engine_path):
            raise BackendUnavailableError(f'tensorrt backend: no engine file at {engine_path}')
        self._trt, self._torch = trt, torch
        self._device = torch.device(device or 'cuda')
        if self._device.index is None:
            self._device = torch.device('cuda', torch.cuda.current_device())
        torch.cuda.set_device(self._device)
        self.metadata = self._check_sidecar(engine_path, trt, torch)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with open(engine_path, 'rb') as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise BackendUnavailableError(f'tensorrt backend: TensorRT {trt.__version__} could not deserialize '
                                          f'{engine_path}; it was built for another GPU or TensorRT version — rebuild '
                                          'it on this machine with `mgeo build-engine`')
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self._device)
        self._inputs: dict[str, object] = {}
        self._outputs: dict[str, object] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(name))
            shape = tuple(self.engine.get_tensor_shape(name))
            if mode == trt.TensorIOMode.INPUT:
                if any(d < 0 for d in shape):
                    prof = self.engine.get_tensor_profile_shape(name, 0)
                    shape = tuple(prof[1])  # the 'opt' shape of the first profile
                self.context.set_input_shape(name, shape)
                self._inputs[name] = torch.empty(shape, dtype=dtype, device=self._device)
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(name))
            shape = tuple(self.context.get_tensor_shape(name))
            self._outputs[name] = torch.empty(shape, dtype=dtype, device=self._device)
        for name, t in {**self._inputs, **self._outputs}.items():
            self.context.set_tensor_address(name, t.data_ptr())
        if len(self._inputs) != 1:
            raise BackendUnavailableError(f'tensorrt backend: expected one image input, got {list(self._inputs)}')
        self._input_name, inp = next(iter(self._inputs.items()))
        self.input_size = (int(inp.shape[3]), int(inp.shape[2]))
        self._host_in = torch.empty(tuple(inp.shape), dtype=torch.float32).pin_memory()
        self.precision = self.metadata.get('precision', 'unknown')
        self.device = f'{self._device} ({torch.cuda.get_device_name(self._device)})'
        log.debug('tensorrt backend: %s, input %s, outputs %s', engine_path, self.input_size, list(self._outputs))

    @staticmethod
    def _check_sidecar(engine_path: str, trt, torch) -> dict:
        """Refuse early, with a clear reason, an engine whose recorded TensorRT version or GPU differ from here."""
        path = sidecar_path(engine_path)
        if not os.path.isfile(path):
            return {}
        with open(path) as f:
            meta = json.load(f)
        key = meta.get('key', {})
        here_gpu = torch.cuda.get_device_name()
        cc = '{}.{}'.format(*torch.cuda.get_device_capability())
        problems = []
        if key.get('tensorrt_version') not in (None, trt.__version__):
            problems.append(f"TensorRT {key['tensorrt_version']} (here {trt.__version__})")
        if key.get('gpu_name') not in (None, here_gpu):
            problems.append(f"GPU {key['gpu_name']!r} (here {here_gpu!r})")
        if key.get('compute_capability') not in (None, cc):
            problems.append(f"compute capability {key['compute_capability']} (here {cc})")
        if problems:
            raise BackendUnavailableError(f'tensorrt backend: {engine_path} was built for ' + ', '.join(problems)
                                          + '; rebuild it here with `mgeo build-engine`')
        flat = {k: str(v) for k, v in meta.get('onnx_metadata', {}).items()}
        flat['precision'] = str(key.get('precision', 'unknown'))
        return flat

    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        torch = self._torch
        inp = self._inputs[self._input_name]
        self._host_in.numpy()[...] = image
        with torch.cuda.stream(self.stream):
            inp.copy_(self._host_in, non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError('tensorrt backend: execute_async_v3 failed')
            host = {k: v.float().to('cpu', non_blocking=False) for k, v in self._outputs.items()}
        self.stream.synchronize()
        out = {k: v.numpy() for k, v in host.items()}
        return as_raw_output(out['points'], out['mask'], out['metric_scale'], out.get('normal'))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def peak_device_memory_bytes(self) -> int | None:
        return int(self._torch.cuda.max_memory_allocated(self._device))
