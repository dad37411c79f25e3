"""`mgeo bench`: rows per backend with per-stage medians, a reference baseline, JSON output, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mgeo_ros.bench import backends
from mgeo_ros.cli import main as mgeo_main


@pytest.fixture(autouse=True)
def _threads_restored(monkeypatch):
    """`--threads` sets torch's threads and OMP_NUM_THREADS for the bench's process, here the test run: both are
    put back after each test, so that later tests and the nodes they start get the machine's defaults."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)  # undone at teardown: unset again, whatever the bench set
    yield
    torch.set_num_threads(threads)


def test_bench_json_rows(capsys):
    rc = mgeo_main(['bench', 'preset:tiny', '--backend', 'torch', '--size', '64x48', '--size', '48x64',
                    '--num-tokens', '20', '--runs', '2', '--warmup', '1', '--threads', '1', '--json'])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = report['rows']
    assert [r['backend'] for r in rows] == ['reference (model.infer)', 'torch', 'flying-pixel filter'] * 2
    assert [r['size'] for r in rows] == ['64x48'] * 3 + ['48x64'] * 3
    for r in rows[2::3]:  # the node's flying-pixel filter, timed against the cloud packing of the same depth
        assert 0 < r['e2e_ms'] == r['ms']['postprocess'] and r['filter_vs_cloud'] > 0
    for r in rows[1::3]:
        assert set(r['ms']) == set(backends.STAGES)
        assert all(v >= 0 for v in r['ms'].values())
        assert r['e2e_ms'] >= r['ms']['forward'] > 0
        assert r['fps'] == pytest.approx(1000 / r['e2e_ms'])
        assert r['overhead_ratio'] == pytest.approx((r['e2e_ms'] - r['ms']['forward']) / r['ms']['forward'])
        assert r['speedup_vs_baseline'] > 0 and r['peak_rss_mib'] > 0
    assert report['meta']['torch_threads'] == 1


def test_bench_table_and_unavailable_backend(capsys):
    rc = mgeo_main(['bench', 'preset:tiny', '--backend', 'torch', '--backend', 'tensorrt', '--size', '64x48',
                    '--num-tokens', '20', '--runs', '1', '--warmup', '0', '--no-baseline', '--threads', '1'])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'e2e ms' in out and ' torch ' in out
    from mgeo_ros.runtime.devices import has_nvidia_gpu, tensorrt_available

    if not (tensorrt_available() and has_nvidia_gpu()):
        assert 'tensorrt: not measured' in out


