"""Start one mgeo_depth_node for several cameras, from a setup file listing the cameras and their topics.

  ros2 launch mgeo_ros mgeo_multi_camera.launch.py setup_file:=/path/to/mgeo_multi_camera.yaml model:=/path/model.onnx

The setup file (default: the packaged config/mgeo_multi_camera.yaml, four cameras) gives the namespace, the cameras
(name, image topic, camera_info topic) and node parameters; outputs appear under <namespace>/<camera>/...
`model`/`backend` given here override the setup file; empty keeps its value.
"""
# ruff: noqa: I001  (the repository has a launch/ folder, which ruff would take for the `launch` package)
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mgeo_ros.ros.fastdds import apply_default_profile
from mgeo_ros.ros.multi_camera_config import load_setup, setup_path

ARGUMENTS = (
    ('setup_file', '', 'multi-camera setup YAML; empty = the packaged config/mgeo_multi_camera.yaml'),
    ('params_file', '', 'node parameters YAML applied first; empty = the packaged config/mgeo_depth.yaml'),
    ('model', '', 'checkpoint dir / .pt / .onnx / .engine; empty = the setup file value'),
    ('backend', '', 'auto | tensorrt | onnxruntime | torch; empty = the setup file value'),
)


def _node(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    share = FindPackageShare('mgeo_ros').perform(context)
    setup = load_setup(setup_path(arg('setup_file')) if arg('setup_file') else
                       share + '/config/mgeo_multi_camera.yaml')
    params_file = arg('params_file') or share + '/config/mgeo_depth.yaml'
    overrides = {name: arg(name) for name in ('model', 'backend') if arg(name)}
    return [Node(
        package='mgeo_ros',
        executable='mgeo_depth_node',
        name='mgeo_depth_node',
        namespace=setup.namespace,
        parameters=[params_file, {**setup.node_parameters(), **overrides}],
        remappings=setup.remappings(),
        additional_env=apply_default_profile(dict(os.environ)),  # large frames, unless a profile is set
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_node)])
