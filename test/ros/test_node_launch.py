"""The launch file, the parameters YAML and the RViz config agree with the node: checked statically (the `launch`
packages are not installable here), by loading the YAML into a real node, and by a real launch where launch_ros
exists."""
from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest
import yaml
from node_harness import launched, node_in_process, settled_model_status

from mgeo_ros import node_params as P

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / 'launch' / 'mgeo_depth.launch.py'
CONFIG = REPO / 'config' / 'mgeo_depth.yaml'
RVIZ = REPO / 'config' / 'mgeo_depth.rviz'


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _node_call(tree: ast.Module) -> ast.Call:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'Node']
    assert len(calls) == 1, 'the launch file starts exactly one Node'
    return calls[0]


def _kw(call: ast.Call, name: str):
    return next(k.value for k in call.keywords if k.arg == name)


def _yaml_params() -> dict:
    return yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters']


def test_launch_file_parses_and_declares_the_arguments():
    tree = _launch_tree()
    assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description' for n in tree.body)
    arguments = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == 'ARGUMENTS')
    names = {ast.literal_eval(t.elts[0]) for t in arguments.elts}
    assert {'namespace', 'image', 'camera_info', 'params_file', 'model', 'backend'} <= names


def test_launch_node_is_the_console_script_and_remaps_real_topics():
    from mgeo_ros.ros.node import INPUT_TOPICS

    call = _node_call(_launch_tree())
    assert ast.literal_eval(_kw(call, 'package')) == 'mgeo_ros'
    executable = ast.literal_eval(_kw(call, 'executable'))
    setup = ast.parse((REPO / 'setup.py').read_text())
    scripts = [ast.literal_eval(n) for n in ast.walk(setup) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.replace(' ', '').startswith(executable + '=')]
    assert scripts == [f'{executable} = mgeo_ros.ros.node:main']
    from mgeo_ros.ros import node

    assert callable(node.main)
    remaps = _kw(call, 'remappings')
    sources = {ast.literal_eval(t.elts[0]) for t in remaps.elts}
    assert sources and sources <= set(INPUT_TOPICS), sources
    overrides = next(n for n in ast.walk(_launch_tree()) if isinstance(n, ast.Tuple)
                     and all(isinstance(e, ast.Constant) for e in n.elts) and 'backend' in
                     [e.value for e in n.elts] and 'model' in [e.value for e in n.elts])
    assert {e.value for e in overrides.elts} <= set(P.SPECS)  # launch-argument overrides are real parameters


def test_yaml_documents_every_parameter_with_valid_values():
    values = _yaml_params()
    assert set(values) == set(P.SPECS), set(values) ^ set(P.SPECS)
    for name, value in values.items():
        assert P.validate(name, P.coerce(name, value)) is None, name
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.strip().split(':')[0]
        if key in P.SPECS and line.startswith('    ' + key + ':'):
            assert lines[i - 1].strip().startswith('#'), f'{key} has no comment above it'


def test_the_node_guide_documents_every_parameter_and_topic():
    from mgeo_ros.ros.node import INPUT_TOPICS, OUTPUT_TOPICS

    text = (REPO / 'docs' / 'node.md').read_text()
    missing = [name for name in list(P.SPECS) + list(INPUT_TOPICS + OUTPUT_TOPICS) if f'`{name}`' not in text]
    assert not missing, f'docs/node.md lacks {missing}'


def test_the_node_guides_topic_table_has_the_outputs_rows_of_the_table():
    """docs/node.md's outputs are the rows of ros/outputs.py (topic, type, notes), in its order, and no others."""
    from mgeo_ros.ros.outputs import OUTPUTS, markdown_rows
    from mgeo_ros.runtime.frame_stage import STAGE_ARRAYS

    lines = (REPO / 'docs' / 'node.md').read_text().splitlines()
    documented = [line for line in lines if line.startswith('| `') and ' | out | ' in line
                  and not line.startswith('| `/diagnostics`')]
    assert documented == markdown_rows(), 'docs/node.md: paste ros.outputs.markdown_rows() into the topic table'
    assert all(o.needs <= STAGE_ARRAYS for o in OUTPUTS)  # every output is made of arrays the frame stage makes


def test_rviz_config_shows_the_node_outputs():
    from mgeo_ros.ros.node import OUTPUT_TOPICS

    rviz = yaml.safe_load(RVIZ.read_text())
    topics = {d['Topic']['Value'] for d in rviz['Visualization Manager']['Displays'] if 'Topic' in d}
    assert topics and topics <= {'/camera/' + t for t in OUTPUT_TOPICS}  # launch default namespace: camera
    assert '/camera/points' in topics and '/camera/depth/image' in topics


@pytest.mark.ros
def test_node_loads_the_yaml_and_describes_every_parameter():
    from rcl_interfaces.msg import ParameterType

    with node_in_process('--params-file', str(CONFIG), '-p', 'model:=/nonexistent/model.onnx',
                         '-r', f'__ns:=/ntyaml{os.getpid()}') as node:
        for name, value in _yaml_params().items():
            if name != 'model':  # (an empty list arrives from YAML as an unset string array: coerce makes it ())
                assert P.coerce(name, node.get_parameter(name).value) == P.coerce(name, value), name
        for desc in node.describe_parameters(list(P.SPECS)):
            assert desc.description and desc.type != ParameterType.PARAMETER_NOT_SET, desc.name
        assert settled_model_status(node) == 'error' and 'does not exist' in node.stats.model_error


@pytest.mark.ros
def test_launch_file_runs_the_node(tmp_path):
    launch_ros = pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here (no ROS '
                                     'apt packages); the launch file is checked statically by the tests above')
    ns = f'ntlaunch{os.getpid()}'
    arguments = {'namespace': ns, 'params_file': str(CONFIG), 'model': '/nonexistent.onnx'}
    with launched(LAUNCH, arguments, 'launch_probe') as probe:
        deadline = time.monotonic() + 30
        found = False
        while not found and time.monotonic() < deadline:
            found = ('mgeo_depth_node', f'/{ns}') in probe.get_node_names_and_namespaces()
            time.sleep(0.2)
        assert found, f'the launched node never appeared (launch_ros {launch_ros.__name__})'


@pytest.mark.colcon
def test_installed_share_has_the_node_launch_and_configs():
    """Against the colcon install space: the launch file, params YAML and RViz view are installed."""
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory('mgeo_ros'))
    assert (share / 'launch' / 'mgeo_depth.launch.py').read_text() == LAUNCH.read_text()
    installed = yaml.safe_load((share / 'config' / 'mgeo_depth.yaml').read_text())['/**']['ros__parameters']
    assert set(installed) == set(P.SPECS)
    assert (share / 'config' / 'mgeo_depth.rviz').is_file()
