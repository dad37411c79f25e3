"""The node's parameters read outside ROS (`mgeo eval --params-file/--param`): the params-file forms the node takes,
`NAME=VALUE` as `-p` reads it, precedence, and refusals that name the parameter and the way out."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mgeo_ros import node_params as P
from mgeo_ros.errors import BadInputError

REPO_CONFIG = Path(P.__file__).resolve().parents[1] / 'config' / 'mgeo_depth.yaml'


@pytest.mark.parametrize('key', ['/**', 'mgeo_depth_node', '/mgeo_depth_node', '/robot/mgeo_depth_node',
                                 '/**/mgeo_depth_node', '/robot/**'])
def test_every_section_form_that_can_address_the_node_is_read(tmp_path, key):
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump({key: {'ros__parameters': {'min_confidence': 0.3, 'max_depth': 5}},
                                    'other_node': {'ros__parameters': {'min_confidence': 0.9}}}))
    values = P.read_params_file(path)
    assert values == {'min_confidence': 0.3, 'max_depth': 5.0}
    assert isinstance(values['max_depth'], float)  # an integer for a float parameter, as ROS delivers it


def test_the_shipped_params_file_reads_as_the_declared_defaults():
    assert P.read_params_file(REPO_CONFIG) == P.defaults()


def test_settings_apply_defaults_then_files_in_order_then_assignments(tmp_path):
    first, second = tmp_path / 'a.yaml', tmp_path / 'b.yaml'
    first.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'min_confidence': 0.3, 'scale_smoothing': 0.5}}}))
    second.write_text(yaml.safe_dump({'mgeo_depth_node': {'ros__parameters': {'min_confidence': 0.4}}}))
    cfg = P.node_settings([first, second], ['scale_smoothing=0.7', 'cameras:=[a, b]', 'frame_id=cam'])
    assert cfg['min_confidence'] == 0.4 and cfg['scale_smoothing'] == 0.7
    assert cfg['cameras'] == ('a', 'b') and cfg['frame_id'] == 'cam'
    assert cfg['max_depth'] == P.SPECS['max_depth'].default and set(cfg) == set(P.SPECS)


@pytest.mark.parametrize('text, words', [
    ('min_confidense=0.3', ('min_confidense', 'did you mean min_confidence')),
    ('min_confidence=2', ('min_confidence must be <= 1.0',)),
    ('points_stride=2.5', ('points_stride must be an integer',)),
    ('min_confidence', ('expected NAME=VALUE',)),
])
def test_bad_assignments_are_refused_with_the_reason(text, words):
    with pytest.raises(BadInputError) as err:
        P.parse_assignment(text)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_bad_params_files_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / 'missing.yaml'
    with pytest.raises(BadInputError, match='no such file'):
        P.read_params_file(missing)
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump({'camera_driver': {'ros__parameters': {'fps': 5}}}))
    with pytest.raises(BadInputError, match='no section for mgeo_depth_node'):
        P.read_params_file(other)
    wrong = tmp_path / 'wrong.yaml'
    wrong.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'max_depth': 'far'}}}))
    with pytest.raises(BadInputError, match=f'{wrong}.*max_depth must be a number'):
        P.read_params_file(wrong)
