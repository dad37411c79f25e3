"""A node started without `model` says, every time, that it runs the packaged demo model and how to give a real one;
a node given a fixed-size ONNX with another `num_tokens` says once which count the file keeps. Real node processes,
read from their logs."""
from __future__ import annotations

import os
import time

import pytest
import runtime_models
from node_harness import start_node, stop_node

pytestmark = [pytest.mark.ros]


@pytest.fixture(scope='module')
def fixed_onnx(tmp_path_factory):
    return runtime_models.tiny_onnx(tmp_path_factory.mktemp('start_warnings_node'))


def _log_once_loaded(proc, log, timeout: float = 120.0) -> str:
    """The node's log once its model is loaded (the line naming the model), then the node stopped with SIGINT."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and 'model: ' not in log.read_text() and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)   # the warnings follow the model line
    finally:
        code = stop_node(proc)
    text = log.read_text()
    assert code == 0, text[-2000:]
    return text


def test_start_warnings_in_the_node_log(fixed_onnx, tmp_path, ros_env):
    tag = f'/nsw{os.getpid()}'
    demo_log, fixed_log = tmp_path / 'demo.log', tmp_path / 'fixed.log'
    demo = start_node(f'{tag}_demo', {}, env=ros_env, log_path=demo_log)
    fixed = start_node(f'{tag}_fixed', {'model': str(fixed_onnx), 'backend': 'onnxruntime', 'num_tokens': 1200},
                       env=ros_env, log_path=fixed_log)
    demo_text, fixed_text = _log_once_loaded(demo, demo_log), _log_once_loaded(fixed, fixed_log)

    warnings = [line for line in demo_text.splitlines() if 'WARN' in line and 'no `model` given' in line]
    assert len(warnings) == 1, demo_text[-3000:]
    for word in ('demo model', 'not a depth model for real cameras', '-p model:=', 'docs/models.md'):
        assert word in warnings[0], (word, warnings[0])
    assert 'num_tokens' not in warnings[0]

    tokens = [line for line in fixed_text.splitlines() if 'WARN' in line and 'num_tokens 1200 is not used' in line]
    assert len(tokens) == 1 and '300 tokens' in tokens[0], fixed_text[-3000:]
    assert 'no `model` given' not in fixed_text
