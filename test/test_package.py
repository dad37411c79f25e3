"""The ROS 2 package itself: manifest, entry points, installed share files."""
import ast
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ['geometry', 'model', 'runtime', 'export', 'train', 'eval', 'ros']
REQUIREMENT_FILES = sorted(p.name for p in REPO.glob('requirements*.txt'))


def test_package_xml_is_format3_ament_python_with_declared_deps():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'mgeo_ros'
    assert root.find('export').findtext('build_type') == 'ament_python'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'rcl_interfaces', 'lifecycle_msgs', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs',
            'ament_index_python', 'launch', 'launch_ros', 'python3-numpy', 'python3-opencv',
            'python3-tqdm'} <= exec_deps
    assert 'python3-pytest' in {e.text for e in root.findall('test_depend')}


def test_package_xml_pip_hint_is_the_deployment_guides():
    """apt users read package.xml: its pip line is the one the deployment guide gives for apt ROS (keeps apt's numpy
    1.x and OpenCV), never the wheel pins of requirements-runtime.txt (numpy 2, OpenCV 5)."""
    text = (REPO / 'package.xml').read_text()
    guide = (REPO / 'docs' / 'deployment.md').read_text()
    assert 'requirements-runtime.txt' not in text
    pips = re.findall(r'pip install ([^`]+)`', text)
    assert pips, 'package.xml names no pip install line'
    for args in pips:
        assert f'pip install {args}' in guide, args


def _setup_call() -> ast.Call:
    tree = ast.parse((REPO / 'setup.py').read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')


def test_setup_declares_console_scripts_and_keeps_ros_out_of_install_requires():
    call = _setup_call()
    kw = {k.arg: k.value for k in call.keywords}
    scripts = ast.literal_eval(kw['entry_points'])['console_scripts']
    names = {s.split('=')[0].strip(): s.split('=')[1].strip() for s in scripts}
    assert names == {'mgeo_depth_node': 'mgeo_ros.ros.node:main', 'mgeo': 'mgeo_ros.cli:main'}
    runtime = _names(_setup_constant('RUNTIME'))
    assert not any(n.startswith(('ros-', 'rclpy')) for n in runtime)
    assert 'torch' not in runtime


def _setup_constant(name: str):
    tree = ast.parse((REPO / 'setup.py').read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return ast.literal_eval(node.value)


def _names(specs) -> set[str]:
    """Distribution names of requirement specifiers ('numpy>=1.24', 'ros-kilted-rclpy[fastrtps]==9.1.2')."""
    return {re.split(r'[\[<>=~!; ]', s.strip(), maxsplit=1)[0].lower() for s in specs}


def _requirement_lines(name: str) -> list[str]:
    """Requirement specifiers of one file, following -r includes."""
    out = []
    for line in (REPO / name).read_text().splitlines():
        line = line.split('#')[0].strip()
        if line.startswith('-r'):
            out += _requirement_lines(line[2:].strip())
        elif line:
            out.append(line)
    return out


def test_setup_requirements_match_the_pinned_files_per_use():
    """install_requires is requirements-runtime.txt by name; each extra is its requirement file's additions; the
    dev venv's requirements.txt holds every use (so `make test` and `make demo` keep everything)."""
    runtime = _names(_requirement_lines('requirements-runtime.txt'))
    assert _names(_setup_constant('RUNTIME')) == runtime
    assert {'numpy', 'opencv-python-headless', 'onnxruntime'} <= runtime and 'torch' not in runtime
    extras = _setup_constant('EXTRAS')
    for extra in ('train', 'export', 'tensorrt'):
        assert _names(extras[extra]) == _names(_requirement_lines(f'requirements-{extra}.txt')) - runtime, extra
    assert 'cuda-python' in _names(extras['tensorrt']) and 'torch' not in _names(extras['tensorrt'])
    dev = _names(_requirement_lines('requirements.txt'))
    for name in REQUIREMENT_FILES:
        if name != 'requirements-ros-jazzy.txt':
            assert _names(_requirement_lines(name)) <= dev, name


def test_every_layer_is_a_real_subpackage():
    for layer in LAYERS:
        assert (REPO / 'mgeo_ros' / layer / '__init__.py').is_file(), layer


def test_requirements_are_pinned():
    for name in REQUIREMENT_FILES:
        for line in _requirement_lines(name):
            assert '==' in line, f'{name}: {line} is not pinned'
    assert 'ros-kilted-rclpy[fastrtps]==' in (REPO / 'requirements-ros.txt').read_text()
    assert 'ros-jazzy-rclpy[fastrtps]==' in (REPO / 'requirements-ros-jazzy.txt').read_text()


def _resolved_install_set(target: str, tmp_path: Path) -> set[str]:
    """What `pip install <target>` would install into an empty venv: pip's dry-run report (--ignore-installed makes
    this venv's packages invisible to the resolver)."""
    report = tmp_path / 'report.json'
    result = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed',
                             '--no-build-isolation', '--quiet', '--report', str(report), target],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {i['metadata']['name'].lower() for i in json.loads(report.read_text())['install']}


def test_pip_install_dot_resolves_without_torch(tmp_path):
    """`pip install .` brings the ONNX Runtime node's needs and no training stack; `.[train]` does bring torch,
    so the check can tell the two apart."""
    plain = _resolved_install_set('.', tmp_path)
    assert {'mgeo_ros', 'numpy', 'onnxruntime', 'opencv-python-headless'} <= plain
    assert not {'torch', 'scipy', 'tensorboard', 'onnx', 'matplotlib'} & plain, sorted(plain)
    assert 'torch' in _resolved_install_set('.[train]', tmp_path)


@pytest.mark.colcon
def test_installed_share_has_marker_launch_and_config():
    """Run by `colcon test` against the colcon install space: data_files really land in share/."""
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory('mgeo_ros'))
    assert (share / 'package.xml').is_file()
    assert (share / 'config' / 'fastdds_large_frames.xml').is_file()
    prefix = share.parents[1]
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'mgeo_ros').is_file()
    if 'COLCON_PREFIX_PATH' in os.environ or (prefix / 'lib' / 'mgeo_ros').exists():
        assert (prefix / 'lib' / 'mgeo_ros' / 'mgeo_depth_node').exists()
        assert (prefix / 'lib' / 'mgeo_ros' / 'mgeo').exists()
