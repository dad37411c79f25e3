"""`mgeo eval --scale-anchor`: a tiny random checkpoint on a bag that carries sparse depth and LaserScan anchors
(2 % noise, as the demo's); the anchored rows sit beside the model's own and the oracle-aligned ones, sources fall
back in the order given, and unusable anchors leave the model's scale with the reason."""
from __future__ import annotations

import json

import pytest
import torch

from mgeo_ros.cli import main
from mgeo_ros.errors import BadInputError
from mgeo_ros.eval.anchored import AnchorSources, parse_extrinsics
from mgeo_ros.train.data.synth.anchors import ANCHOR_DEPTH_TOPIC, ANCHOR_SCAN_TOPIC

SIZE = (96, 72)
FAST = ['--backend', 'torch', '--num-tokens', '300', '--align-anchors', '32', '--quiet', '--report-frames', '0',
        '--gt-intrinsics']


@pytest.fixture(scope='module')
def anchored_bag(tmp_path_factory):
    from mgeo_ros.train.data import render_sequence, write_bag
    from mgeo_ros.train.data.synth.anchors import anchor_bag_topics

    frames = render_sequence(11, 4, size=SIZE)
    topics, messages = anchor_bag_topics('camera_optical_frame', seed=11, count=200)
    return write_bag(frames, tmp_path_factory.mktemp('anchored') / 'bag', storage='mcap', rate_hz=10.0,
                     extra_topics=topics, extra_messages=messages)


def _run(model, bag, out, *extra) -> dict:
    torch.set_num_threads(1)
    assert main(['eval', str(model), '--data', str(bag), '--out', str(out), *FAST, *extra]) == 0
    return json.loads((out / 'metrics.json').read_text())


def test_depth_anchors_give_each_frame_its_scale(tiny_checkpoint, anchored_bag, tmp_path, capsys):
    result = _run(tiny_checkpoint, anchored_bag, tmp_path / 'out', '--scale-anchor', f'depth:{ANCHOR_DEPTH_TOPIC}',
                  '--scale-anchor', f'scan:{ANCHOR_SCAN_TOPIC}')
    anchored = result['anchored']['gt_intrinsics']
    assert anchored['sources'] == ['depth', 'scan', 'model']
    assert anchored['frames_per_source'] == {'depth': 4, 'scan': 0, 'model': 0}
    model = result['runs']['gt_intrinsics']
    for own, frame in zip(model['frames'], anchored['frames']):
        assert frame['scale_source'] == 'depth' and frame['anchor_matched'] >= 20
        # the anchored depth is the model's times the fit's factor (float32 products)
        assert frame['metric_scale'] == pytest.approx(own['metric_scale'] * frame['anchor_factor'], rel=1e-6)
        # scale-invariant metrics do not see a global factor (float32 rounding of the scaled depth)
        assert frame['depth_scale/abs_rel'] == pytest.approx(own['depth_scale/abs_rel'], rel=1e-4)
    # A random model's own scale is far off; 200 GT anchors with 2 % noise put the scale near the oracle's, so the
    # metric AbsRel drops to about the oracle-aligned one (the fit and the oracle use different robust estimators).
    assert anchored['mean']['depth_metric/abs_rel'] < model['mean']['depth_metric/abs_rel']
    assert anchored['mean']['depth_metric/abs_rel'] < 1.3 * model['mean']['depth_scale/abs_rel']
    printed = capsys.readouterr().out
    assert 'anchored (gt_intrinsics)' in printed
    assert 'frames per source: depth 4, scan 0, model 0' in printed


def test_unusable_anchors_keep_the_model_scale_with_the_reason(tiny_checkpoint, anchored_bag, tmp_path, capsys):
    # the scan sensor turned 180 degrees about the optical y axis: every point behind the camera (given as the node
    # parameter: what --scale-anchor-extrinsics leaves out comes from the node's parameters)
    result = _run(tiny_checkpoint, anchored_bag, tmp_path / 'out', '--scale-anchor', f'scan:{ANCHOR_SCAN_TOPIC}',
                  '--param', 'scale_anchor_extrinsics=0 0 0 0 1 0 0')
    anchored = result['anchored']['gt_intrinsics']
    assert anchored['frames_per_source'] == {'scan': 0, 'model': 4}
    assert anchored['last_reasons'] == {'scan': 'all behind the camera'}
    model = result['runs']['gt_intrinsics']['mean']
    assert anchored['mean']['depth_metric/abs_rel'] == pytest.approx(model['depth_metric/abs_rel'], rel=1e-6)
    assert 'last not usable: scan: all behind the camera' in capsys.readouterr().out


def test_scale_anchor_mistakes_are_named(tiny_checkpoint, anchored_bag, tmp_path, capsys):
    with pytest.raises(BadInputError, match='7 finite numbers'):
        parse_extrinsics('1,2,3')
    with pytest.raises(BadInputError, match='twice'):
        AnchorSources.from_specs([f'scan:{ANCHOR_SCAN_TOPIC}', 'scan:/other'], anchored_bag, 'camera_optical_frame')
    with pytest.raises(BadInputError, match='--data must be a bag'):
        AnchorSources.from_specs([f'scan:{ANCHOR_SCAN_TOPIC}'])
    assert AnchorSources.from_specs(['ground:0.4,10']).settings.camera_height == 0.4  # ground needs no bag
    assert main(['eval', str(tiny_checkpoint), '--data', str(anchored_bag), '--out', str(tmp_path / 'out'), *FAST,
                 '--scale-anchor', 'lidar:/scan']) == 1
    assert 'expected SOURCE:TOPIC' in capsys.readouterr().err
