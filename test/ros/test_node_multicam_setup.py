"""The multi-camera setup file and launch file: checked as data (the `launch` packages are not installable here)
and by starting a real node with the setup's arguments and seeing it subscribe every camera's remapped topics."""
from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from node_harness import launched

from mgeo_ros import node_params as P
from mgeo_ros.errors import BadInputError
from mgeo_ros.ros.multi_camera_config import load_setup, main

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / 'config' / 'mgeo_multi_camera.yaml'
LAUNCH = REPO / 'launch' / 'mgeo_multi_camera.launch.py'


def test_packaged_setup_has_four_cameras_with_remaps_and_valid_parameters():
    setup = load_setup(SETUP)
    assert [c.name for c in setup.cameras] == ['front', 'left', 'right', 'rear']
    remaps = dict(setup.remappings())
    assert remaps['front/image'] == '/front_camera/color/image_raw'
    assert remaps['rear/camera_info'] == '/rear_camera/color/camera_info'
    params = setup.node_parameters()
    assert params['cameras'] == ['front', 'left', 'right', 'rear']
    assert all(P.validate(k, P.coerce(k, v)) is None for k, v in params.items())


@pytest.mark.parametrize('text, fragment', [
    ('cameras: []', 'non-empty list'),
    ('cameras: [{name: a, image: /a}]', 'needs name, image and camera_info'),
    ('cameras: [{name: a, image: /a, camera_info: /ai}, {name: a, image: /b, camera_info: /bi}]', 'twice'),
    ('cameras: [{name: 1a, image: /a, camera_info: /ai}]', 'not valid names'),
    ('cameras: [{name: a, image: /a, camera_info: /ai}]\nparameters: {max_batchh: 2}', 'unknown parameter'),
    ('cameras: [{name: a, image: /a, camera_info: /ai}]\nparameters: {max_batch: -1}', 'max_batch must be >='),
])
def test_bad_setup_files_are_refused_with_the_reason(tmp_path, text, fragment):
    path = tmp_path / 'setup.yaml'
    path.write_text(text)
    with pytest.raises(BadInputError, match=fragment):
        load_setup(path)
    assert main([str(path)]) == 1


def test_launch_file_builds_the_node_from_the_setup_file():
    tree = ast.parse(LAUNCH.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description' for n in tree.body)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'Node']
    assert len(calls) == 1
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert ast.literal_eval(kw['executable']) == 'mgeo_depth_node'
    assert ast.unparse(kw['remappings']) == 'setup.remappings()'
    assert 'setup.node_parameters()' in ast.unparse(kw['parameters'])
    arguments = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == 'ARGUMENTS')
    assert {ast.literal_eval(t.elts[0]) for t in arguments.elts} >= {'setup_file', 'model', 'backend'}


