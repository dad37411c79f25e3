"""Ctrl-C ends mgeo_depth_node well under a second, with a frame inside the model: standalone (SIGINT to the
process) and the way `ros2 launch mgeo_ros mgeo_depth.launch.py` runs and stops it.

launch_ros is not installable here, so the launch case reproduces what it does with our launch file: the command
line launch_ros builds from it (node name, namespace, params files, remaps), stdout/stderr on a pseudo-terminal
(`emulate_tty=True`, `output='screen'`), and the SIGINTs a Ctrl-C delivers (one from the terminal to the process
group, one from launch itself when it runs non-interactively). launch escalates to SIGTERM after 5 s.
"""
from __future__ import annotations

import ast
import os
import pty
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import yaml
from node_harness import REPO, NodeHarness, node_command, start_node

pytestmark = pytest.mark.ros

W, H = 640, 480
LAUNCH = REPO / 'launch' / 'mgeo_depth.launch.py'
CONFIG = REPO / 'config' / 'mgeo_depth.yaml'
# Measured here (2 loaded cores): 0.2-0.4 s. The bound is what matters to a user: well before launch escalates to
# SIGTERM (5 s), on a loaded CI machine as on a fast one; a node that waited for the frame (seconds) fails it.
LIMIT_S = 4.0
# The packaged default model at a high token budget on the CPU (no GPU is made visible, so a fast GPU cannot finish
# the frame first): a frame takes seconds, so SIGINT lands mid-inference.
PARAMS = {'num_tokens': 2400, 'diagnostics_period': 0.2}
CPU_ONLY = dict(os.environ, CUDA_VISIBLE_DEVICES='')


def _launch_node_kwargs() -> dict:
    tree = ast.parse(LAUNCH.read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'Node')
    return {k.arg: k.value for k in call.keywords}


def _frame_in_flight(harness: NodeHarness) -> None:
    """Publish one frame and return once the node has it (its worker is then inside the model)."""
    from mgeo_ros.geometry import Intrinsics

    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    harness.publish(rgb, (9000, 1), intrinsics=Intrinsics(500.0, 500.0, W / 2, H / 2, W, H))
    assert harness.wait_for(lambda: int(harness.latest_diagnostics().get('frames_received', 0)) >= 1, 15)
    time.sleep(0.3)
    assert int(harness.latest_diagnostics().get('frames_published', 0)) == 0, 'the frame finished too soon'


def _time_exit(proc: subprocess.Popen, send) -> float:
    start = time.monotonic()
    send()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail('the node did not exit within 10 s of SIGINT')
    return time.monotonic() - start


def test_sigint_standalone_exits_well_under_a_second_mid_inference(tmp_path):
    ns = f'/sig{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, PARAMS, env=CPU_ONLY, log_path=log)
    harness = NodeHarness(ns, 'sigint_harness')
    try:
        harness.wait_ready(proc, timeout=120)
        _frame_in_flight(harness)
        elapsed = _time_exit(proc, lambda: proc.send_signal(signal.SIGINT))
    finally:
        harness.close()
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert elapsed < LIMIT_S, f'exit took {elapsed:.2f} s'
    assert 'Traceback' not in text and 'unexpected error' not in text, text[-2000:]


def test_sigint_the_way_launch_delivers_it(tmp_path):
    kwargs = _launch_node_kwargs()
    # what this test reproduces is what the launch file asks launch_ros for
    assert ast.literal_eval(kwargs['emulate_tty']) is True and ast.literal_eval(kwargs['output']) == 'screen'
    assert ast.literal_eval(kwargs['name']) == 'mgeo_depth_node'
    remapped = {ast.literal_eval(t.elts[0]) for t in kwargs['remappings'].elts}
    assert remapped == {'image', 'camera_info'}

    ns = f'/siglaunch{os.getpid()}'
    overrides = tmp_path / 'launch_params.yaml'  # launch_ros writes a dict of parameters to a file like this
    overrides.write_text(yaml.safe_dump({'/**': {'ros__parameters': PARAMS}}))
    command = node_command() + [
        '--ros-args', '-r', '__node:=mgeo_depth_node', '-r', f'__ns:={ns}',
        '--params-file', str(CONFIG), '--params-file', str(overrides),
        '-r', f'image:={ns}/cam/image_raw', '-r', f'camera_info:={ns}/cam/camera_info']
    master, slave = pty.openpty()
    # its own process group: the "terminal" Ctrl-C reaches only it
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=str(REPO),
                            env=CPU_ONLY, start_new_session=True)
    os.close(slave)
    output: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, output), daemon=True)
    reader.start()
    harness = NodeHarness(ns, 'sigint_launch_harness')
    try:
        harness.wait_ready(proc, timeout=120)
        _frame_in_flight(harness)

        def ctrl_c() -> None:
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's, to the whole foreground group
            time.sleep(0.02)
            proc.send_signal(signal.SIGINT)  # launch's own (non-interactive shutdown)

        elapsed = _time_exit(proc, ctrl_c)
    finally:
        harness.close()
        if proc.poll() is None:
            proc.kill()
    reader.join(2)
    text = b''.join(output).decode(errors='replace')
    assert f'{ns.lstrip("/")}.mgeo_depth_node' in text  # the node ran under launch's name and namespace
    assert f'listening on {ns}/cam/image_raw' in text  # with its remaps
    assert proc.returncode == 0, text[-2000:]
    assert elapsed < LIMIT_S, f'exit took {elapsed:.2f} s (launch escalates to SIGTERM after 5 s)'
    assert 'Traceback' not in text and 'unexpected error' not in text, text[-2000:]


def _drain(fd: int, into: list[bytes]) -> None:
    """Read the pseudo-terminal until the child closes it (a full pty buffer would block the child's writes)."""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        into.append(chunk)
    os.close(fd)
