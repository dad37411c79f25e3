"""What accelerators this machine has, asked without importing heavy packages when possible."""
from __future__ import annotations

import functools
import glob
import importlib
import os
import sys

from mgeo_ros.errors import MgeoError

MIN_TENSORRT = (10, 0)


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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_intra_op_threads(cores: int | None = None) -> int:
    """Intra-op threads for one inference when none are asked for: every usable core but one, at least 1.

    The spare core is for the executor thread (image callbacks), the DDS threads and the node's own numpy work. An
    intra-op pool as wide as the machine loses a thread to them at every operator, and each operator then waits at its
    barrier for the preempted thread, so a forward can take many times longer than with one thread fewer (the live
    bench, docs/benchmarks.md, shows it on a busy machine).
    """
    cores = usable_cores() if cores is None else int(cores)
    return max(1, cores - 1)


def resolve_threads(threads: int | None) -> int | None:
    """The `threads` argument of a backend: None keeps the library's own default, 0 means
    `default_intra_op_threads()`, n > 0 is n."""
    if threads is None:
        return None
    threads = int(threads)
    if threads < 0:
        raise ValueError(f'threads must be >= 0 (0 = auto), got {threads}')
    return default_intra_op_threads() if threads == 0 else threads


def set_opencv_threads(threads: int) -> None:
    """OpenCV's worker threads for the per-frame image work (process-wide): n >= 1 is n (1: the calling thread
    only), 0 is OpenCV's default pool. A pool as wide as the machine spins on every core after each resize or
    decode, which costs a node whose stages already run side by side more CPU than it saves (docs/sizing.md)."""
    import cv2

    threads = int(threads)
    if threads < 0:
        raise ValueError(f'opencv_threads must be >= 0 (0 = OpenCV\'s default), got {threads}')
    cv2.setNumThreads(-1 if threads == 0 else threads)


def import_tensorrt(module_name: str | None = None):
    """Import TensorRT (`tensorrt`) or a flavour of it (e.g. `tensorrt_rtx_bindings`); ImportError when absent."""
    return importlib.import_module(module_name or os.environ.get('MGEO_TENSORRT_MODULE', 'tensorrt'))


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except Exception:
        return False
    return True


def tensorrt_flavour(trt) -> tuple[str, tuple[int, int]]:
    """('tensorrt' | 'tensorrt_rtx', (major, minor)) of a TensorRT module."""
    name = trt.__name__.split('.')[0]
    flavour = 'tensorrt_rtx' if 'rtx' in name else 'tensorrt'
    try:
        major, minor = (int(v) for v in str(trt.__version__).split('.')[:2])
    except ValueError:
        major, minor = 0, 0
    return flavour, (major, minor)


def check_tensorrt_version(trt) -> None:
    """Refuse TensorRT < 10: no strongly typed ONNX path we rely on, no named-tensor API (execute_async_v3)."""
    flavour, version = tensorrt_flavour(trt)
    if flavour == 'tensorrt' and version < MIN_TENSORRT:
        raise MgeoError(f'TensorRT {trt.__version__} is too old: mgeo_ros needs TensorRT >= 10 (strongly typed '
                        'networks, execute_async_v3). On Jetson use JetPack 6 (TensorRT 10.3) or 7.2 (TensorRT '
                        '11), or run the .onnx with backend: onnxruntime')


def sidecar_path(engine_path: str) -> str:
    """The JSON file next to an engine that records how (and for what) it was built."""
    return engine_path + '.json'


def cuda_device(index: int = 0) -> tuple[str, str] | None:
    """(name, compute capability 'X.Y') of a CUDA device from cuda-python, or from torch when torch is already
    imported; None when neither sees one. Importing torch here would cost the TensorRT node seconds and GBs."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        cudart = None
    if cudart is not None:
        try:
            err, props = cudart.cudaGetDeviceProperties(index)
            if int(err) == 0:
                name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
                return name.rstrip('\x00'), f'{props.major}.{props.minor}'
        except Exception:  # no driver/library (cuda-python raises rather than returning an error here)
            pass
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(index), '{}.{}'.format(*torch.cuda.get_device_capability(index))
    return None
