"""The sizing guide's table (docs/sizing.md) is what `python -m mgeo_ros.bench.sizing` makes of the committed report,
and the documented bench command that writes such a report runs (a tiny variant: one small size, the tiny preset,
short streams; every other word as documented)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from doc_commands import commands, section

from mgeo_ros.bench import sizing
from mgeo_ros.cli import main as mgeo_main

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / 'docs' / 'sizing.md'


def _documented_bench() -> list[str]:
    found = commands(section(GUIDE.read_text(), 'Measured on this machine'))
    (bench,) = [w for w in found if w[:2] == ['mgeo', 'bench'] and '--save' in w]
    return bench


def _tiny(words: list[str], save: Path) -> list[str]:
    """The documented command at one 96x54 frame size, the tiny preset and short streams, saving to `save`."""
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ('--size', '--forward-ms', '--save'):
            skip = True
            continue
        out.append(word)
    return out[1:] + ['preset:tiny', '--num-tokens', '20', '--size', '96x54', '--forward-ms', '20', '--seconds',
                      '0.5', '--frames', '1', '--save', str(save)]


def test_the_guides_table_is_the_committed_reports():
    report = json.loads((REPO / sizing.DATA).read_text())
    text = GUIDE.read_text()
    assert sizing.TABLE_BEGIN in text and sizing.with_table(text, report) == text
    assert len(report['sizes']) >= 1 and all('stage_cpu_ms' in r for r in report['sizes'])


def test_the_generator_rewrites_a_stale_table(tmp_path):
    report = json.loads((REPO / sizing.DATA).read_text())
    stale = GUIDE.read_text().replace(sizing.TABLE_END, '| stale |\n' + sizing.TABLE_END)
    (tmp_path / 'sizing.md').write_text(stale)
    assert sizing.main(['--update', str(tmp_path / 'sizing.md'), '--data', str(REPO / sizing.DATA)]) == 0
    assert (tmp_path / 'sizing.md').read_text() == sizing.with_table(stale, report) == GUIDE.read_text()


@pytest.mark.ros
def test_the_documented_bench_command_writes_the_report_the_table_is_made_of(tmp_path, capsys):
    words = _documented_bench()
    assert {'--compressed', '--save', '--param-set', '--outputs'} <= set(words)
    save = tmp_path / 'sizing.json'
    assert mgeo_main(_tiny(words, save)) == 0
    capsys.readouterr()
    report = json.loads(save.read_text())
    rows = report['sizes']
    assert [(r['input'], r['param_set']['output_scale']) for r in rows] == [
        ('rgb8', 1.0), ('rgb8', 0.5), ('jpeg q80', 1.0), ('jpeg q80', 0.5)]
    for row in rows:
        assert row['outputs'] == ['depth', 'info', 'points'] and 0 < row['published'] <= row['sent']
        assert set(row['stage_cpu_ms']) == {'decode', 'preprocess', 'forward', 'frame_stage', 'publish'}
        assert row['stage_cpu_ms']['decode'] > 0 and row['stage_cpu_ms']['frame_stage'] > 0
    table = sizing.markdown(report)
    assert table.count('\n| 96x54 |') == 4 and '96x54 jpeg q80: node CPU per frame' in table
