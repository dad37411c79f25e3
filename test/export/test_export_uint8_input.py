"""`mgeo export --input-form uint8`: a graph that takes the frame's bytes gives what the float graph gives, ONNX Runtime
feeds it bytes, `mgeo inspect` names the form, and readers that predate the form refuse it saying why."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import BadInputError, MgeoError
from mgeo_ros.export.onnx_export import export_onnx
from mgeo_ros.model import build_model, preset
from mgeo_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from mgeo_ros.runtime.model_layout import check_onnx_layout, onnx_specs
from mgeo_ros.runtime.preprocess import Preprocessor, as_input_form
from mgeo_ros.runtime.probe import check_backend, load_probe, probe_path, rel_l2

SIZE, TOKENS = (112, 84), 48
REPO = Path(__file__).resolve().parents[2]
# The last commit whose readers know only the float form (their `image` must be float32 [B,3,H,W]).
FLOAT_ONLY_READERS = '18d2229'


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    torch.manual_seed(3)
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('uint8')
    model = build_model(preset('tiny')).eval()
    out = {}
    for form in ('float', 'uint8'):
        out[form] = d / f'{form}.onnx'
        export_onnx(model, str(out[form]), SIZE, num_tokens=TOKENS, input_form=form)  # parity checked: fp32 budgets
    out['dynamic'] = d / 'dynamic_uint8.onnx'
    export_onnx(model, str(out['dynamic']), SIZE, num_tokens=TOKENS, dynamic=True, input_form='uint8', parity=False)
    return out


def _frame(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x * 255 / width, y * 255 / height, 128 + 100 * np.sin(x / 9 + y / 7)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_the_uint8_graph_gives_what_the_float_graph_gives(files):
    flt, u8 = OnnxRuntimeBackend(str(files['float'])), OnnxRuntimeBackend(str(files['uint8']))
    assert (flt.input_form, u8.input_form) == ('float', 'uint8')
    assert u8.input_size == flt.input_size
    pre = Preprocessor(TOKENS, flt.input_size)
    rgb = _frame(640, 480)
    pixels = pre.pixels(rgb)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, flt.input_size[1], flt.input_size[0], 3)
    ref = flt.forward(pre(rgb).copy(), TOKENS)
    got = u8.forward(pixels, TOKENS)
    handed_floats = u8.forward(pre(rgb), TOKENS)  # an older caller's float input still runs
    # The graph's Mul(Cast(bytes), float32(1/255)) is the host's float32 multiply, so the network input is bitwise the
    # same; what could differ is ONNX Runtime choosing other kernels around the added Transpose (measured: 0 here).
    for out in (got, handed_floats):
        assert rel_l2(out.points, ref.points) < 1e-6
        assert rel_l2(out.mask, ref.mask) < 1e-6
        assert out.metric_scale == pytest.approx(ref.metric_scale, rel=1e-6)


def test_the_predictor_hands_a_uint8_model_the_resized_bytes_and_a_float_model_the_tensor(files):
    """Preprocessing where the network runs: with a uint8-input file the host only resizes (uint8 -> float and the
    normalization are the graph's), with a float-input file it makes the float tensor; the two agree."""
    from mgeo_ros.runtime import Predictor

    seen = {}
    outputs = {}
    for form in ('float', 'uint8'):
        predictor = Predictor(str(files[form]), backend='onnxruntime', num_tokens=TOKENS)
        forward = predictor.backend.forward

        def spy(image, tokens, forward=forward, form=form):
            seen[form] = image.dtype
            return forward(image, tokens)

        predictor.backend.forward = spy
        outputs[form] = predictor.forward(_frame(640, 480))
        assert {'preprocess_cpu', 'forward_cpu'} <= set(outputs[form].timings_ms)
    assert seen == {'float': np.float32, 'uint8': np.uint8}
    assert rel_l2(outputs['uint8'].points, outputs['float'].points) < 1e-6  # bitwise the same input (see above)


def test_the_float_graph_takes_bytes_too(files):
    flt = OnnxRuntimeBackend(str(files['float']))
    pre = Preprocessor(TOKENS, flt.input_size)
    rgb = _frame(224, 168)
    a = flt.forward(pre(rgb).copy(), TOKENS)
    b = flt.forward(pre.pixels(rgb), TOKENS)
    np.testing.assert_array_equal(a.points, b.points)  # the conversion is the Preprocessor's own multiply


def test_a_dynamic_uint8_graph_runs_at_each_frames_grid(files):
    layout = check_onnx_layout(str(files['dynamic']))
    assert layout.dynamic and layout.input_form == 'uint8' and layout.input_size is None
    backend = OnnxRuntimeBackend(str(files['dynamic']))
    pre = Preprocessor(TOKENS)
    raw = backend.forward(pre.pixels(_frame(320, 160)), TOKENS)
    assert raw.points.shape[:2] == pre.pixels(_frame(320, 160)).shape[1:3]


def test_the_probe_of_a_uint8_file_checks_its_backend(files):
    probe = load_probe(probe_path(str(files['uint8'])))
    assert check_backend(OnnxRuntimeBackend(str(files['uint8'])), probe).ok


def test_conversions_between_forms_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    floats = as_input_form(pixels, 'float')
    assert floats.shape == (2, 3, 5, 7) and floats.dtype == np.float32
    np.testing.assert_array_equal(as_input_form(floats, 'uint8'), pixels)
    with pytest.raises(BadInputError, match='input form'):
        as_input_form(pixels, 'half')


def test_inspect_shows_the_input_form(files, capsys):
    assert mgeo_main(['inspect', str(files['uint8'])]) == 0
    text = capsys.readouterr().out
    assert 'input       image uint8 [1,' in text and ',3]' in text
    assert 'input form  uint8 pixels [N,H,W,3] RGB' in text
    assert mgeo_main(['inspect', str(files['float'])]) == 0
    assert 'input form  float32 [N,3,H,W] in [0,1]' in capsys.readouterr().out


def _float_only_reader(tmp_path: Path):
    """model_layout.py as it was before the uint8 form, loaded from git history."""
    source = subprocess.run(['git', 'show', f'{FLOAT_ONLY_READERS}:mgeo_ros/runtime/model_layout.py'], cwd=REPO,
                            capture_output=True, text=True)
    if source.returncode:
        pytest.skip(f'git history without commit {FLOAT_ONLY_READERS} (a shallow checkout): {source.stderr.strip()}')
    path = tmp_path / 'model_layout_float_only.py'
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location('model_layout_float_only', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_a_reader_that_predates_the_form_refuses_it_naming_the_input(files, tmp_path):
    import onnx

    old = _float_only_reader(tmp_path)
    model = onnx.load(str(files['uint8']))
    with pytest.raises(old.ModelLayoutError) as caught:
        old.classify(onnx_specs(model.graph.input), onnx_specs(model.graph.output), str(files['uint8']))
    text = str(caught.value)
    assert "input 'image' is not float32 [B,3,H,W]" in text and 'found inputs image uint8 [1,' in text
    old.onnx_layout(onnx.load(str(files['float'])), 'float.onnx')  # the float form still loads there


def test_a_tensorrt_engine_is_not_built_from_the_uint8_form(files, tmp_path):
    from mgeo_ros.runtime.engine_cache import build_engine

    with pytest.raises(MgeoError, match='TensorRT engines are built from the float form'):
        build_engine(str(files['uint8']), str(tmp_path / 'x.engine'), progress=False)


def test_export_refuses_an_unknown_form(tmp_path):
    with pytest.raises(BadInputError, match='input_form must be one of'):
        export_onnx(build_model(preset('tiny')).eval(), str(tmp_path / 'x.onnx'), SIZE, input_form='half')
