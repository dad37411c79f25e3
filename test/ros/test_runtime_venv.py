"""Facts of the torch-free runtime venv (the Jazzy job, `make test-jazzy`): selected only there by its marker."""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

pytestmark = pytest.mark.runtime_venv


def test_torch_cannot_be_imported_here():
    """The node's ONNX Runtime path must not need torch, so this venv must not have it at all."""
    result = subprocess.run([sys.executable, '-c', 'import torch'], capture_output=True, text=True)
    assert result.returncode != 0, 'torch imported in the runtime venv'
    assert "No module named 'torch'" in result.stderr
    installed = {(d.metadata['Name'] or '').lower() for d in md.distributions()}
    assert not {'torch', 'scipy', 'onnx', 'tensorboard'} & installed


def test_this_is_ros2_jazzy_on_python312():
    """rclpy 7.x is Jazzy's (Kilted is 9.x): the job tests the LTS distro robots run, not the dev venv's."""
    assert sys.version_info[:2] == (3, 12)
    assert md.version('ros-jazzy-rclpy').startswith('7.')
    import rclpy

    assert rclpy.__file__.startswith(sys.prefix)
