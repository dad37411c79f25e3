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
       'mask_threshold': 0.5, 'intra_op_threads': 1, 'opencv_threads': 1, 'engine_fallback': False, 'max_batch': 0,
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


def test_anchors_give_the_scale_and_a_change_of_source_restarts_the_smoothing(caplog):
    """`use_anchors`: a registered depth at twice the model's depth doubles the published depth; anchors that stop
    (stale) or carry no valid pixel leave the model's scale; each change of source restarts the smoothing, and each
    source's change between usable and not is logged once."""
    from mgeo_ros.geometry.intrinsics import Intrinsics
    from mgeo_ros.runtime.scale_anchors import pixel_anchors_from_depth
    from mgeo_ros.runtime.scale_source import AnchorSettings, ScaleAnchoring

    cfg = {**CFG, 'scale_smoothing': 0.5, 'scale_reset_ratio': 100.0, 'flying_pixel_max_jump': 0.0}
    session = CameraSession(cfg, LOG)
    anchoring = ScaleAnchoring(AnchorSettings(('depth', 'model'), min_points=20, max_age=0.05))
    session.use_anchors(anchoring)
    intr = Intrinsics(fx=100.0, fy=100.0, cx=79.5, cy=59.5, width=160, height=120)
    raw = _plane_raw()

    def depth_at(stamp):
        return session.outputs(raw, (160, 120), intr, {'depth'}, cfg, stamp=stamp).depth.copy()

    with caplog.at_level(logging.INFO, logger=LOG.name):
        model = depth_at(1.0)
        assert anchoring.last.source == 'model' and anchoring.last.fit.reason == ''
        anchoring.add('depth', pixel_anchors_from_depth(np.where(np.isfinite(model), 2.0 * model, np.nan), 2.0))
        anchored = depth_at(2.0)
        assert anchoring.last.source == 'depth' and anchoring.last.changed
        ok = np.isfinite(model) & np.isfinite(anchored)
        # anchors from the upsampled 160x120 depth, each matched to the 40x30 grid's nearest pixel: up to 2 px off on a
        # tilted plane, offsets on both sides, so the fit's centre stays within 1 % (the box's edges are cut)
        assert np.median(anchored[ok] / model[ok]) == pytest.approx(2.0, rel=0.01)
        assert session.scale.reset_count == 1  # restarted from the anchored scale, not smoothed from the model's
        again = depth_at(3.0)  # stale anchors (1 s old): the model's scale again, restarted again
        assert anchoring.last.source == 'model' and session.scale.reset_count == 2
        np.testing.assert_allclose(again[ok], model[ok], rtol=1e-6)  # float32 products in another order
        anchoring.add('depth', pixel_anchors_from_depth(np.full((30, 40), np.nan, np.float32), 4.0))
        depth_at(4.0)
        assert anchoring.chooser.reasons['depth'].startswith('no valid depth')
        assert session.outputs(raw, (160, 120), intr, {'depth'}, cfg, stamp=None).scale.raw == pytest.approx(1.3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count('scale source depth: usable') == 1
    assert sum(m.startswith('scale source depth: not usable') for m in messages) == 2  # at start, then stale


def test_the_ground_source_gets_the_frames_points():
    """`ground` asks for the predicted points (made only then): a tilted plane and a box are no level floor, so the
    plane search refuses them with its reason and the model's scale stays."""
    from mgeo_ros.geometry.intrinsics import Intrinsics
    from mgeo_ros.runtime.scale_source import AnchorSettings, ScaleAnchoring

    cfg = {**CFG, 'flying_pixel_max_jump': 0.0}
    session = CameraSession(cfg, LOG)
    anchoring = ScaleAnchoring(AnchorSettings(('ground', 'model'), camera_height=1.0, ground_max_tilt=5.0))
    session.use_anchors(anchoring)
    intr = Intrinsics(fx=100.0, fy=100.0, cx=79.5, cy=59.5, width=160, height=120)
    res = session.outputs(_plane_raw(), (160, 120), intr, {'depth'}, cfg, stamp=1.0)
    assert anchoring.last.source == 'model'
    reason = anchoring.chooser.reasons['ground']
    assert reason.startswith('plane not found'), reason
    assert res.scale.raw == pytest.approx(1.3)


def test_opencv_threads_reach_opencv(tiny_onnx):
    import cv2

    cv2.setNumThreads(-1)
    default = cv2.getNumThreads()   # OpenCV's own pool (earlier loads in this process set 1)
    try:
        for asked, expected in ((1, 1), (2, 2), (0, default)):
            cv2.setNumThreads(expected + 3)   # something else first: the load must set it
            load_model({**CFG, 'model': str(tiny_onnx), 'opencv_threads': asked}, 1, LOG).close()
            assert cv2.getNumThreads() == expected, asked
    finally:
        cv2.setNumThreads(-1)
