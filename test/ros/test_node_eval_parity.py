"""`mgeo eval --params-file` scores what the node publishes: a bag replayed into the node (its own process, started
with a params file that turns the filters and the scale smoothing on) gives, frame for frame, the depth that
`mgeo eval` computes with the same file, and the same metrics."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from node_harness import REPO, node_command, stop_node

pytestmark = pytest.mark.ros

FRAMES = 6
# Filters that remove pixels of the tiny random model's depth (asserted below), scale smoothing that makes each
# frame depend on the ones before it, and one ONNX Runtime thread on both sides (the same float reduction order);
# reliable input so that the first frame, played as soon as the node subscribes, is not lost to discovery.
PARAMS = {'backend': 'onnxruntime', 'intra_op_threads': 1, 'input_qos': 'reliable', 'input_qos_depth': 10,
          'mask_threshold': 0.3, 'min_confidence': 0.35,
          'flying_pixel_max_jump': 0.02, 'flying_pixel_max_view_angle': 80.0, 'scale_smoothing': 0.6}


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    from runtime_models import TINY_SIZE

    from mgeo_ros.train.data import render_sequence, write_bag

    out = tmp_path_factory.mktemp('parity')
    return write_bag(render_sequence(5, FRAMES, size=TINY_SIZE), out / 'bag', rate_hz=10.0)


def _params_file(path, max_depth: float):
    # `/**`: the node runs in a test namespace, which a plain `mgeo_depth_node:` key would not address
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': {**PARAMS, 'max_depth': max_depth}}}))
    return path


def _recorded_depths(record) -> list[np.ndarray]:
    """The node's depth images in stamp order."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from mgeo_ros.image_codec import image_to_numpy
    from mgeo_ros.ros.bag_player import message_class

    frames = []
    with Reader(record) as reader:
        for connection, _, raw in reader.messages():
            msg = deserialize_message(bytes(raw), message_class(connection.msgtype))
            frames.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, image_to_numpy(msg).copy()))
    return [depth for _, depth in sorted(frames, key=lambda f: f[0])]


def test_eval_with_the_node_params_file_scores_the_published_depth(bag, tiny_onnx, tmp_path, ros_env):
    from mgeo_ros.eval.evaluate import frame_metrics
    from mgeo_ros.train.data import BagDataset

    dataset = BagDataset(bag)
    assert len(dataset) == FRAMES
    medians = [float(np.nanmedian(dataset[i].depth)) for i in range(FRAMES)]
    params = _params_file(tmp_path / 'node.yaml', max_depth=round(1.5 * float(np.median(medians)), 2))
    ns = f'/parity{os.getpid()}'
    log = open(tmp_path / 'node.log', 'w')  # noqa: SIM115 (closed below)
    node = subprocess.Popen(node_command() + ['--ros-args', '-r', f'__ns:={ns}', '--params-file', str(params),
                                              '-p', f'model:={tiny_onnx}'],
                            env=ros_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    record = tmp_path / 'record'
    try:
        # 2 frames/s: the tiny model keeps up on a loaded machine, so the node's newest-frame slot drops nothing and
        # its scale smoothing sees every frame, as eval's does
        replay = subprocess.run(
            [sys.executable, '-m', 'mgeo_ros.cli', 'replay', str(bag), '--rate', '0.2', '--no-progress',
             '--topics', '/camera/image_raw', '/camera/camera_info',
             '--remap', f'/camera/image_raw:={ns}/image', '--remap', f'/camera/camera_info:={ns}/camera_info',
             '--wait-subscribers', '1', '--wait-timeout', '60', '--record', str(record),
             '--record-topics', f'{ns}/depth/image', '--linger', '4'],
            env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=180)
    finally:
        code = stop_node(node)
        log.close()
    node_log = (tmp_path / 'node.log').read_text()
    assert replay.returncode == 0, replay.stdout + replay.stderr + node_log[-3000:]
    assert code == 0, node_log[-3000:]
    assert '(raw, reliable)' in node_log, node_log[-3000:]  # the node read the params file
    published = _recorded_depths(record)
    assert len(published) == FRAMES, node_log[-3000:]

    out = tmp_path / 'eval'
    result = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', 'eval', str(tiny_onnx), '--data', str(bag),
                             '--params-file', str(params), '--gt-intrinsics', '--out', str(out), '--quiet',
                             '--report-frames', '0', '--align-anchors', '32'],
                            env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    assert header.startswith('node parameters: backend=onnxruntime') and 'min_confidence=0.35' in header, header
    scored = json.loads((out / 'metrics.json').read_text())
    assert scored['node_parameters']['min_confidence'] == PARAMS['min_confidence']
    assert scored['params_files'] == [str(params)]
    rows = scored['runs']['gt_intrinsics']['frames']
    assert len(rows) == FRAMES

    from mgeo_ros import node_params
    from mgeo_ros.eval.node_frames import NodeFrames, node_model
    from mgeo_ros.runtime import Predictor

    cfg = node_params.node_settings([params])
    predictor = Predictor(str(tiny_onnx), backend='onnxruntime', mask_threshold=cfg['mask_threshold'], threads=1)
    frames = NodeFrames(node_model(predictor, tiny_onnx), cfg)
    plain = NodeFrames(node_model(predictor, tiny_onnx), node_params.defaults())
    removed = 0
    for i, depth in enumerate(published):
        sample = dataset[i]
        ours = frames.predict(sample.rgb, sample.intrinsics).depth
        # same model, backend, thread count, decoded pixels and code on both sides: what is left is float32 rounding
        # of the intrinsics (the camera_info's doubles through ROS against the bag reader's)
        np.testing.assert_array_equal(np.isnan(depth), np.isnan(ours), err_msg=f'frame {i}: validity')
        np.testing.assert_allclose(depth, ours, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=f'frame {i}')
        removed += int(np.isnan(depth).sum() - np.isnan(plain.predict(sample.rgb, sample.intrinsics).depth).sum())
        expected = frame_metrics(depth, None, sample, max_anchors=32)
        for key in ('depth_metric/abs_rel', 'depth_metric/delta1', 'depth_scale/abs_rel', 'boundary_f1'):
            # metrics of the same depth up to the rounding above (the affine fit is not used by these keys)
            assert rows[i][key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6, nan_ok=True), (i, key)
    assert removed > 0  # the params file's filters invalidate pixels the defaults keep
