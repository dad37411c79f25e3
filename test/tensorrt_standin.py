"""Test helper: stand-ins for TensorRT and cuda-python's runtime, for the CPU machine where neither can run.

The "device" is host memory (ctypes buffers), copies are memmove, and the "engine" is ONNX Runtime on the .onnx whose
path is the engine file's content. This drives every line of the TensorRT backend that does not need a GPU: the I/O
table, buffer allocation, pinned views, asynchronous copies, the readback of only what postprocess needs, and the
load-time probe check. The real thing runs in test_runtime_tensorrt.py where TensorRT and a GPU exist.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types

import numpy as np


class _Err(enum.IntEnum):
    cudaSuccess = 0


class FakeCudart(types.SimpleNamespace):
    """The calls `tensorrt_backend._Cuda` makes, with cuda-python's (error, value) return convention."""

    cudaMemcpyKind = enum.IntEnum('cudaMemcpyKind', {'cudaMemcpyHostToDevice': 1, 'cudaMemcpyDeviceToHost': 2})

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[int, ctypes.Array] = {}
        self.copies: list[tuple[int, int]] = []  # (bytes, stream) per memcpy

    def _alloc(self, n):
        buf = (ctypes.c_char * int(n))()
        self.blocks[ctypes.addressof(buf)] = buf
        return _Err.cudaSuccess, ctypes.addressof(buf)

    def cudaMalloc(self, n):
        return self._alloc(n)

    def cudaMallocHost(self, n):
        return self._alloc(n)

    def cudaFree(self, p):
        self.blocks.pop(int(p), None)
        return (_Err.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaSetDevice(self, i):
        return (_Err.cudaSuccess,)

    def cudaGetDeviceProperties(self, i):
        return _Err.cudaSuccess, types.SimpleNamespace(name=b'Stand-in GPU', major=8, minor=6, integrated=0)

    def cudaStreamCreate(self):
        return _Err.cudaSuccess, 7

    def cudaStreamSynchronize(self, s):
        return (_Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(int(dst), int(src), int(n))
        self.copies.append((int(n), int(stream)))
        return (_Err.cudaSuccess,)

    def cudaGetErrorString(self, e):
        return _Err.cudaSuccess, b'stand-in error'


AUX_SHAPE = (1, 5)  # an extra engine output that postprocess does not read (must stay on the device)


def make_fake_tensorrt(version: str = '10.16.0', scale_points: float = 1.0, name: str = 'fake_tensorrt'):
    """A module registered as `name` whose engines run ONNX Runtime, plus an extra output `aux`; `scale_points`
    corrupts the points output (an engine that computes something else)."""
    import onnxruntime as ort

    mod = types.ModuleType(name)
    mod.__version__ = version
    mod.DataType = enum.Enum('DataType', 'FLOAT HALF INT32 INT8 BOOL INT64')
    mod.TensorIOMode = enum.Enum('TensorIOMode', 'INPUT OUTPUT')

    class Logger:
        WARNING = 2

        def __init__(self, level=None) -> None:
            pass

    class Context:
        def __init__(self, engine) -> None:
            self.engine, self.addresses, self.shapes = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def get_tensor_shape(self, name):
            eng = self.engine
            if eng.profile is None or name in (eng.names[0], 'aux') or eng.names[0] not in self.shapes:
                return eng.shapes[name]
            b, _, h, w = self.shapes[eng.names[0]]  # a dynamic engine: outputs at the input size
            return {'points': (b, h, w, 3), 'normal': (b, h, w, 3), 'mask': (b, h, w), 'metric_scale': (b,)}[name]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)

        def execute_async_v3(self, stream):
            eng = self.engine
            inp = eng.names[0]
            shape = self.shapes.get(inp, eng.shapes[inp])
            n = int(np.prod(shape))
            x = np.frombuffer((ctypes.c_float * n).from_address(self.addresses[inp]), np.float32)
            feed = {inp: x.reshape(shape).copy()}
            if eng.num_tokens is not None:  # fixed at build time, as `mgeo build-engine` does
                feed['num_tokens'] = np.array(eng.num_tokens, dtype=np.int64)
            outs = eng.session.run(None, feed)
            outs = [*outs, np.zeros(AUX_SHAPE, np.float32)]
            for name, value in zip(eng.names[1:], outs, strict=True):
                value = np.ascontiguousarray(value * (scale_points if name == 'points' else 1.0), np.float32)
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    class Engine:
        def __init__(self, content: str) -> None:
            # the content: an .onnx path (a fixed engine), or JSON {onnx, num_tokens, profile} for an engine built
            # from a dynamic ONNX (num_tokens fixed, one optimization profile [min, opt, max] of input shapes)
            spec = json.loads(content) if content.startswith('{') else {'onnx': content}
            self.num_tokens, self.profile = spec.get('num_tokens'), spec.get('profile')
            self.session = ort.InferenceSession(spec['onnx'], providers=['CPUExecutionProvider'])
            ios = [(i.name, i.shape) for i in self.session.get_inputs() if i.name != 'num_tokens'] + \
                  [(o.name, o.shape) for o in self.session.get_outputs()] + [('aux', AUX_SHAPE)]
            self.names = [n for n, _ in ios]
            self.shapes = {n: tuple(d if isinstance(d, int) else -1 for d in s) for n, s in ios}
            self.num_io_tensors = len(ios)
            self.device_memory_size = 1 << 20

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return mod.TensorIOMode.INPUT if name == self.names[0] else mod.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def get_tensor_profile_shape(self, name, index):
            return [tuple(s) for s in self.profile]

        def get_tensor_dtype(self, name):
            return mod.DataType.FLOAT

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            return Engine(data.decode())

    mod.Logger, mod.Runtime = Logger, Runtime
    sys.modules[name] = mod
    return mod