def test_printed_arguments_survive_the_shells_word_splitting():
    """`$(...)` splits on white space and expands globs but keeps quotes: what is printed must need neither."""
    out = subprocess.run(['bash', '-c', f'printf "%s\\n" $({shlex.quote(sys.executable)} -m '
                          f'mgeo_ros.ros.multi_camera_config config/mgeo_multi_camera.yaml)'],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, 'PYTHONPATH': str(REPO)}).stdout.split('\n')[:-1]
    printed = subprocess.run([sys.executable, '-m', 'mgeo_ros.ros.multi_camera_config',
                              str(SETUP)], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert out[0] == '--ros-args' and len(out) == len(printed)
    params_file = Path(out[out.index('--params-file') + 1])
    params = yaml.safe_load(params_file.read_text())['/**']['ros__parameters']
    assert params == load_setup(SETUP).node_parameters()


def test_the_shipped_setup_is_found_by_name_from_any_directory(tmp_path):
    """The documented command names the shipped file, not a path from the repository root: it works wherever it
    is typed; a name that is neither a file nor shipped is refused with what to give instead."""
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    done = subprocess.run([sys.executable, '-m', 'mgeo_ros.ros.multi_camera_config', 'mgeo_multi_camera.yaml'],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    params = yaml.safe_load(Path(out[out.index('--params-file') + 1]).read_text())['/**']['ros__parameters']
    assert params == load_setup(SETUP).node_parameters()
    missing = subprocess.run([sys.executable, '-m', 'mgeo_ros.ros.multi_camera_config', 'no_such_setup.yaml'],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert missing.returncode == 1
    for word in ('no_such_setup.yaml', 'no such file', 'mgeo_multi_camera.yaml', 'give the path'):
        assert word in missing.stderr, (word, missing.stderr)


# one writer or reader process: for each of ROUNDS fresh folders, write the params file there (w) or wait until one
# appears and read it (r); any missing or partial file is printed and fails the process
CONCURRENT = """
import sys, time
from pathlib import Path
from mgeo_ros.ros.multi_camera_config import load_setup, write_params_file
role, base, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
setup = load_setup(sys.argv[4])
text = setup.params_yaml()
for k in range(rounds):
    folder = base / str(k)
    if role == 'w':
        path = write_params_file(setup, folder)
    else:
        deadline = time.monotonic() + 60
        while not (found := list(folder.glob('mgeo_multi_camera_*.yaml'))) and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert found, f'round {k}: no params file'
        path = found[0]
    got = path.read_text()
    assert got == text, f'round {k}: {len(got)} of {len(text)} characters'
print('ok')
"""


def test_params_file_is_whole_and_stays_while_processes_write_and_read_it_at_once(tmp_path):
    """Nodes started together from one setup each write the same params file while others read it: every reader
    sees the whole file, no process ever finds it missing, and none is left half-written or removed."""
    rounds, writers, readers = 150, 4, 4
    for k in range(rounds):
        (tmp_path / str(k)).mkdir()
    procs = [subprocess.Popen([sys.executable, '-c', CONCURRENT, role, str(tmp_path), str(rounds), str(SETUP)],
                              cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for role in 'w' * writers + 'r' * readers]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 and out.strip().endswith('ok') for p, out in zip(procs, outputs, strict=True)), \
        [out[-600:] for out in outputs if not out.strip().endswith('ok')]
    text = load_setup(SETUP).params_yaml()
    for k in range(rounds):
        left = sorted(p.name for p in (tmp_path / str(k)).iterdir())
        assert len(left) == 1 and (tmp_path / str(k) / left[0]).read_text() == text, left  # no private files left


@pytest.mark.ros
def test_a_node_started_from_the_setup_subscribes_every_camera_and_publishes_under_its_name(tmp_path, ros_env):
    """Started as the docs print it: `mgeo_depth_node $(python -m ...multi_camera_config FILE) -p model:=...`."""
    import rclpy
    from node_harness import node_command, stop_node

    tag = f's{os.getpid()}'
    data = yaml.safe_load(SETUP.read_text())
    data['namespace'] = f'{tag}_robot'
    for cam in data['cameras']:
        cam['image'], cam['camera_info'] = f'/{tag}/{cam["name"]}/img', f'/{tag}/{cam["name"]}/info'
    path = tmp_path / 'setup.yaml'
    path.write_text(yaml.safe_dump(data))
    node = shlex.join(node_command())
    command = (f'exec {node} $({shlex.quote(sys.executable)} -m mgeo_ros.ros.multi_camera_config {path}) '
               '-p model:=/nonexistent/model.onnx')
    log = tmp_path / 'node.log'
    proc = subprocess.Popen(['bash', '-c', command], env={**ros_env, 'PYTHONPATH': str(REPO)}, cwd=REPO,
                            stdout=log.open('w'), stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node('setup_probe', context=context)
    try:
        names = [c['name'] for c in data['cameras']]
        wanted_in = [f'/{tag}/{n}/{t}' for n in names for t in ('img', 'info')]
        wanted_out = [f'/{tag}_robot/{n}/depth/image' for n in names]

        def wired() -> bool:
            return (all(probe.count_subscribers(t) > 0 for t in wanted_in)
                    and all(probe.count_publishers(t) > 0 for t in wanted_out))
        deadline = time.monotonic() + 30
        while not wired() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert wired(), ({t: probe.count_subscribers(t) for t in wanted_in}, log.read_text()[-2000:])
        while '/nonexistent/model.onnx' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert '/nonexistent/model.onnx' in log.read_text()  # the -p after the params file wins
    finally:
        probe.destroy_node()
        context.try_shutdown()
        assert stop_node(proc) == 0


@pytest.mark.ros
def test_multi_camera_launch_file_runs_the_node(tmp_path):
    launch_ros = pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here (no ROS '
                                     'apt packages); the launch file is checked statically and its setup by a real '
                                     'node above')
    tag = f'ml{os.getpid()}'
    data = yaml.safe_load(SETUP.read_text())
    data['namespace'] = tag
    path = tmp_path / 'setup.yaml'
    path.write_text(yaml.safe_dump(data))
    arguments = {'setup_file': str(path), 'params_file': str(REPO / 'config' / 'mgeo_depth.yaml'),
                 'model': '/nonexistent.onnx'}
    with launched(LAUNCH, arguments, 'multi_launch_probe') as probe:
        deadline = time.monotonic() + 30
        topic = f'/{tag}/front/depth/image'
        while probe.count_publishers(topic) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert probe.count_publishers(topic) > 0, f'no publisher on {topic} (launch_ros {launch_ros.__name__})'
        assert probe.count_subscribers('/front_camera/color/image_raw') > 0


def test_a_camera_entry_may_set_its_own_output_scale(tmp_path):


    path = tmp_path / 'setup.yaml'
    path.write_text('cameras:\n  - {name: front, image: /f/img, camera_info: /f/info, output_scale: 0.5}\n'
                    '  - {name: rear, image: /r/img, camera_info: /r/info}\n')
    params = load_setup(path).node_parameters()
    assert params['front.output_scale'] == 0.5 and 'rear.output_scale' not in params
    path.write_text('cameras:\n  - {name: front, image: /f/img, camera_info: /f/info, output_scale: 2}\n')
    with pytest.raises(BadInputError, match=r"camera 'front': output_scale must be <= 1.0"):
        load_setup(path)
    path.write_text('cameras:\n  - {name: front, image: /f/img, camera_info: /f/info, max_depth: 5}\n')
    with pytest.raises(BadInputError, match=r"'max_depth' cannot be set per camera"):
        load_setup(path)
