"""TensorRT engine building and caching for `mgeo build-engine` (implementation in `mgeo_ros.runtime.engine_cache`
and `mgeo_ros.runtime.engine_build`, where the Predictor can also build an engine from an .onnx on first start
without importing this layer)."""
from mgeo_ros.runtime.engine_build import parse_compute_capability, trt_build
from mgeo_ros.runtime.engine_cache import (
    PRECISIONS,
    EngineBuild,
    EngineCacheError,
    PrecisionMismatchError,
    build_engine,
    engine_key,
    file_sha256,
    key_differences,
    local_gpu,
    onnx_input_shape,
    onnx_metadata,
    onnx_precision,
    read_sidecar,
    sidecar_path,
)

__all__ = ['PRECISIONS', 'EngineBuild', 'EngineCacheError', 'PrecisionMismatchError', 'build_engine', 'engine_key',
           'file_sha256', 'key_differences', 'local_gpu', 'onnx_input_shape', 'onnx_metadata', 'onnx_precision',
           'parse_compute_capability', 'read_sidecar', 'sidecar_path', 'trt_build']
