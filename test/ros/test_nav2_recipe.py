"""config/nav2_mono_depth.yaml works as written: the node's section holds valid parameters that a real node in
namespace /camera loads, and the costmap sections read the node's real output topic within its depth range."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from node_harness import node_in_process, settled_model_status

from mgeo_ros import node_params as P

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / 'config' / 'nav2_mono_depth.yaml'
NAMESPACE = '/camera'


def _recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def _node_params() -> dict:
    return _recipe()[f'{NAMESPACE}/mgeo_depth_node']['ros__parameters']


def _sources() -> dict[str, dict]:
    costmap = _recipe()['local_costmap']['local_costmap']['ros__parameters']
    out = {}
    for layer in ('voxel_layer', 'stvl_layer'):
        for name in costmap[layer]['observation_sources'].split():
            out[f'{layer}.{name}'] = costmap[layer][name]
    return out


def test_node_section_is_valid_and_gates_the_cloud():
    values = _node_params()
    for name, value in values.items():
        assert P.validate(name, P.coerce(name, value)) is None, name
    assert values['min_confidence'] > 0  # the costmap marks only confident points
    assert values['flying_pixel_max_jump'] > 0
    assert values['max_depth'] > 0 and values['points_organized'] is False


def test_costmap_sources_read_the_node_cloud_within_its_range():
    from mgeo_ros.ros.node import OUTPUT_TOPICS

    max_depth = _node_params()['max_depth']
    sources = _sources()
    assert {'voxel_layer.mono_depth', 'stvl_layer.mono_mark', 'stvl_layer.mono_clear'} <= set(sources)
    for name, source in sources.items():
        assert source['topic'] == f'{NAMESPACE}/points', name
        assert source['topic'].removeprefix(NAMESPACE + '/') in OUTPUT_TOPICS
        assert source['data_type'] == 'PointCloud2'
        for key in ('obstacle_max_range', 'raytrace_max_range', 'obstacle_range', 'max_z'):
            if key in source:
                assert 0 < source[key] <= max_depth, (name, key)
    assert any(s['marking'] for s in sources.values()) and any(s['clearing'] for s in sources.values())
    costmap = _recipe()['local_costmap']['local_costmap']['ros__parameters']
    assert costmap['global_frame'] == 'odom' and costmap['robot_base_frame'] == 'base_link'
    assert set(costmap['plugins']) <= set(costmap)


@pytest.mark.ros
def test_a_node_in_the_camera_namespace_loads_its_section():
    # the section is keyed by the fully qualified name /camera/mgeo_depth_node; a private domain keeps it apart
    with node_in_process('--params-file', str(RECIPE), '-p', 'model:=/nonexistent/model.onnx',
                         '-r', f'__ns:={NAMESPACE}') as node:
        assert node.get_fully_qualified_name() == f'{NAMESPACE}/mgeo_depth_node'
        for name, value in _node_params().items():
            assert node.get_parameter(name).value == value, name
        assert node.cfg['min_confidence'] == _node_params()['min_confidence']
        # the recipe's parameters reached the model load too (the -p override names a file that is not there)
        assert settled_model_status(node) == 'error' and 'does not exist' in node.stats.model_error


def test_the_recipes_guide_names_the_recipe_file_and_its_topics():
    text = (REPO / 'docs' / 'recipes.md').read_text()
    assert 'config/nav2_mono_depth.yaml' in text
    for topic in ('/camera/points', '/camera/depth/image', '/camera/depth/camera_info', 'camera_color_optical_frame'):
        assert topic in text, topic
    assert os.path.basename(RECIPE) in text
