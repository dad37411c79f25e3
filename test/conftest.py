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


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory) -> Path:
    """The tiny model exported at runtime_models.TINY_SIZE: here with torch, or read from MGEO_RUNTIME_MODELS in the
    torch-free Jazzy job."""
    import runtime_models

    return runtime_models.tiny_onnx(tmp_path_factory.mktemp('tiny_onnx'))


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder of the tiny preset (seed 0), for the torch backend."""
    import torch

    from mgeo_ros.model import build_model, preset, save_checkpoint

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp('tiny_checkpoint') / 'tiny'
    save_checkpoint(build_model(preset('tiny')), str(out))
    return out


@pytest.fixture(scope='module', params=['torchscript', 'dynamo'])
def authors_file(request, model, tmp_path_factory) -> str:
    """The module's `model` fixture exported in the MoGe authors' dynamic ONNX layout, by each of the two exporters."""
    from authors_onnx import export_authors_layout

    path = tmp_path_factory.mktemp('authors') / f'moge_{request.param}.onnx'
    return str(export_authors_layout(model, path, request.param, opset=14))
