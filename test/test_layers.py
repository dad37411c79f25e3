"""The layers hold: every import inside a layer of mgeo_ros/ goes only where the layer table of docs/architecture.md
allows (the table is read from the document, so the document stays true).

Imports are read from the source (AST, every `import`/`from` wherever it sits, lazy ones included), so nothing is
executed. `crossings(root)` takes a package tree so the test can prove it catches a planted crossing.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'mgeo_ros'
ARCHITECTURE = REPO / 'docs' / 'architecture.md'
# top-level modules every layer may use: error types, the image and depth codecs, argument checks and bag opening (no
# layer of their own)
COMMON = {'errors', 'image_codec', 'depth_codec', 'cli_args', 'bag_files', 'node_params'}
ROS_MODULES = ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'geometry_msgs', 'rcl_interfaces',
               'builtin_interfaces', 'lifecycle_msgs', 'launch', 'launch_ros', 'ament_index_python')


def layer_table(text: str) -> tuple[dict[str, set[str]], set[str], set[tuple[str, str]]]:
    """From the architecture document's table: the layers each layer may import, the layers that may import ROS
    packages ('yes'), and (layer, ROS package) exceptions named in backticks in an otherwise 'no' cell."""
    allowed: dict[str, set[str]] = {}
    ros_allowed: set[str] = set()
    exceptions: set[tuple[str, str]] = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        name = re.fullmatch(r'`(\w+)/`', cells[0]) if len(cells) == 4 else None
        if name is None:
            continue
        layer = name.group(1)
        allowed[layer] = set(re.findall(r'`([\w.]+)`', cells[2]))
        if cells[3].startswith('yes'):
            ros_allowed.add(layer)
        exceptions |= {(layer, pkg) for pkg in re.findall(r'`(\w+)`', cells[3])}
    return allowed, ros_allowed, exceptions


ALLOWED, ROS_ALLOWED, ROS_EXCEPTIONS = layer_table(ARCHITECTURE.read_text())


def _imports(path: Path, package_dir: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in one file, relative imports resolved; `from m import x` gives 'm.x'
    (x may be a submodule or a name in m)."""
    rel = path.relative_to(package_dir.parent).with_suffix('')
    parts = list(rel.parts)
    here = parts[:-1]                                  # the package a relative import starts from
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ''
            out += [(node.lineno, f'{module}.{a.name}') for a in node.names]   # a.name may be a submodule
    return out


def _target(module: str) -> str | None:
    """'mgeo_ros.train.data.folder' -> 'train.data'; 'mgeo_ros.model' -> 'model'; other packages -> None."""
    parts = module.split('.')
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    if parts[1] == 'train' and len(parts) > 2 and parts[2] == 'data':
        return 'train.data'
    return parts[1]


def crossings(package_dir: Path) -> list[str]:
    """Every import in a layer that the layer table forbids, as 'file:line layer -> module' lines."""
    found = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((package_dir / layer).rglob('*.py')):
            for line, module in _imports(path, package_dir):
                where = f'{path.relative_to(package_dir.parent)}:{line} {layer} -> {module}'
                target = _target(module)
                if target is not None:
                    own = target == layer or target.startswith(layer + '.')
                    if not (own or target in allowed or target in COMMON):
                        found.append(where)
                elif module.split('.')[0] in ROS_MODULES and layer not in ROS_ALLOWED \
                        and (layer, module.split('.')[0]) not in ROS_EXCEPTIONS:
                    found.append(where)
    return found


def test_the_architecture_document_names_every_layer():
    assert set(ALLOWED) >= {'geometry', 'model', 'runtime', 'export', 'train', 'eval', 'ros'}
    assert ALLOWED['geometry'] == set() and ALLOWED['train'] == {'geometry', 'model'}
    assert ROS_ALLOWED >= {'ros'} and 'runtime' not in ROS_ALLOWED
    layers = {p.name for p in (REPO / PACKAGE).iterdir() if (p / '__init__.py').is_file()} - {'models'}
    assert layers <= set(ALLOWED), f'layers missing from docs/architecture.md: {layers - set(ALLOWED)}'


def test_the_package_keeps_to_its_layers():
    assert crossings(REPO / PACKAGE) == []


