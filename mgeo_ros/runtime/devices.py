"""What accelerators this machine has, asked without importing heavy packages when possible."""
from __future__ import annotations

import functools
import glob
import importlib
import os
import sys


@functools.lru_cache(maxsize=1)
def has_nvidia_gpu() -> bool:
    """True when an NVIDIA GPU is usable: torch says so (only if already imported: ONNX Runtime / TensorRT runs must
    not pay for importing torch), or the driver's device nodes exist (desktop /dev/nvidia0, Jetson nvhost)."""
    torch = sys.modules.get('torch')
    if torch is not None:
        if torch.cuda.is_available():
            return True
        if torch.version.cuda is not None:  # a CUDA build of torch that sees no device is authoritative
            return False
    return bool(glob.glob('/dev/nvidia[0-9]*')) or os.path.exists('/dev/nvhost-ctrl-gpu')


def torch_cuda_available() -> bool:
    """True when PyTorch is installed with CUDA and sees a device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def import_tensorrt(module_name: str | None = None):
    """Import TensorRT (`tensorrt`) or a flavour of it (e.g. `tensorrt_rtx_bindings`); ImportError when absent."""
    return importlib.import_module(module_name or os.environ.get('MGEO_TENSORRT_MODULE', 'tensorrt'))


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except Exception:
        return False
    return True
