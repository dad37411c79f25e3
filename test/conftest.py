"""Shared test setup: ROS traffic stays on this host, on a domain of this run's own."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(5 + os.getpid() % 90))
# the repository (mgeo_ros) and test/ itself (the shared helpers: node_harness, runtime_models, ...), which the
# tests in test/<layer>/ import by name
for _path in (REPO, REPO / 'test'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from mgeo_ros.ros.fastdds import profile_env  # noqa: E402 (needs the repo on the path)

# the large-frames profile, under the name the installed Fast DDS reads (FASTRTPS_... on Fast DDS 2.x: Jazzy)
_PROFILE = os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', str(REPO / 'config' / 'fastdds_large_frames.xml'))
for _name, _value in profile_env(_PROFILE).items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO


@pytest.fixture
def ros_env() -> dict:
    """Environment for child processes that start ROS: same localhost-only domain as this test run."""
    env = dict(os.environ)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return env