@pytest.mark.parametrize('layer,planted', [
    ('train', 'import mgeo_ros.eval\n'),
    ('train', 'from mgeo_ros.eval.metrics import depth_metrics\n'),
    ('train', 'def f():\n    from ..eval import metrics\n'),       # lazy and relative
    ('runtime', 'from mgeo_ros import ros\n'),
    ('geometry', 'import rclpy\n'),
    ('eval', 'from mgeo_ros.train.trainer import train\n'),           # eval may read train.data, nothing else
    ('bench', 'from mgeo_ros.train.trainer import train\n'),          # benchmarks: every layer but train
    ('ros', 'from mgeo_ros.bench.node import run_node_bench\n'),      # nothing below bench imports it
])
def test_a_planted_crossing_fails(tmp_path, layer, planted):
    copy = tmp_path / PACKAGE
    shutil.copytree(REPO / PACKAGE, copy, ignore=shutil.ignore_patterns('__pycache__', 'models'))
    assert crossings(copy) == []
    (copy / layer / 'planted.py').write_text(planted)
    found = crossings(copy)
    assert len(found) == 1 and found[0].startswith(f'{PACKAGE}/{layer}/planted.py:'), found


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_cycles(package_dir: Path, under: str) -> list[list[str]]:
    """Import circles among the modules of `under` (e.g. 'mgeo_ros.train'), lazy imports included: the strongly
    connected components of more than one module (Tarjan)."""
    files = {_module_name(p, package_dir): p for p in package_dir.rglob('*.py')}
    mods = {m for m in files if m == under or m.startswith(under + '.')}
    graph: dict[str, set[str]] = {}
    for m in mods:
        targets = set()
        for _, name in _imports(files[m], package_dir):
            while name and name not in mods:            # 'a.b.func' -> 'a.b'
                name = name.rpartition('.')[0]
            if name and name != m:
                targets.add(name)
        graph[m] = targets
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles




def test_train_has_no_import_circle():
    """No import circle inside train/ (such as batching -> config -> holdout -> batching)."""
    assert import_cycles(REPO / PACKAGE, f'{PACKAGE}.train') == []


def test_no_new_import_circle_in_the_package():
    assert import_cycles(REPO / PACKAGE, PACKAGE) == []


def test_the_circle_finder_sees_a_circle(tmp_path):
    copy = tmp_path / PACKAGE
    shutil.copytree(REPO / PACKAGE, copy, ignore=shutil.ignore_patterns('__pycache__', 'models'))
    with (copy / 'train' / 'data' / 'fit.py').open('a') as f:
        f.write('\n\ndef _late():\n    from mgeo_ros.train.holdout import METRIC_KEYS  # noqa\n')
    assert import_cycles(copy, f'{PACKAGE}.train') != []


# Test helpers at test/ that start ROS: a ROS-free layer's tests must not need them.
ROS_TEST_HELPERS = ('node_harness', 'ros_echo_child', 'ros_cloud_reference', 'node_measure', 'node_measure_multicam')


def ros_in_layer_tests(test_dir: Path) -> list[str]:
    """Imports of ROS (rclpy, messages, mgeo_ros.ros, the ROS test helpers) in the tests of the layers that run
    without ROS (test/<layer>/ for every layer the architecture table marks 'no'), as 'file:line -> module'."""
    found = []
    for layer in sorted(set(ALLOWED) - ROS_ALLOWED):
        for path in sorted((test_dir / layer).rglob('*.py')):
            for line, module in _imports(path, test_dir):
                top = module.split('.')[0]
                if top in ROS_MODULES or top in ROS_TEST_HELPERS or module.startswith(f'{PACKAGE}.ros'):
                    found.append(f'{path.relative_to(test_dir.parent)}:{line} -> {module}')
    return found


def test_tests_mirror_the_layers():
    """test/<layer>/ holds each layer's tests; only project-wide tests (layers, package, docs, CLI, demo, recipes)
    stay at test/ beside the shared helpers."""
    dirs = {p.name for p in (REPO / 'test').iterdir() if p.is_dir() and any(p.glob('test_*.py'))}
    assert dirs <= set(ALLOWED), f'test folders that are not layers: {dirs - set(ALLOWED)}'
    assert {'geometry', 'model', 'runtime', 'export', 'train', 'eval', 'ros'} <= dirs


def test_tests_of_ros_free_layers_run_without_ros(tmp_path):
    assert ros_in_layer_tests(REPO / 'test') == []
    planted = tmp_path / 'test' / 'runtime'
    planted.mkdir(parents=True)
    (planted / 'test_planted.py').write_text('def test_x():\n    from node_harness import start_node\n')
    assert ros_in_layer_tests(tmp_path / 'test') != []
