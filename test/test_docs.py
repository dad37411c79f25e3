"""The documentation stays true: every `mgeo ...`, `mgeo_depth_node ...` and `python -m mgeo_ros...` line of a shell
block in README.md and docs/ parses with the real parsers (the cheap ones run), relative links resolve, the
parameter table and config/*.yaml match the one declaration of the parameters, the README stays an entry page, and
no development history creeps in."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_commands import commands

from mgeo_ros import node_params as P

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
HISTORY = [r'\bissue \d+', r'\bissues? #?\d+', r'\b(first|second) part\b', r'\bfrozen copy\b', r'\bgoal was\b',
           r'\bbefore issue\b', r'\bcommit [0-9a-f]{7,}']
def ours(words: list[str]) -> list[str] | None:
    """The words from the program name on, when the line runs one of ours (also after e.g. `torchrun ... -m`)."""
    for i, word in enumerate(words):
        if word in ('mgeo', 'mgeo_depth_node'):
            return words[i:]
        if word == '-m' and i + 1 < len(words) and words[i + 1].startswith('mgeo_ros'):
            return ['python', '-m', *words[i + 1:]]
    return None


def _documented() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for words in commands(path.read_text()):
            cmd = ours(words)
            if cmd is not None:
                found.append((path.relative_to(REPO).as_posix(), cmd))
    return found


DOCUMENTED = _documented()


def test_the_docs_show_commands_of_every_kind():
    kinds = {cmd[0] if cmd[0] != 'python' else cmd[2] for _, cmd in DOCUMENTED}
    assert {'mgeo', 'mgeo_depth_node', 'mgeo_ros.node_params', 'mgeo_ros.cli'} <= kinds, kinds
    assert sum(cmd[0] == 'mgeo' for _, cmd in DOCUMENTED) >= 30


def check_mgeo(argv: list[str]) -> None:
    """Parse with the real `mgeo` parser (what `mgeo` itself builds for that subcommand); `mgeo eval`'s node
    parameters (--params-file, --param) are read and checked against the declaration as eval reads them."""
    from mgeo_ros.cli import COMMANDS, build_parser

    command = next((a for a in argv if not a.startswith('-')), None)
    assert command in COMMANDS, f'unknown subcommand {command!r}'
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f'mgeo {shlex.join(argv)}: arguments do not parse'
        return
    if command == 'eval':
        from mgeo_ros.eval.eval_cli import node_settings

        args.params_files = [REPO / p for p in args.params_files]
        node_settings(args)


def check_node(argv: list[str]) -> None:
    """The node's own options, then rcl's parser on the ROS arguments, then every -p against the declaration."""
    own = argv[:argv.index('--ros-args')] if '--ros-args' in argv else argv
    assert set(own) <= {'--lifecycle', '--help'}, f'unknown node options {own}'
    ros = argv[len(own):]
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=['mgeo_depth_node', *ros], context=context)   # raises on what rcl cannot parse
    context.try_shutdown()
    for i, word in enumerate(ros):
        if word == '-p':
            name, _, text = ros[i + 1].partition(':=')
            assert name in P.SPECS, f'-p {name}: not a parameter of the node'
            value = yaml.safe_load(text) if text else ''
            value = str(value) if P.SPECS[name].kind is str and value is not None else value
            assert P.validate(name, P.coerce(name, value)) is None, P.validate(name, P.coerce(name, value))
        if word == '--params-file':
            assert (REPO / ros[i + 1]).is_file() or Path(ros[i + 1]).is_file(), ros[i + 1]


CHEAP = ('mgeo_ros.node_params', 'mgeo_ros.ros.multi_camera_config', 'mgeo_ros.bench.sizing')


@pytest.mark.parametrize('where, cmd', DOCUMENTED, ids=[f'{w}:{" ".join(c)[:60]}' for w, c in DOCUMENTED])
def test_a_documented_command_parses(where, cmd, tmp_path):
    if cmd[0] == 'mgeo':
        check_mgeo(cmd[1:])
    elif cmd[0] == 'mgeo_depth_node':
        check_node(cmd[1:])
    elif cmd[2] == 'mgeo_ros.cli':
        check_mgeo(cmd[3:])
    elif cmd[2] == 'mgeo_ros.ros.node':
        check_node(cmd[3:])
    elif cmd[2] in CHEAP:
        args, copies = list(cmd[1:]), {}
        if '--update' in args:   # rewrite copies, never the repository: today's files must come out unchanged
            for i in range(args.index('--update') + 1, len(args)):
                copies[tmp_path / Path(args[i]).name] = (REPO / args[i]).read_text()
                (tmp_path / Path(args[i]).name).write_text(copies[tmp_path / Path(args[i]).name])
                args[i] = str(tmp_path / Path(args[i]).name)
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.returncode == 0 and (done.stdout or copies), done.stderr
        assert all(path.read_text() == text for path, text in copies.items())
    else:
        pytest.fail(f'{where}: no check for {cmd[:3]}; add one to test_docs.py')


def test_the_parser_check_catches_a_wrong_command():
    with pytest.raises(AssertionError):
        check_mgeo(['export', 'models/x', '--size', '640x480'])           # --output is required
    with pytest.raises(AssertionError):
        check_node(['--ros-args', '-p', 'num_token:=300'])               # misspelled parameter
    with pytest.raises(Exception):  # noqa: B017 (rcl's own error type differs between distros)
        check_node(['--ros-args', '-p', r"""'model:='"'"''"'"''"""])       # quotes that $(...) passes through


# ---- links --------------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
    return text.replace(' ', '-')


def anchors(path: Path) -> set[str]:
    text = re.sub(r'^ *```.*?^ *```', '', path.read_text(), flags=re.M | re.S)
    return {slug(m) for m in re.findall(r'^#+ (.+)$', text, flags=re.M)}


@pytest.mark.parametrize('doc', [*DOCS, REPO / 'CHANGELOG.md'], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = re.sub(r'^ *```.*?^ *```', '', doc.read_text(), flags=re.M | re.S)
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+://', target):
            continue
        file, _, anchor = target.partition('#')
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f'{doc.name}: {broken}'


# ---- the parameter table and the config files ---------------------------------------------------------------------
def test_the_node_guide_carries_todays_parameter_table():
    text = (REPO / 'docs' / 'node.md').read_text()
    assert P.TABLE_BEGIN in text and P.TABLE_END in text
    assert P.with_table(text) == text, 'run: python -m mgeo_ros.node_params --update docs/node.md'
    assert P.with_table(text.replace('`0.08`', '`0.09`')) != text.replace('`0.08`', '`0.09`')


def _comment_above(lines: list[str], i: int) -> str:
    words = []
    while i > 0 and lines[i - 1].strip().startswith('#') and not lines[i - 1].strip().startswith('# ----'):
        i -= 1
        words.insert(0, lines[i].strip().lstrip('#').strip())
    return ' '.join(words)


def test_the_params_yaml_matches_the_declaration():
    path = REPO / 'config' / 'mgeo_depth.yaml'
    values = yaml.safe_load(path.read_text())['/**']['ros__parameters']
    assert list(values) == [p.name for p in P.PARAMS], 'config/mgeo_depth.yaml: names or order differ from PARAMS'
    for spec in P.PARAMS:
        assert P.coerce(spec.name, values[spec.name]) == spec.default, f'{spec.name}: default differs'
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.strip().split(':')[0]
        if key in P.SPECS and line.startswith('    ' + key + ':'):
            assert _comment_above(lines, i).startswith(P.SPECS[key].describe()), f'{key}: comment differs'


def test_the_node_guide_shows_the_shipped_multi_camera_setup():
    from doc_commands import section

    text = section((REPO / 'docs' / 'node.md').read_text(), 'Several cameras, one model')
    blocks = re.findall(r'^```yaml\n(.*?)^```', text, flags=re.M | re.S)
    assert len(blocks) == 1
    shipped = yaml.safe_load((REPO / 'config' / 'mgeo_multi_camera.yaml').read_text())
    assert yaml.safe_load(blocks[0]) == shipped, 'docs/node.md: the YAML differs from config/mgeo_multi_camera.yaml'


@pytest.mark.parametrize('name', ['nav2_mono_depth.yaml', 'mgeo_multi_camera.yaml'])
def test_other_configs_set_only_real_parameters_with_valid_values(name):
    data = yaml.safe_load((REPO / 'config' / name).read_text())
    if 'cameras' in data:
        sections = [data['parameters']]
    else:
        sections = [v['ros__parameters'] for k, v in data.items() if 'mgeo_depth_node' in k]
    assert sections
    for section in sections:
        for key, value in section.items():
            assert key in P.SPECS, f'{name}: {key} is not a node parameter'
            assert P.validate(key, P.coerce(key, value)) is None, (name, P.validate(key, P.coerce(key, value)))


def test_the_deployment_guides_outside_facts_name_their_source():
    """What the guide says about TensorRT releases and other projects' results is someone else's word: each such
    paragraph or table row links where it comes from."""
    text = re.sub(r'^ *```.*?^ *```', '', (REPO / 'docs' / 'deployment.md').read_text(), flags=re.M | re.S)
    claims = ('peer project', 'reported to', 'removed\nthe FP16', '≥ 11.4.1 for Jetson', 'TensorRT 11 with CUDA 13',
              'TensorRT-RTX 1.x')
    for part in re.split(r'\n\s*\n|\n(?=\|)', text):
        for claim in claims:
            if claim in part:
                assert re.search(r'https://|`ComputeCapability` enum', part), f'{claim!r} without a source: {part}'


# ---- shape and history --------------------------------------------------------------------------------------------
def test_the_readme_is_an_entry_page():
    text = (REPO / 'README.md').read_text()
    assert len(text.splitlines()) <= 200
    for heading in ('## Install', '## Quick start', '## Topics', '## Guides', '## What ran where'):
        assert heading in text
    assert 'make demo' in text and 'make test' in text


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_no_development_history_in_the_docs(doc):
    text = doc.read_text()
    found = [m.group(0) for pattern in HISTORY for m in re.finditer(pattern, text, flags=re.I)]
    assert not found, f'{doc.name}: {found} (history belongs in CHANGELOG.md and commit messages)'


def test_the_changelog_keeps_a_changelog():
    text = (REPO / 'CHANGELOG.md').read_text()
    versions = re.findall(r'^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$', text, flags=re.M)
    assert versions and versions[0][0] == 'Unreleased'
    assert all(re.fullmatch(r'\d+\.\d+\.\d+', v) and date for v, date in versions[1:]) and len(versions) > 1
    assert set(re.findall(r'^### (\w+)$', text, flags=re.M)) <= {'Added', 'Changed', 'Deprecated', 'Removed', 'Fixed',
                                                                  'Security'}
