"""The mixed-precision FP16 export: which nodes stay FP32 (by op type and graph structure), FP32 graph I/O, parity of
the FP16 graph on ONNX Runtime against the FP32 PyTorch forward, and the probe written beside it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mgeo_ros.export.fp16 import FLOAT, FLOAT16, classify, convert_to_fp16
from mgeo_ros.export.onnx_export import PARITY_BUDGETS, export_onnx
from mgeo_ros.runtime.engine_cache import onnx_precision
from mgeo_ros.runtime.probe import load_probe, probe_path


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """The tiny preset exported in fp32 and fp16 (each with its parity check and probe)."""
    from mgeo_ros.model import build_model
    from mgeo_ros.model.configs import preset

    torch.manual_seed(3)
    torch.set_num_threads(1)
    model = build_model(preset('tiny')).eval()
    d = tmp_path_factory.mktemp('fp16')
    reports = {p: export_onnx(model, str(d / f'tiny_{p}.onnx'), (128, 96), num_tokens=48, precision=p)
               for p in ('fp32', 'fp16')}
    return reports


def _nodes_by_plan(path):
    model = onnx.load(path)
    plan, _, _ = classify(model)
    return model, [(n, plan[i]) for i, n in enumerate(model.graph.node)]


def test_fp16_graph_keeps_fp32_islands_by_rule(exports):
    fp32_model, planned = _nodes_by_plan(exports['fp32'].path)
    by_op: dict[str, set[str]] = {}
    for n, rule in planned:
        by_op.setdefault(n.op_type, set()).add(rule)
    for op in ('LayerNormalization', 'Softmax', 'Exp', 'Sigmoid'):
        assert by_op[op] == {f'fp32:{op}'}, (op, by_op[op])
    assert by_op['Conv'] == {'fp16'} and 'fp16' in by_op['MatMul']
    # the metric-scale MLP (Gemm on the CLS token) is found by structure: the only ancestors of the rank-1 output
    gemms = [rule for n, rule in planned if n.op_type == 'Gemm']
    assert gemms and set(gemms) == {'fp32:per-image head'}
    # the exp remap's products and the final upsampling run after the last convolution: the tail
    assert any(rule == 'fp32:tail' and n.op_type == 'Resize' for n, rule in planned)


def test_fp16_graph_io_types_and_weights(exports):
    model = onnx.load(exports['fp16'].path)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {FLOAT}
    inits = {t.name: t.data_type for t in model.graph.initializer}
    conv_w = [inits[n.input[1]] for n in model.graph.node if n.op_type == 'Conv' and n.input[1] in inits]
    assert conv_w and set(conv_w) == {FLOAT16}
    ln = [n for n in model.graph.node if n.op_type == 'LayerNormalization']
    assert all(inits.get(n.input[1], FLOAT) == FLOAT for n in ln)
    assert onnx_precision(exports['fp16'].path) == 'fp16' and onnx_precision(exports['fp32'].path) == 'fp32'
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['precision'] == 'fp16'


def test_fp16_parity_report(exports):
    rel_budget, _, agree_budget = PARITY_BUDGETS['fp16']
    par16, par32 = exports['fp16'].parity, exports['fp32'].parity
    for name, err in par16.items():
        assert err['rel_l2'] <= rel_budget
        assert err['rel_l2'] > par32[name]['rel_l2']  # fp16 storage really changed the numbers
    assert par16['mask']['mask_agree'] >= agree_budget


def test_conversion_is_idempotent_on_types(exports):
    """Converting an fp16 graph again changes nothing that matters: no fp32 Conv weights appear, I/O stay fp32."""
    model = onnx.load(exports['fp16'].path)
    again, report = convert_to_fp16(model)
    assert report.fp16_nodes > 0
    assert {o.type.tensor_type.elem_type for o in again.graph.output} == {FLOAT}


def test_probe_is_written_and_loads_without_pickle(exports):
    for rep in exports.values():
        assert rep.probe == probe_path(rep.path)
        probe = load_probe(rep.probe)  # np.load(allow_pickle=False) inside
        w, h = rep.input_size
        assert probe.frame.shape == (1, 3, h, w)
        assert set(probe.outputs) == set(rep.outputs)
        assert np.isfinite(probe.outputs['points']).all()
