"""`mgeo bench`: rows per backend with per-stage medians, a reference baseline, JSON output, clear errors."""
from __future__ import annotations

import json

import pytest

from mgeo_ros import bench
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
        assert set(r['ms']) == set(bench.STAGES)
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
