"""Files in the MoGe authors' ONNX layout (dynamic batch/height/width, scalar int64 `num_tokens`, outputs at the
input size) run as they are on ONNX Runtime, through the same postprocess as the project's own exports, and agree with
the project's PyTorch path for the same weights; files of neither layout are refused with what was found."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from authors_onnx import wellposed_dynamic

from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from mgeo_ros.runtime.model_layout import ModelLayoutError
from mgeo_ros.runtime.predictor import Predictor
from mgeo_ros.runtime.preprocess import grid_tokens

# agreement with the PyTorch path for the same weights. The runtime feeds the graph the frame at its token-grid size,
# so the graph's own resize to the grid is the identity and its ONNX-compatible (non-antialiased) resize changes
# nothing; what is left is float rounding: measured raw rel. L2 <= 1.1e-7 and depth rel. difference <= 3e-7 (max)
RAW_REL_L2 = 1e-5
DEPTH_MEDIAN_REL = 1e-5
DEPTH_P99_REL = 1e-4


@pytest.fixture(scope='module')
def model():
    return wellposed_dynamic(2)


def _frame(w, h, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 3 + yy) % 255, (yy * 2) % 255, (xx + 2 * yy) % 255], -1)
    return np.clip(base + rng.integers(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def test_layout_and_names(authors_file):
    b = OnnxRuntimeBackend(str(authors_file))
    assert b.layout.dynamic and b.input_size is None and b.layout.has_normal
    graph = onnx.load(str(authors_file)).graph
    assert [i.name for i in graph.input] == ['image', 'num_tokens']
    assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64


@pytest.mark.parametrize('size', [(160, 120), (120, 160), (200, 90)])
def test_predictions_match_the_torch_path(authors_file, model, size):
    w, h = size
    rgb = _frame(w, h)
    ort_pred = Predictor(str(authors_file), backend='onnxruntime', num_tokens=60)
    torch_pred = Predictor(model, backend='torch', num_tokens=60)
    # raw network outputs on the same preprocessed frame
    image = ort_pred.preprocessor(rgb).copy()
    tokens = grid_tokens(image.shape[3], image.shape[2])
    a, b = ort_pred.backend.forward(image, tokens), torch_pred.backend.forward(image, tokens)
    assert a.points.shape == (image.shape[2], image.shape[3], 3)
    for name in ('points', 'mask', 'normal'):
        x, y = getattr(a, name), getattr(b, name)
        assert np.linalg.norm(x - y) / np.linalg.norm(y) < RAW_REL_L2, name
    # whole predictions (focal/shift recovery, metric scale, upsampling)
    pa, pb = ort_pred.predict(rgb), torch_pred.predict(rgb)
    assert pa.depth.shape == (h, w)
    both = pa.mask & pb.mask
    assert both.mean() > 0.9 * pb.mask.mean() > 0
    rel = np.abs(pa.depth[both] - pb.depth[both]) / pb.depth[both]
    assert np.median(rel) < DEPTH_MEDIAN_REL and np.quantile(rel, 0.99) < DEPTH_P99_REL


def test_num_tokens_is_used(authors_file):
    rgb = _frame(160, 120, seed=3)
    coarse = Predictor(str(authors_file), backend='onnxruntime', num_tokens=30).predict(rgb)
    fine = Predictor(str(authors_file), backend='onnxruntime', num_tokens=120).predict(rgb)
    for p in (coarse, fine):
        assert p.mask.mean() > 0.5 and np.isfinite(p.depth[p.mask]).all() and (p.depth[p.mask] > 0).all()
    both = coarse.mask & fine.mask
    assert np.abs(coarse.depth[both] - fine.depth[both]).max() > 1e-4


def _strip(src, out, drop_output=None, rename_input=None, fix_size=False):
    model = onnx.load(str(src))
    if drop_output:
        keep = [o for o in model.graph.output if o.name != drop_output]
        del model.graph.output[:]
        model.graph.output.extend(keep)
    if rename_input:
        old = model.graph.input[0].name
        model.graph.input[0].name = rename_input
        for n in model.graph.node:
            for k, x in enumerate(n.input):
                if x == old:
                    n.input[k] = rename_input
    onnx.save(model, str(out))
    return out


def test_foreign_layout_refused_naming_found_and_expected(authors_file, tmp_path):
    bad = _strip(authors_file, tmp_path / 'no_mask.onnx', drop_output='mask')
    with pytest.raises(ModelLayoutError) as e:
        OnnxRuntimeBackend(str(bad))
    text = str(e.value)
    assert "missing outputs ['mask']" in text and 'found inputs image float32' in text
    assert 'authors' in text and 'mgeo export' in text
    renamed = _strip(authors_file, tmp_path / 'renamed.onnx', rename_input='pixels')
    with pytest.raises(ModelLayoutError, match="no input named 'image'.*found inputs pixels"):
        OnnxRuntimeBackend(str(renamed))
