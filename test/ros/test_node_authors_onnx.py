"""The node pointed at a file in the MoGe authors' ONNX layout (dynamic size, num_tokens input) runs it as it is on
ONNX Runtime, in a process where torch cannot be imported, and logs what it took the file for. Real rclpy."""
from __future__ import annotations

import os

import numpy as np
import pytest
import runtime_models
from node_harness import NodeHarness, no_torch_env, start_node, stop_node

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]


@pytest.fixture(scope='module')
def authors_onnx(tmp_path_factory):
    """Exported here with torch, or read from MGEO_RUNTIME_MODELS in the torch-free Jazzy job."""
    return runtime_models.authors_onnx(tmp_path_factory.mktemp('authors_onnx'))


def test_predictor_runs_authors_file_at_two_sizes(authors_onnx):
    from mgeo_ros.runtime import Predictor
    from mgeo_ros.runtime.model_info import model_line

    pred = Predictor(str(authors_onnx), backend='onnxruntime', num_tokens=60)
    assert pred.backend.layout.dynamic and pred.backend.layout.has_normal
    for w, h in ((160, 120), (120, 160)):
        rgb = np.random.default_rng(w).integers(0, 255, (h, w, 3), dtype=np.uint8)
        p = pred.predict(rgb)
        assert p.depth.shape == (h, w) and p.normals.shape == (h, w, 3)
    assert "authors' ONNX layout" in model_line(authors_onnx, pred.backend)


def test_node_runs_authors_file_without_torch(authors_onnx, tmp_path):
    from mgeo_ros.ros import convert

    ns = f'/nao{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(authors_onnx), 'backend': 'onnxruntime', 'num_tokens': 60},
                      env=no_torch_env(tmp_path), log_path=log)
    harness = NodeHarness(ns, 'authors_harness')
    try:
        harness.wait_ready(proc, timeout=60)
        w, h = 160, 120
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x * 255 // w, y * 255 // h, (x ^ y) & 255], -1).astype(np.uint8)
        key = (5000, 1)
        harness.publish(rgb, key, frame_id='cam_a')
        out = harness.wait_outputs(key)
        depth = convert.image_to_numpy(out['depth/image'])
        assert depth.shape == (h, w) and np.isfinite(depth).any()
        assert proc.poll() is None
    finally:
        harness.close()
        code = stop_node(proc)
        text = log.read_text()
    assert code == 0, text[-2000:]
    assert 'torch is blocked' not in text
    assert "MoGe authors' ONNX layout (MoGe-2)" in text and 'size dynamic' in text, text[-2000:]
