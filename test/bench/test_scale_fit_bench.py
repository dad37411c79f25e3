"""`mgeo bench --scale-fit`: one row per anchor kind and size, each fit finding the synthetic frame's true scale."""
from __future__ import annotations

import json

import pytest

from mgeo_ros.bench.scale_fit import TRUE_SCALE
from mgeo_ros.cli import main as mgeo_main


def test_scale_fit_rows(capsys):
    rc = mgeo_main(['bench', '--scale-fit', '--size', '96x72', '--size', '64x48', '--anchor-points', '300',
                    '--runs', '2', '--warmup', '0', '--json'])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = report['rows']
    assert [r['size'] for r in rows] == ['96x72'] * 4 + ['64x48'] * 4
    assert {r['anchors'] for r in rows} == {'points (cloud, extrinsics)', 'depth (sparse image)', 'scan',
                                            'ground plane'}
    for r in rows:
        assert r['ms'] > 0 and r['matched'] > 20, r
        assert (r['receipt_ms'] > 0) == (r['anchors'] != 'ground plane'), r
        # exact anchors: only float32 rounding; the floor has 1 % depth noise, the plane fit averages it out
        assert r['scale'] == pytest.approx(TRUE_SCALE, rel=0.01 if r['anchors'] == 'ground plane' else 1e-4), r


def test_scale_fit_table(capsys):
    assert mgeo_main(['bench', '--scale-fit', '--size', '64x48', '--anchor-points', '100', '--runs', '1']) == 0
    out = capsys.readouterr().out
    assert 'scale fit per frame (100 anchor points' in out and 'ground plane' in out
