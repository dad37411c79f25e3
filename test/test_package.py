"""The ROS 2 package itself: manifest, entry points, installed share files."""
import ast
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ['geometry', 'model', 'runtime', 'export', 'train', 'eval', 'ros']


def test_package_xml_is_format3_ament_python_with_declared_deps():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'mgeo_ros'
    assert root.find('export').findtext('build_type') == 'ament_python'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'launch', 'launch_ros',
            'python3-numpy', 'python3-opencv'} <= exec_deps
    assert 'python3-pytest' in {e.text for e in root.findall('test_depend')}


def _setup_call() -> ast.Call:
    tree = ast.parse((REPO / 'setup.py').read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')


def test_setup_declares_console_scripts_and_keeps_ros_out_of_install_requires():
    call = _setup_call()
    kw = {k.arg: k.value for k in call.keywords}
    scripts = ast.literal_eval(kw['entry_points'])['console_scripts']
    names = {s.split('=')[0].strip(): s.split('=')[1].strip() for s in scripts}
    assert names == {'mgeo_depth_node': 'mgeo_ros.ros.node:main', 'mgeo': 'mgeo_ros.cli:main'}
    assert ast.literal_eval(kw['install_requires']) == ['setuptools']


def test_every_layer_is_a_real_subpackage():
    for layer in LAYERS:
        assert (REPO / 'mgeo_ros' / layer / '__init__.py').is_file(), layer


def test_requirements_are_pinned():
    for name in ('requirements.txt', 'requirements-ros.txt'):
        for line in (REPO / name).read_text().splitlines():
            line = line.split('#')[0].strip()
            if line and not line.startswith('-r'):
                assert '==' in line, f'{name}: {line} is not pinned'
    assert 'ros-kilted-rclpy[fastrtps]==' in (REPO / 'requirements-ros.txt').read_text()


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
