"""The camera session: a model loaded once and shared by the cameras' sessions, each with its own per-pixel
placement; a scale from outside the network replacing the model's before the per-pixel work; and the numpy kernel
and the post graph giving the same outputs through the session."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import runtime_models

from mgeo_ros.runtime import post_graph
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.camera_session import CameraSession, load_model

LOG = logging.getLogger('test_camera_session')
CFG = {'model': '', 'backend': 'onnxruntime', 'build_engine': False, 'precision': 'auto', 'num_tokens': 300,
       'mask_threshold': 0.5, 'intra_op_threads': 1, 'engine_fallback': False, 'max_batch': 0,
       'scale_smoothing': 0.0, 'scale_reset_ratio': 1.5, 'max_depth': 0.0, 'flying_pixel_max_jump': 0.05}
WANTED = {'depth', 'valid', 'confidence', 'normals', 'points', 'points_normals'}


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    return runtime_models.tiny_onnx(tmp_path_factory.mktemp('session_onnx'))


def _rgb() -> np.ndarray:
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([x % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def _plane_raw() -> RawOutput:
    """A tilted plane with a box in front of it on a 40x30 network grid (the tiny untrained model's own depth is not
    positive anywhere, so the per-pixel work is checked on a known scene)."""
    u = np.linspace(-0.6, 0.6, 40, dtype=np.float32)[None, :]
    v = np.linspace(-0.45, 0.45, 30, dtype=np.float32)[:, None]
    z = 1.5 + 0.8 * v + 0.3 * u
    z[10:20, 12:25] -= 0.6
    points = np.stack([u * z, v * z, z - 0.2], axis=-1).astype(np.float32)
    return RawOutput(points, np.full((30, 40), 0.9, np.float32), 1.3)


def test_cameras_share_one_backend_and_each_gets_its_own_placement(tiny_onnx, monkeypatch):
    monkeypatch.setattr(post_graph, 'post_graph_for', lambda backend, cache_dir: post_graph.PostGraph('cpu'))
    model = load_model({**CFG, 'model': str(tiny_onnx)}, 3, LOG)
    try:
        sessions = [CameraSession(CFG, LOG) for _ in range(3)]
        for i, session in enumerate(sessions):
            session.attach(model, f'cam{i}')
        assert len({id(s.stage.post) for s in sessions}) == 3
        assert all(isinstance(s.stage.post, post_graph.PostGraph) for s in sessions)
        assert all(s.predictor.backend is model.predictor.backend for s in sessions)
        raw = sessions[1].forward(_rgb())
        assert 'batch_wait' in raw.timings_ms  # through the shared queue
        sessions[1].detach()
        assert sessions[1].predictor is None and sessions[1].stage.post is None
    finally:
        model.close()


def test_the_graph_and_numpy_give_the_same_outputs_through_the_session(tiny_onnx):
    model = load_model({**CFG, 'model': str(tiny_onnx)}, 1, LOG)
    numpy_session, graph_session = CameraSession(CFG, LOG), CameraSession(CFG, LOG)
    numpy_session.attach(model)
    graph_session.attach(model)
    graph_session.stage.post = post_graph.PostGraph('cpu')
    raw = _plane_raw()
    want = numpy_session.outputs(raw, (160, 120), None, WANTED, CFG)
    got = graph_session.outputs(raw, (160, 120), None, WANTED, CFG)
    np.testing.assert_array_equal(got.valid, want.valid)
    assert want.valid.mean() > 0.5 and not want.valid.all()  # the jump test removed the box's edges
    for name in ('depth', 'confidence', 'points'):
        # float32 sums in another order (ONNX Runtime's kernels vs numpy/OpenCV)
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_a_scale_from_outside_the_network_replaces_the_models(tiny_onnx):
    model = load_model({**CFG, 'model': str(tiny_onnx)}, 1, LOG)
    session = CameraSession(CFG, LOG)
    session.attach(model)
    raw = _plane_raw()
    own = session.outputs(raw, (160, 120), None, {'depth'}, CFG).depth.copy()
    asked = []
    session.scale_source = lambda stamp, raw, rec: asked.append(stamp) or 2.0 * rec.metric_scale
    doubled = session.outputs(raw, (160, 120), None, {'depth'}, CFG, stamp=12.5)
    assert asked == [12.5]
    assert doubled.scale.raw == pytest.approx(2.0 * raw.metric_scale)
    np.testing.assert_array_equal(np.isfinite(doubled.depth), np.isfinite(own))  # relative tests: same pixels
    valid = np.isfinite(own)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(doubled.depth[valid], 2.0 * own[valid], rtol=1e-6)  # float32 products in order
    session.scale_source = lambda stamp, raw, rec: None  # no fit for this frame: the model's scale
    np.testing.assert_array_equal(session.outputs(raw, (160, 120), None, {'depth'}, CFG).depth, own)
