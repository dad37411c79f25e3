"""The start warnings the node logs, on real files: a fixed-size ONNX exported for one token count and run with
another, the MoGe authors' dynamic ONNX (which takes any count), and an empty `model` (the packaged demo model)."""
from __future__ import annotations

import pytest
import runtime_models

from mgeo_ros.runtime import Predictor
from mgeo_ros.runtime.start_warnings import demo_model_warning, num_tokens_warning, start_warnings


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('start_warnings')
    return runtime_models.tiny_onnx(root), runtime_models.authors_onnx(root)


def test_a_fixed_size_onnx_names_its_own_token_count_and_the_one_asked_for(models):
    fixed, _ = models
    backend = Predictor(str(fixed), backend='onnxruntime', num_tokens=1200).backend
    in_file = int(backend.metadata['num_tokens'])
    assert in_file != 1200
    text = num_tokens_warning(1200, backend)
    assert text is not None
    for word in ('num_tokens 1200 is not used', f'{in_file} tokens', '--num-tokens 1200', f'num_tokens to {in_file}'):
        assert word in text, (word, text)
    assert num_tokens_warning(in_file, backend) is None        # asked for what the file has: nothing to say


def test_a_dynamic_onnx_takes_the_count_asked_for(models):
    _, dynamic = models
    backend = Predictor(str(dynamic), backend='onnxruntime', num_tokens=60).backend
    assert num_tokens_warning(60, backend) is None and num_tokens_warning(1200, backend) is None


def test_no_model_warns_that_the_demo_model_runs(models):
    fixed, _ = models
    text = demo_model_warning('')
    for word in ('no `model` given', 'demo model', 'not a depth model for real cameras', '-p model:=',
                 'docs/models.md'):
        assert word in text, (word, text)
    assert demo_model_warning(str(fixed)) is None
    backend = Predictor(str(fixed), backend='onnxruntime', num_tokens=1200).backend
    assert len(start_warnings('', 1200, backend)) == 2 and start_warnings(str(fixed), 300, backend) == []
