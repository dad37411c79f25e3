"""Runtime: preprocessing, postprocessing (focal/shift, metric depth, upsampling) and the torch Predictor."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgeo_ros.errors import BackendUnavailableError, BadInputError
from mgeo_ros.geometry import Intrinsics, normalized_view_plane_uv
from mgeo_ros.runtime import Predictor
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.frame_stage import postprocess
from mgeo_ros.runtime.postprocess import intrinsics_from_focal, upsample_valid
from mgeo_ros.runtime.prediction import Prediction
from mgeo_ros.runtime.predictor import choose_backend, create_backend
from mgeo_ros.runtime.preprocess import Preprocessor, grid_tokens, network_size, token_grid


@pytest.fixture(scope='module')
def tiny_model():
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    return build_model(preset('tiny')).eval()


def _frame(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


# ---- preprocessing ---------------------------------------------------------------------------------------------
def test_token_grid_matches_moge():
    assert token_grid(640, 480, 1200) == (40, 30)
    assert token_grid(640, 480, 3600) == (69, 52)  # MoGe rounds (floor would give 51 rows)
    assert network_size(640, 480, 1200) == (560, 420)
    bw, bh = token_grid(1280, 400, 1000)
    assert grid_tokens(14 * bw, 14 * bh) == bw * bh
    # feeding the grid's own token count back reproduces exactly that grid (no rounding drift)
    assert token_grid(14 * bw, 14 * bh, bw * bh) == (bw, bh)


def test_preprocess_normalizes_and_reuses_buffer():
    pre = Preprocessor(num_tokens=100)
    rgb = np.full((60, 80, 3), 255, np.uint8)
    rgb[..., 1] = 0
    a = pre(rgb)
    assert a.dtype == np.float32 and a.shape == (1, 3) + network_size(80, 60, 100)[::-1]
    assert np.allclose(a[0, 0], 1.0) and np.allclose(a[0, 1], 0.0)
    b = pre(_frame(80, 60))
    assert b is a  # same buffer for the same frame size
    assert 0.0 <= b.min() and b.max() <= 1.0
    fixed = Preprocessor(input_size=(56, 28))
    assert fixed(rgb).shape == (1, 3, 28, 56)


@pytest.mark.parametrize('bad', [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((10, 10, 4), np.uint8), np.zeros((1, 10, 3), np.uint8)])
def test_preprocess_rejects_bad_frames(bad):
    with pytest.raises(BadInputError):
        Preprocessor()(bad)


# ---- postprocessing --------------------------------------------------------------------------------------------
def _affine_raw(w: int, h: int, focal: float, shift: float, scale: float, hole: bool = True) -> tuple:
    """A raw network output for a slanted plane seen by a camera of `focal` (half-diagonals)."""
    uv = normalized_view_plane_uv(w, h).astype(np.float64)
    depth = 2.0 + 1.5 * (uv[..., 1] + 0.6) + 0.5 * uv[..., 0]  # metres, positive everywhere
    xyz = np.concatenate([uv / focal * depth[..., None], depth[..., None]], -1)
    raw_pts = xyz / scale
    raw_pts[..., 2] -= shift
    prob = np.full((h, w), 0.9, np.float32)
    if hole:
        prob[h // 3: h // 2, w // 4: w // 2] = 0.1
    return RawOutput(raw_pts.astype(np.float32), prob, scale, None), depth


def test_postprocess_recovers_focal_shift_and_metric_depth():
    raw, depth = _affine_raw(84, 56, focal=1.3, shift=0.3, scale=2.5)
    out = postprocess(raw, (84, 56))
    points = Prediction(**out).points  # unprojected on first use
    assert out['intrinsics_recovered']
    truth = intrinsics_from_focal(1.3, 84, 56)
    assert out['intrinsics'].fx == pytest.approx(truth.fx, rel=1e-2)
    assert out['shift'] == pytest.approx(0.3, abs=1e-2)
    assert out['metric_scale'] == pytest.approx(2.5)
    valid = out['mask']
    assert not valid[20:27, 25:41].any() and valid.mean() > 0.8
    assert np.isnan(out['depth'][~valid]).all() and np.isfinite(out['depth'][valid]).all()
    assert np.allclose(out['depth'][valid], depth[valid], rtol=1e-2)
    assert np.allclose(points[..., 2][valid], out['depth'][valid])
    assert np.isnan(points[~valid]).all()


def test_postprocess_known_intrinsics_are_used_and_upsampled():
    raw, depth = _affine_raw(84, 56, focal=1.1, shift=-0.3, scale=1.7, hole=False)
    cam = intrinsics_from_focal(1.1, 84, 56).resized(168, 112)
    out = postprocess(raw, (168, 112), intrinsics=cam)
    points = Prediction(**out).points
    assert not out['intrinsics_recovered'] and out['intrinsics'] == cam
    assert out['shift'] == pytest.approx(-0.3, abs=1e-2)
    assert out['depth'].shape == (112, 168) and points.shape == (112, 168, 3)
    assert out['mask'].all()
    # points follow the given camera: x = (u - cx) / fx * z
    x_expected = (np.arange(168) - cam.cx) / cam.fx * out['depth']
    assert np.allclose(points[..., 0], x_expected, rtol=1e-5, atol=1e-6)


def test_postprocess_intrinsics_for_another_resolution_are_rescaled():
    raw, _ = _affine_raw(84, 56, focal=1.1, shift=0.2, scale=1.0, hole=False)
    cam = intrinsics_from_focal(1.1, 84, 56).resized(336, 224)  # e.g. CameraInfo for the full-res stream
    out = postprocess(raw, (168, 112), intrinsics=cam)
    assert out['intrinsics'] == cam.resized(168, 112)


def test_upsample_does_not_blend_across_invalid_pixels():
    vals = np.full((8, 8), 1.0, np.float32)
    vals[:, 4:] = 100.0
    valid = np.ones((8, 8), bool)
    valid[:, 3:5] = False  # a gap between the near and far surfaces
    vals[~valid] = 50.0  # garbage under the mask must never leak out
    up, mask = upsample_valid(vals, valid, 32, 32)
    got = up[mask]
    assert np.all((np.abs(got - 1.0) < 1e-5) | (np.abs(got - 100.0) < 1e-4))
    assert np.isnan(up[~mask]).all()
    assert 0.6 < mask.mean() < 0.9


def test_normals_are_unit_and_nan_where_invalid():
    raw, _ = _affine_raw(42, 28, focal=1.2, shift=0.1, scale=1.0)
    n = np.zeros((28, 42, 3), np.float32)
    n[..., 2] = -2.0
    n[..., 0] = 1.0
    raw.normal = n
    out = postprocess(raw, (84, 56))
    norms = np.linalg.norm(out['normals'][out['mask']], axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert np.isnan(out['normals'][~out['mask']]).all()


# ---- Predictor (torch backend) -----------------------------------------------------------------------------------
def test_predictor_torch_end_to_end(tiny_model):
    pred = Predictor(tiny_model, backend='torch', num_tokens=48)
    assert pred.backend_name == 'torch'
    rgb = _frame(96, 72)
    p = pred.predict(rgb)
    assert p.depth.shape == (72, 96) and p.depth.dtype == np.float32
    assert p.points.shape == (72, 96, 3) and p.mask.dtype == bool
    assert np.array_equal(np.isnan(p.depth), ~p.mask)
    assert np.allclose(p.points[..., 2][p.mask], p.depth[p.mask])
    assert p.metric_scale > 0 and p.intrinsics_recovered
    assert (p.intrinsics.width, p.intrinsics.height) == (96, 72)
    assert p.normals is not None and p.normals.shape == (72, 96, 3)
    assert {'preprocess', 'forward', 'postprocess', 'total'} <= set(p.timings_ms)
    assert all(v >= 0 for v in p.timings_ms.values())
    cam = Intrinsics.from_fov(math.radians(70), 96, 72)
    q = pred.predict(rgb, cam)
    assert q.intrinsics == cam and not q.intrinsics_recovered
    assert np.array_equal(pred.predict(rgb).depth, p.depth, equal_nan=True)  # deterministic


def test_a_prepared_input_survives_the_next_prepare(tiny_model):
    """The node prepares frame n+1 while frame n runs: n's input must stay as it was until the prepare after next,
    and running it gives what forward gives for that frame."""
    pred = Predictor(tiny_model, backend='torch', num_tokens=48)
    a, b = _frame(96, 72, seed=1), _frame(96, 72, seed=2)
    first = pred.prepare(a)
    kept = first.image.copy()
    second = pred.prepare(b)
    assert second.image is not first.image and np.array_equal(first.image, kept)
    assert np.array_equal(pred.run(first).points, pred.forward(a).points)
    # forward prepared a again, into the buffer `first` had: `second` is still b's input
    assert np.array_equal(pred.run(second).points, pred.forward(b).points)
    raw = pred.run(pred.prepare(a))
    assert {'preprocess', 'forward', 'preprocess_cpu', 'forward_cpu'} <= set(raw.timings_ms)


def test_predictor_rejects_bad_input(tiny_model):
    pred = Predictor(tiny_model, backend='torch', num_tokens=48)
    with pytest.raises(BadInputError, match='uint8'):
        pred.predict(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(BadInputError, match='intrinsics'):
        pred.predict(_frame(64, 48), intrinsics=np.eye(3))
    with pytest.raises(BadInputError, match='backend'):
        Predictor(tiny_model, backend='magic')


def test_backend_unavailable_reasons(tiny_model, tmp_path):
    with pytest.raises(BackendUnavailableError, match='.onnx'):
        create_backend(tiny_model, backend='onnxruntime')
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match='CUDA'):
            create_backend(tiny_model, backend='torch', device='cuda')
    engine = tmp_path / 'x.engine'
    engine.write_bytes(b'not an engine')
    with pytest.raises(BackendUnavailableError) as err:
        create_backend(str(engine), backend='tensorrt')
    assert any(word in str(err.value) for word in ('not installed', 'GPU', 'deserialize'))


def test_auto_choice_by_model_kind():
    from mgeo_ros.runtime.devices import has_nvidia_gpu, tensorrt_available

    assert choose_backend('engine') == 'tensorrt'
    assert choose_backend('checkpoint') == 'torch'
    expected = 'tensorrt' if tensorrt_available() and has_nvidia_gpu() else 'onnxruntime'
    assert choose_backend('onnx') == expected