def test_bench_default_model_missing_is_explained(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr('mgeo_ros.runtime.predictor.default_model_path', lambda: tmp_path / 'nope')
    assert mgeo_main(['bench', '--default-model']) == 2
    assert 'no packaged default model' in capsys.readouterr().err


def test_bench_node_reports_rates_own_cpu_and_the_transport_floor(capsys):
    """`mgeo bench --node --forward-ms`: the node serves a camera with a replayed forward; the report has the
    published and engine rates, own CPU against the transport floor, latency, stages and the camera-rate rows, and
    every output reached the subscriber process. Structure and sanity only: speed lives in the bench itself."""
    from mgeo_ros.bench.node import format_node_table

    rc = mgeo_main(['bench', '--node', 'preset:tiny', '--size', '64x48', '--num-tokens', '20', '--forward-ms', '20',
                    '--seconds', '1.5', '--camera-hz', '30', '--rates', '5', '--param', 'max_depth=50.0', '--json'])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    (size,) = report['sizes']
    assert size['size'] == '64x48' and size['forward'] == 'replayed' and size['engine_hz'] == pytest.approx(50.0)
    assert report['meta']['params']['max_depth'] == 50.0 and report['meta']['params']['points_color'] is True
    assert 0 < size['published'] <= size['sent'] and size['published_hz'] > 0
    assert size['own_ms_median'] > 0 and size['floor_ms_median'] > 0 and size['process_cpu_ms_per_frame'] > 0
    assert size['own_over_floor'] == pytest.approx(size['own_ms_median'] / size['floor_ms_median'])
    assert size['own_ms_median'] <= size['own_ms_p95'] and size['latency_ms_median'] > 0
    assert size['floor_messages'] == sorted(['depth', 'info', 'points', 'mask', 'confidence', 'normals'])
    for stage in ('decode', 'preprocess', 'forward', 'stage1', 'stage1_cpu', 'postprocess', 'publish', 'stage2',
                  'stage2_cpu', 'total', 'since_stamp'):
        summary = size['stages'][stage]
        assert summary['count'] > 0 and 0 <= summary['median'] <= summary['p95'], stage
    assert size['forward_ms'] == 20.0
    got = {t.split('/', 2)[2]: v['messages'] for t, v in size['received_by_sink'].items()}
    assert set(got) == {'depth/image', 'depth/camera_info', 'points', 'depth/mask', 'depth/confidence',
                        'depth/normals'} and min(got.values()) > 0, got
    (row,) = size['rates']
    assert row['camera_hz'] == 5 and 0 < row['published'] <= row['sent'] and row['bound_hz'] == 5
    assert row['published_over_bound'] == pytest.approx(row['published_hz'] / 5)
    table = format_node_table(report)
    assert 'transport floor' in table and "engine's 50.00 Hz" in table and 'camera    5.0 Hz' in table


def test_bench_node_live_reports_rate_latency_and_the_forward_bound(tmp_path, capsys):
    """`--live`: the real node as a process fed at a fixed rate; its rate, latency and forward come back per threads
    value (the node's own /diagnostics give the forward, so the intra_op_threads value reaches the node)."""
    from mgeo_ros.model import build_model, preset, save_checkpoint

    model_dir = tmp_path / 'tiny'
    save_checkpoint(build_model(preset('tiny')), model_dir)
    rc = mgeo_main(['bench', '--node', str(model_dir), '--live', '3', '--rate', '5', '--live-threads', '1',
                    '--size', '64x48', '--param', 'num_tokens=64', '--json'])
    assert rc == 0
    (row,) = json.loads(capsys.readouterr().out)['rows']
    assert row['intra_op_threads'] == 1 and row['backend'] == 'torch' and row['sent'] == 15
    assert 0 < row['published'] <= row['sent'] and row['published_hz'] == pytest.approx(row['published'] / 3)
    assert row['latency_ms']['median'] <= row['latency_ms']['p95'] <= row['latency_ms']['max']
    forward = row['forward_ms']['median']
    assert forward > 0 and row['forward_bound_hz'] == pytest.approx(1000 / forward)
    assert any(t.endswith('/points') for t in row['topics'])


def test_replay_backend_hands_out_fresh_copies_in_turn_and_refuses_another_size():
    from mgeo_ros.bench.replay import ReplayBackend
    from mgeo_ros.errors import BadInputError
    from mgeo_ros.runtime.backends.base import RawOutput
    from mgeo_ros.runtime.predictor import Predictor as P

    rng = np.random.default_rng(0)

    def raw(z):
        pts = np.concatenate([rng.normal(0, 0.1, (28, 42, 2)), np.full((28, 42, 1), z)], -1).astype(np.float32)
        return RawOutput(points=pts, mask=np.ones((28, 42), np.float32), metric_scale=2.0)

    outputs = [raw(1.0), raw(3.0)]
    backend = ReplayBackend(outputs, input_size=(42, 28))
    pred = P(backend, mask_threshold=0.5)
    frame = np.zeros((60, 80, 3), np.uint8)
    first, second, third = (pred.predict(frame) for _ in range(3))
    assert np.nanmedian(third.depth) == np.nanmedian(first.depth) != np.nanmedian(second.depth)  # cycles 0, 1, 0
    got = backend.forward(np.zeros((1, 3, 28, 42), np.float32), 12)
    got.points[...] = 0  # a consumer writing in place does not change what is replayed later
    backend.forward(np.zeros((1, 3, 28, 42), np.float32), 12)  # outputs[0]
    again = backend.forward(np.zeros((1, 3, 28, 42), np.float32), 12)  # outputs[1] again
    assert np.array_equal(again.points, outputs[1].points) and np.all(again.points[..., 2] == 3.0)
    with pytest.raises(BadInputError, match='recorded at 42x28'):
        backend.forward(np.zeros((1, 3, 14, 28), np.float32), 2)
    as_bytes = ReplayBackend(outputs, input_size=(42, 28), input_form='uint8')  # a uint8-input model's replay
    assert P(as_bytes, mask_threshold=0.5).predict(frame).depth.shape == (60, 80)
    with pytest.raises(BadInputError, match='input 28x14 but the outputs were recorded at 42x28'):
        as_bytes.forward(np.zeros((1, 14, 28, 3), np.uint8), 2)


def test_gil_stall_reports_the_forward_and_the_longest_stall():
    """Structure only (no timing asserted): the probe runs the forward and measures the other thread's stalls."""
    calls = []
    result = backends.gil_stall(lambda: calls.append(sum(range(1000))), runs=5)
    assert len(calls) == 6 and set(result) == {'forward_ms', 'longest_stall_ms'}  # warm-up + runs
    assert result['forward_ms'] >= 0 and result['longest_stall_ms'] >= 0


def test_memory_bench_samples_the_node_rss_under_a_stream(tmp_path):
    """`python -m mgeo_ros.bench.memory`: the node as a process, fed and sampled; structure and sanity only."""
    import runtime_models

    from mgeo_ros.bench import memory

    model = runtime_models.tiny_onnx(tmp_path)
    r = memory.run(str(model), 'onnxruntime', (160, 120), 10.0, 0.1, 1.0, 3.0, {})
    assert r['frames_sent'] > 0 and 0 < r['frames_published'] <= r['frames_sent']
    assert len(r['samples']) >= 3 and all(m > 0 for _, m in r['samples'])
    assert r['rss_start_mib'] == r['samples'][0][1] and r['rss_end_mib'] == r['samples'][-1][1]
    assert r['growth_percent'] == pytest.approx(100 * (r['rss_end_mib'] / r['rss_start_mib'] - 1))
    assert memory.slope_mib_per_min([(0.0, 1.0), (60.0, 3.0), (120.0, 5.0)]) == pytest.approx(2.0)


def test_bench_node_takes_a_jpeg_camera_and_measures_each_output_set(capsys):
    """`--compressed jpeg`: the camera sends JPEG frames the node decodes; `--outputs` (repeated): one measurement
    per set of subscribed outputs, each reporting the per-frame stages; the node publishes only what is subscribed."""
    from mgeo_ros.bench.node import format_node_table

    rc = mgeo_main(['bench', '--node', 'preset:tiny', '--size', '96x64', '--num-tokens', '20', '--forward-ms', '20',
                    '--seconds', '1.0', '--camera-hz', '20', '--compressed', 'jpeg', '--outputs', 'depth,info',
                    '--outputs', 'depth,points,compressed_depth', '--json'])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report['meta']['input'] == 'jpeg q80'
    first, second = report['sizes']
    for row, names, topics in ((first, ['depth', 'info'], {'depth/image', 'depth/camera_info'}),
                               (second, ['depth', 'points', 'compressed_depth'],
                                {'depth/image', 'points', 'depth/image/compressedDepth'})):
        assert row['input'] == 'jpeg q80' and row['outputs'] == sorted(names) and row['size'] == '96x64'
        assert 0 < row['published'] <= row['sent']
        assert sorted(row['floor_messages']) == sorted(names)  # only the subscribed outputs were made
        got = {t.split('/', 2)[2] for t, v in row['received_by_sink'].items() if v['messages']}
        assert got == topics
        assert set(row['stage_ms']) == {'decode', 'preprocess', 'forward', 'frame_stage', 'publish'}
        assert all(v >= 0 for v in row['stage_ms'].values()) and row['stage_ms']['decode'] > 0
    table = format_node_table(report)
    assert '96x64 jpeg q80 [outputs depth+info]' in table and 'per frame (ms, median): decode' in table


def test_bench_node_refuses_an_unknown_output_name(capsys):
    rc = mgeo_main(['bench', '--node', 'preset:tiny', '--size', '64x48', '--num-tokens', '20', '--forward-ms', '20',
                    '--seconds', '0.5', '--outputs', 'depth,cloud'])
    assert rc == 2
    assert "unknown output(s) ['cloud']" in capsys.readouterr().err
