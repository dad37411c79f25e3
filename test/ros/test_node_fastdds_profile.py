"""The node loads the large-frames Fast DDS profile itself unless the user set one: started with neither profile
variable in its environment, it still receives a best-effort 640x480 stream from another process (without the
profile, Fast DDS's default shared-memory segment let 3 of 148 such frames through)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mgeo_ros.ros.fastdds import NEW, OLD, apply_default_profile, profile_env, profile_path


def test_the_shipped_profile_is_found_and_applied_only_when_unset(tmp_path):
    path = profile_path()
    assert path is not None and path.name == 'fastdds_large_frames.xml' and 'segment_size' in path.read_text()
    env: dict[str, str] = {}
    added = apply_default_profile(env)
    assert added == profile_env(str(path)) and env == added and Path(next(iter(env.values()))).is_file()
    for name in (NEW, OLD):
        mine = {name: str(tmp_path / 'mine.xml')}
        assert apply_default_profile(mine) == {} and mine == {name: str(tmp_path / 'mine.xml')}


@pytest.mark.ros
def test_a_node_started_without_the_variable_sends_640x480_depth_across_processes(tmp_path, ros_env, tiny_checkpoint):
    """The sender's profile is what counts (measured: a receiver's own profile does not rescue a stream sent
    without one), so the node's outputs are what the profile it loads itself must carry."""
    from node_harness import NodeHarness, camera_intrinsics, smooth_rgb, start_node, stop_node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    env = {k: v for k, v in ros_env.items() if k not in (NEW, OLD)}
    ns = f'/fdds{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(tiny_checkpoint), 'num_tokens': 64, 'diagnostics_period': 0.2}, env=env,
                      log_path=log)
    harness = NodeHarness(ns, name='fastdds_probe', outputs=())
    got: set = set()
    harness.node.create_subscription(Image, f'{ns}/depth/image', lambda m: got.add(m.header.stamp.nanosec),
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        def ready() -> bool:
            return (harness.latest_diagnostics().get('model_status') == 'ready'
                    and harness.image_pub.get_subscription_count() > 0)
        assert harness.wait_for(ready, 90), log.read_text()[-2000:]
        time.sleep(0.5)
        rgb, intrinsics = smooth_rgb(640, 480), camera_intrinsics(640, 480)
        frames = 30
        for i in range(frames):  # slower than the node, so it publishes (nearly) every frame
            harness.publish(rgb, (1, i + 1), intrinsics=intrinsics)
            time.sleep(0.25)

        def published() -> int:
            return int(harness.latest_diagnostics().get('frames_published', 0))
        harness.wait_for(lambda: published() >= frames and len(got) >= published(), 5)
        print(f'\nnode without a profile variable: {len(got)} of {published()} published 640x480 depth images '
              'crossed to a best-effort subscriber')
        assert published() >= frames // 2, log.read_text()[-2000:]
        assert len(got) >= 0.8 * published()
    finally:
        harness.close()
        stop_node(proc)


@pytest.mark.parametrize('launch_file', sorted((Path(__file__).resolve().parents[2] / 'launch').glob('*.launch.py')),
                         ids=lambda p: p.name)
def test_the_launch_files_pass_the_profile_to_the_node(launch_file):
    """launch_ros is not installable here, so the launch files are read, not run: the Node gets the profile env."""
    import ast

    tree = ast.parse(launch_file.read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'Node']
    assert len(nodes) == 1
    env = {k.arg: k.value for k in nodes[0].keywords}.get('additional_env')
    assert env is not None and 'apply_default_profile' in ast.unparse(env)
