"""The post graph where the network runs: built into a TensorRT engine ahead of time (TensorRT-RTX builder, here),
run on ONNX Runtime's CUDA provider and as a TensorRT engine on an NVIDIA GPU (skipped without one), equal to the
numpy path; and which path a backend gets."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from test_runtime_frame_stage import FRAME, GRAPH_CASES, NORMALS_ATOL, RTOL, _stage, raw_frame

from mgeo_ros.runtime.devices import has_nvidia_gpu, tensorrt_available
from mgeo_ros.runtime.frame_stage import STAGE_ARRAYS
from mgeo_ros.runtime.post_graph import GraphShape, build_post_engine, post_graph_for

RTX = 'tensorrt_rtx_bindings'


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return 'CUDAExecutionProvider' in ort.get_available_providers()


def _assert_equal_to_numpy(post, case: str) -> None:
    settings, head, intr = GRAPH_CASES[case]
    numpy_stage, device_stage = _stage(dict(settings)), _stage(dict(settings))
    device_stage.post = post
    for i in range(3):
        want = numpy_stage.run(raw_frame(i, head), FRAME, intr, STAGE_ARRAYS)
        got = device_stage.run(raw_frame(i, head), FRAME, intr, STAGE_ARRAYS)
        np.testing.assert_array_equal(got.valid, want.valid)
        for name in ('depth', 'confidence', 'points'):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=RTOL, atol=1e-6,
                                       equal_nan=True, err_msg=name)
        np.testing.assert_allclose(got.normals, want.normals, atol=NORMALS_ATOL, equal_nan=True)


@pytest.mark.skipif(importlib.util.find_spec(RTX) is None, reason=f'{RTX} (the TensorRT-RTX builder) not installed')
@pytest.mark.parametrize('head', [False, True])
def test_post_graph_builds_into_a_tensorrt_engine_ahead_of_time(tmp_path, head):
    """The TensorRT-RTX builder parses the post graph and builds an engine for another GPU (Ada, SM89) here."""
    shape = GraphShape((21, 16), FRAME, head, 1, True, True, True, 2)
    path = build_post_engine(shape, str(tmp_path / 'post.engine'), trt_module=RTX, compute_capability='SM89')
    assert os.path.getsize(path) > 10_000 and (tmp_path / 'post.onnx').is_file()


@pytest.mark.skipif(not (has_nvidia_gpu() and importlib.util.find_spec('onnxruntime') and _cuda_provider()),
                    reason='needs an NVIDIA GPU and onnxruntime-gpu (CUDAExecutionProvider)')
@pytest.mark.parametrize('case', sorted(GRAPH_CASES))
def test_post_graph_on_the_cuda_provider_gives_the_numpy_outputs(case):
    from mgeo_ros.runtime.post_graph import PostGraph

    post = PostGraph('cuda')
    _assert_equal_to_numpy(post, case)
    assert post.providers[0] == 'CUDAExecutionProvider'


@pytest.mark.skipif(not (has_nvidia_gpu() and tensorrt_available() and importlib.util.find_spec('cuda')),
                    reason='needs an NVIDIA GPU, TensorRT and cuda-python')
@pytest.mark.parametrize('case', sorted(GRAPH_CASES))
def test_post_graph_as_a_tensorrt_engine_gives_the_numpy_outputs(case, tmp_path):
    from mgeo_ros.runtime.post_graph import TensorRTPostGraph

    _assert_equal_to_numpy(TensorRTPostGraph(str(tmp_path)), case)


def test_a_cpu_backend_keeps_the_numpy_path():
    """On the CPU numpy/OpenCV measured faster than ONNX Runtime running the graph: no post graph."""
    from mgeo_ros.bench.replay import ReplayBackend

    backend = ReplayBackend([raw_frame(0, False)])
    backend.device = 'cpu'
    assert post_graph_for(backend, 'unused') is None
