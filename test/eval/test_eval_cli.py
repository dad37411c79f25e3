"""`mgeo eval` end to end: a tiny random checkpoint on a generated bag, a folder dataset and a synthetic split."""
from __future__ import annotations

import json

import pytest
import torch

from mgeo_ros.cli import main

SIZE = (96, 72)
FAST = ['--backend', 'torch', '--num-tokens', '300', '--align-anchors', '32', '--quiet']


@pytest.fixture(scope='module')
def frames():
    from mgeo_ros.train.data import render_sequence
    return render_sequence(11, 4, size=SIZE)


def test_eval_bag_end_to_end(tiny_checkpoint, frames, tmp_path, capsys):
    from mgeo_ros.train.data import write_bag
    torch.set_num_threads(1)
    bag = write_bag(frames, tmp_path / 'bag')
    out = tmp_path / 'out'
    assert main(['eval', str(tiny_checkpoint), '--data', str(bag), '--out', str(out), '--report-frames', '2',
                 *FAST]) == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert result['num_frames'] == 4 and result['backend'] == 'torch'
    assert set(result['runs']) == {'gt_intrinsics', 'recovered_intrinsics'}
    for run in result['runs'].values():
        assert len(run['frames']) == 4
        assert 'depth_metric/abs_rel' in run['mean'] and 'boundary_f1' in run['mean']
        assert all(f['metric_scale'] > 0 for f in run['frames'])
    assert result['runs']['recovered_intrinsics']['frames'][0]['intrinsics_recovered'] is True
    assert result['runs']['gt_intrinsics']['mean']['fov_x_error_deg'] == pytest.approx(0.0, abs=1e-6)
    constant = result['baselines']['constant']['mean']
    assert 0.0 < constant['depth_metric/abs_rel'] < 10.0 and constant['depth_metric/delta1'] <= 1.0
    temporal = result['temporal']['recovered_intrinsics']
    assert temporal['gt_depth_flicker'] > 0.0                    # the camera moves: the GT changes too
    assert temporal['scale_jitter'] >= 0.0 and temporal['depth_flicker'] >= 0.0
    report = {p.name for p in (out / 'report').glob('*.png')}
    assert {'error_histogram.png', 'metric_scale.png'} <= report
    assert 'frame_0003_recovered_intrinsics_boundary.png' in report and len(report) == 2 + 2 * 2 * 5
    printed = capsys.readouterr().out
    assert 'baseline constant' in printed and 'AbsRel' in printed and 'temporal' in printed
    lines = printed.splitlines()
    assert lines[0] == 'node parameters: backend=torch, num_tokens=300'   # what differs from the node's defaults
    table = lines[1:6]                                                # header + 2 runs + 2 baselines
    assert len({len(line) for line in table}) == 1                    # numbers of any size keep the table aligned


def test_eval_folder_and_synth(tiny_checkpoint, frames, tmp_path):
    from mgeo_ros.train.data import write_folder
    torch.set_num_threads(1)
    folder = tmp_path / 'folder'
    write_folder(frames[:3], folder)
    out = tmp_path / 'out_folder'
    assert main(['eval', str(tiny_checkpoint), '--data', str(folder), '--out', str(out), '--no-gt-intrinsics',
                 '--limit', '2', '--constant-depth', '3.0', *FAST]) == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert list(result['runs']) == ['recovered_intrinsics'] and result['num_frames'] == 2
    assert result['constant_depth_m'] == 3.0 and 'temporal' not in result
    out = tmp_path / 'out_synth'
    assert main(['eval', str(tiny_checkpoint), '--data', 'synth:2:5:96x72', '--out', str(out), '--gt-intrinsics',
                 '--report-frames', '1', *FAST]) == 0
    result = json.loads((out / 'metrics.json').read_text())
    assert list(result['runs']) == ['gt_intrinsics'] and result['num_frames'] == 2
    assert len(list((out / 'report').glob('frame_*_input.png'))) == 1


