"""`mgeo bench`: rows per backend with per-stage medians, a reference baseline, JSON output, clear errors."""
from __future__ import annotations

import json

import pytest

from mgeo_ros.bench import backends
from mgeo_ros.cli import main as mgeo_main


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


def test_bench_node_times_the_node_path(capsys):
    """`mgeo bench --node`: stage rows from the node's own stage timings, and the messages reached the subscriber in
    the other process (warm-up and timed frames)."""
    runs, warmup, frames = 3, 1, 2
    rc = mgeo_main(['bench', '--node', 'preset:tiny', '--size', '64x48', '--num-tokens', '20', '--runs', str(runs),
                    '--warmup', str(warmup), '--frames', str(frames), '--period', '0.05', '--param', 'max_depth=50.0',
                    '--profile', '8', '--json'])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    (size,) = report['sizes']
    assert size['size'] == '64x48' and size['params']['max_depth'] == 50.0 and size['params']['points_color'] is True
    column = size['now']
    for stage in ('decode', 'preprocess', 'forward', 'postprocess', 'publish', 'own', 'total'):
        assert column[stage]['count'] == runs and 0 <= column[stage]['median'] <= column[stage]['p95']
    assert column['own']['median'] <= column['total']['median']
    profile = size['profile_ms_per_frame']
    assert len(profile) == 8 and any('_publish' in p['function'] for p in profile)
    assert all(p['cumulative_ms'] >= p['own_ms'] >= 0 for p in profile)
    got = {t.split('/', 2)[2]: v['messages'] for t, v in size['received_by_sink'].items()}
    assert set(got) == {'depth/image', 'depth/camera_info', 'points', 'depth/mask', 'depth/confidence',
                        'depth/normals'}, got
    for count in got.values():  # a starved subscriber may lose the odd one on a loaded machine
        assert runs + warmup - 1 <= count <= runs + warmup, got


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


def test_bench_node_subscribes_only_the_outputs_asked_for(capsys):
    rc = mgeo_main(['bench', '--node', 'preset:tiny', '--size', '64x48', '--num-tokens', '20', '--runs', '2',
                    '--warmup', '0', '--frames', '1', '--period', '0.05', '--outputs', 'depth/image', '--json'])
    assert rc == 0
    (size,) = json.loads(capsys.readouterr().out)['sizes']
    assert [t.split('/', 2)[2] for t in size['received_by_sink']] == ['depth/image']
    assert 'points' not in str(size['topics'])
    assert mgeo_main(['bench', '--node', 'preset:tiny', '--size', '64x48', '--num-tokens', '20', '--runs', '1',
                      '--outputs', 'depth/nope']) == 2
    assert "--outputs ['depth/nope']" in capsys.readouterr().err
