"""`mgeo bench --codec`: one row per size, encoding and format, sizes and ratios consistent, the table printed."""
from __future__ import annotations

import json

import pytest

from mgeo_ros.bench.codec import VARIANTS
from mgeo_ros.cli import main as mgeo_main


def test_codec_bench_json_rows(capsys):
    assert mgeo_main(['bench', '--codec', '--size', '64x48', '--size', '40x30', '--runs', '1', '--warmup', '0',
                      '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report['rows']
    assert [(r['size'], r['encoding'], r['format'], r['png_level']) for r in rows] == [
        (size, *variant) for size in ('64x48', '40x30') for variant in VARIANTS]
    for r in rows:
        w, h = (int(v) for v in r['size'].split('x'))
        assert r['raw_bytes'] == w * h * (4 if r['encoding'] == '32FC1' else 2)
        assert r['ratio'] == pytest.approx(r['raw_bytes'] / r['bytes']) and r['bytes'] > 12
        assert r['encode_ms'] > 0 and r['decode_ms'] > 0
        assert r['valid_kept'] > 0.9                          # an indoor scene inside the 10 m default
        # one inverse-depth step at 10 m is ~1 cm; millimetres round by half a millimetre
        assert r['max_error_m'] <= (0.011 if r['encoding'] == '32FC1' else 0.0005 + 1e-6)


def test_codec_bench_table(capsys):
    assert mgeo_main(['bench', '--codec', '--size', '32x24', '--runs', '1', '--warmup', '0']) == 0
    out = capsys.readouterr().out
    assert 'rvl' in out and 'png/1' in out and 'png/3' in out and 'ratio' in out
