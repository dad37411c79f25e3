"""Start mgeo_depth_node for one camera.

  ros2 launch mgeo_ros mgeo_depth.launch.py namespace:=camera image:=/camera/color/image_raw \
      camera_info:=/camera/color/camera_info model:=/path/to/model.onnx backend:=auto

Outputs appear under the namespace: <ns>/depth/image, <ns>/depth/camera_info, <ns>/points, <ns>/depth/mask,
<ns>/depth/confidence, <ns>/depth/normals.
`model`/`backend`/`image_transport` given here override the params file; empty keeps the file's value.
"""
# ruff: noqa: I001  (the repository has a launch/ folder, which ruff would take for the `launch` package)
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mgeo_ros.ros.fastdds import apply_default_profile

ARGUMENTS = (
    ('namespace', 'camera', 'namespace of the node and its outputs'),
    ('image', 'image_raw', 'camera image topic (with image_transport compressed: <image>/compressed)'),
    ('camera_info', 'camera_info', 'camera_info topic of that image'),
    ('params_file', '', 'parameters YAML; empty = the packaged config/mgeo_depth.yaml'),
    ('model', '', 'checkpoint dir / .pt / .onnx / .engine; empty = the params file value (or the packaged model)'),
    ('backend', '', 'auto | tensorrt | onnxruntime | torch; empty = the params file value'),
    ('image_transport', '', 'raw | compressed; empty = the params file value'),
)


def _node(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg('params_file') or FindPackageShare('mgeo_ros').perform(context) + '/config/mgeo_depth.yaml'
    overrides = {name: arg(name) for name in ('model', 'backend', 'image_transport') if arg(name)}
    return [Node(
        package='mgeo_ros',
        executable='mgeo_depth_node',
        name='mgeo_depth_node',
        namespace=arg('namespace'),
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=[('image', arg('image')), ('camera_info', arg('camera_info'))],
        additional_env=apply_default_profile(dict(os.environ)),  # large frames, unless a profile is set
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_node)])
