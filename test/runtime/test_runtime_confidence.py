"""Per-pixel confidence: the mask head's probability brought to the frame size like depth, each side of the mask
border blended apart."""
from __future__ import annotations

import numpy as np
import pytest

from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.frame_stage import postprocess
from mgeo_ros.runtime.postprocess import upsample_confidence, upsample_valid
from mgeo_ros.runtime.prediction import Prediction


def _two_sided(prob_valid: float, prob_invalid: float) -> tuple[np.ndarray, np.ndarray]:
    prob = np.full((12, 16), prob_valid, np.float32)
    prob[:, 9:] = prob_invalid
    prob[2:5, 2:5] = prob_invalid  # a hole inside the valid side too
    return prob, prob > 0.5


def test_no_bleeding_across_the_mask_border():
    prob, valid = _two_sided(0.93, 0.11)
    conf = upsample_confidence(prob, valid, 64, 48)
    _, mask = upsample_valid(prob, valid, 64, 48)
    assert conf.shape == (48, 64) and conf.dtype == np.float32
    np.testing.assert_allclose(conf[mask], 0.93, atol=1e-5)  # only valid pixels are blended inside the mask
    np.testing.assert_allclose(conf[~mask], 0.11, atol=1e-5)  # only invalid ones outside
    assert 0.2 < (~mask).mean() < 0.6


def test_smooth_probability_is_interpolated_and_stays_in_range():
    yy, xx = np.mgrid[0:30, 0:40]
    prob = (0.55 + 0.4 * xx / 39).astype(np.float32)  # all valid, a ramp
    conf = upsample_confidence(prob, np.ones_like(prob, bool), 160, 120)
    assert 0.55 - 1e-5 <= conf.min() and conf.max() <= 0.95 + 1e-5
    assert (np.diff(conf, axis=1) >= -1e-6).all()  # monotone like the ramp
    same = upsample_confidence(np.array([[1.5, -0.2], [np.nan, 0.4]], np.float32), np.ones((2, 2), bool), 2, 2)
    np.testing.assert_array_equal(same, np.array([[1.0, 0.0], [0.0, 0.4]], np.float32))


@pytest.mark.parametrize('threshold', [0.3, 0.5, 0.8])
def test_prediction_confidence_agrees_with_mask_and_threshold(threshold):
    rng = np.random.default_rng(0)
    h, w = 28, 42
    points = np.ones((h, w, 3), np.float32)
    points[..., 0] = np.linspace(-0.5, 0.5, w)[None, :]
    points[..., 1] = np.linspace(-0.3, 0.3, h)[:, None]
    prob = rng.uniform(0, 1, (h, w)).astype(np.float32)
    raw = RawOutput(points=points, mask=prob, metric_scale=2.0)
    pred = Prediction(**postprocess(raw, (84, 56), mask_threshold=threshold))
    conf = pred.confidence
    assert conf.shape == pred.depth.shape
    assert ((conf >= 0) & (conf <= 1)).all()
    assert (conf[pred.mask] > threshold - 1e-6).all()  # valid pixels blend only probabilities above the threshold
    assert (conf[~pred.mask] <= threshold + 1e-6).all()
    assert pred.confidence is conf  # computed once, on first use


def test_prediction_without_network_outputs_uses_its_mask():
    from mgeo_ros.geometry import Intrinsics

    mask = np.zeros((4, 5), bool)
    mask[1:3] = True
    pred = Prediction(depth=np.where(mask, 1.0, np.nan).astype(np.float32), mask=mask,
                      intrinsics=Intrinsics(4.0, 4.0, 2.0, 1.5, 5, 4), metric_scale=1.0)
    np.testing.assert_array_equal(pred.confidence, mask.astype(np.float32))