def test_eval_rejects_bad_data_specs(tiny_checkpoint, tmp_path, capsys):
    assert main(['eval', str(tiny_checkpoint), '--data', 'synth:two', '--out', str(tmp_path), *FAST]) == 1
    assert 'synth:COUNT:SEED' in capsys.readouterr().err
    assert main(['eval', str(tiny_checkpoint), '--data', str(tmp_path / 'missing'), '--out', str(tmp_path), *FAST]) == 1
    assert 'does not exist' in capsys.readouterr().err


def _eval_metrics(model, bag, out, depth_topic):
    assert main(['eval', str(model), '--data', str(bag), '--out', str(out), '--gt-intrinsics', '--limit', '2',
                 '--report-frames', '0', '--depth-topic', depth_topic, *FAST]) == 0
    result = json.loads((out / 'metrics.json').read_text())
    mean = {k: v for k, v in result['runs']['gt_intrinsics']['mean'].items() if k != 'time_ms'}   # all but timing
    return mean, result


def test_eval_reads_every_compressed_depth_form(tiny_checkpoint, frames, tmp_path):
    """GT depth as compressedDepth (32FC1 and 16UC1, png and rvl) scores like the raw-depth bag: exactly for 16UC1
    (lossless millimetres) and for 32FC1 against a raw bag of the same quantized depth; against the unquantized
    raw depth within what one inverse-depth step can move AbsRel."""
    import numpy as np

    from mgeo_ros.depth_codec import decode_depth, encode_depth
    from mgeo_ros.train.data import Sample, write_bag
    torch.set_num_threads(1)
    top = max(float(np.nanmax(np.where(f.mask, f.depth, np.nan))) for f in frames)
    depth_max, q = top * 1.01 + 1.0, 150.0                   # every GT pixel inside the code's range, finest steps
    raw_topic, packed_topic = '/camera/depth/image_raw', '/camera/depth/image_raw/compressedDepth'
    means = {}
    for encoding in ('32FC1', '16UC1'):
        means[encoding, 'raw'] = _eval_metrics(tiny_checkpoint, write_bag(frames, tmp_path / f'raw{encoding}',
                                                                      depth_encoding=encoding),
                                               tmp_path / f'o_raw{encoding}', raw_topic)[0]
        for fmt in ('png', 'rvl'):
            bag = write_bag(frames, tmp_path / f'{encoding}{fmt}', depth_encoding=encoding, compressed_depth=fmt,
                            compressed_depth_max=depth_max, compressed_depth_quantization=q)
            means[encoding, fmt], result = _eval_metrics(tiny_checkpoint, bag, tmp_path / f'o{encoding}{fmt}',
                                                         packed_topic)
            assert result['gt_frames_refused'] == {} and result['num_frames'] == 2
    quantized = [Sample(f.rgb, decode_depth(*encode_depth(np.where(f.mask, f.depth, np.nan), '32FC1', 'rvl',
                                                          depth_max, q)),
                        f.intrinsics, f.mask, f.metric, f.source) for f in frames]
    means['32FC1', 'quantized'] = _eval_metrics(tiny_checkpoint, write_bag(quantized, tmp_path / 'quantized'),
                                                tmp_path / 'o_quantized', raw_topic)[0]
    for fmt in ('png', 'rvl'):
        assert means['16UC1', fmt] == means['16UC1', 'raw']
        assert means['32FC1', fmt] == means['32FC1', 'quantized']
        # GT moves by at most one step, d/A of itself (top/A here): AbsRel by at most (1 + AbsRel) * that, twice
        # for the step's curvature and float32
        eps = top / (q * (q + 1))
        raw = means['32FC1', 'raw']['depth_metric/abs_rel']
        assert abs(means['32FC1', fmt]['depth_metric/abs_rel'] - raw) <= 2 * (1 + raw) * eps
