"""`mgeo demo` end to end on a short sequence: bag -> node (own process) over ROS 2 -> recording -> report."""
import json
import subprocess
import sys

import pytest

from mgeo_ros.runtime.predictor import default_model_path


@pytest.mark.ros
def test_demo_runs_the_node_on_a_bag_and_writes_the_report(tmp_path, ros_env):
    model = default_model_path()
    assert (model / 'config.json').is_file(), f'the packaged default model is missing at {model}'
    out = tmp_path / 'demo'
    proc = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', 'demo', '--out', str(out), '--frames', '6',
                           '--size', '160x120', '--rate', '2'], env=ros_env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / 'metrics.json').read_text())
    assert report['latency']['frames_sent'] == 6
    assert report['latency']['depth_received'] >= 3
    assert report['frames'], 'no frame was evaluated'
    frame = report['frames'][0]
    assert 0.0 <= frame['metric']['abs_rel'] < 10.0 and 0.0 <= frame['metric']['delta1'] <= 1.0
    assert report['mean']['constant_depth_m'] > 0.5
    for name in ('depth_and_error.png', 'input_depth_cloud.png', 'summary.txt'):
        assert (out / name).stat().st_size > 0, name
    assert 'mgeo demo summary' in proc.stdout
