"""The multi-camera setup file (config/mgeo_multi_camera.yaml): which cameras one node serves, where each camera's
topics are, and node parameters. Read by launch/mgeo_multi_camera.launch.py, and by
`python -m mgeo_ros.ros.multi_camera_config FILE`, which prints the equivalent `--ros-args` for machines without
`launch` (plain Python: no rclpy, so it is testable anywhere).
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from mgeo_ros.errors import BadInputError
from mgeo_ros.ros import params as P


@dataclass(frozen=True)
class CameraTopics:
    """One camera: its name (the output namespace <name>/...) and the topics its inputs are remapped to."""

    name: str
    image: str
    camera_info: str


@dataclass(frozen=True)
class MultiCameraSetup:
    namespace: str
    cameras: tuple[CameraTopics, ...]
    parameters: dict

    def remappings(self) -> list[tuple[str, str]]:
        """(from, to) remaps: <name>/image and <name>/camera_info to the camera's own topics."""
        out = []
        for cam in self.cameras:
            out += [(f'{cam.name}/image', cam.image), (f'{cam.name}/camera_info', cam.camera_info)]
        return out

    def node_parameters(self) -> dict:
        """The node's parameters: the file's `parameters` plus `cameras`."""
        return {**self.parameters, 'cameras': [c.name for c in self.cameras]}

    def ros_arguments(self) -> list[str]:
        """The same setup as `--ros-args` (namespace, remaps, parameters) for a plain command line."""
        args = ['--ros-args']
        if self.namespace:
            args += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        for src, dst in self.remappings():
            args += ['-r', f'{src}:={dst}']
        for key, value in self.node_parameters().items():
            if isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, list):
                text = '[' + ','.join(value) + ']'
            elif value == '':
                text = "''"  # YAML for an empty string (a bare `x:=` is not one)
            else:
                text = str(value)
            args += ['-p', f'{key}:={text}']
        return args


def load_setup(path: str | Path) -> MultiCameraSetup:
    """Read and check the file: camera names valid and distinct, each with image and camera_info topics, every
    parameter a real node parameter with a valid value (BadInputError names the problem)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    entries = data.get('cameras') or []
    if not isinstance(entries, list) or not entries:
        raise BadInputError(f'{path}: `cameras` must be a non-empty list of {{name, image, camera_info}}')
    cameras = []
    for entry in entries:
        if not isinstance(entry, dict) or not {'name', 'image', 'camera_info'} <= set(entry):
            raise BadInputError(f'{path}: each camera needs name, image and camera_info; got {entry!r}')
        cameras.append(CameraTopics(str(entry['name']), str(entry['image']), str(entry['camera_info'])))
    reason = P.validate('cameras', tuple(c.name for c in cameras))
    if reason:
        raise BadInputError(f'{path}: {reason}')
    parameters = dict(data.get('parameters') or {})
    for key, value in parameters.items():
        if key == 'cameras':
            raise BadInputError(f'{path}: list the cameras under `cameras`, not under `parameters`')
        reason = P.validate(key, P.coerce(key, value)) if key in P.SPECS else f'unknown parameter {key!r}'
        if reason:
            raise BadInputError(f'{path}: {reason}')
    return MultiCameraSetup(str(data.get('namespace') or ''), tuple(cameras), parameters)


def main(argv: list[str] | None = None) -> int:
    """Print the `--ros-args` of a setup file: `mgeo_depth_node $(python -m mgeo_ros.ros.multi_camera_config F)`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m mgeo_ros.ros.multi_camera_config config/mgeo_multi_camera.yaml', file=sys.stderr)
        return 2
    try:
        print(shlex.join(load_setup(argv[0]).ros_arguments()))
    except (BadInputError, OSError, yaml.YAMLError) as exc:
        print(f'multi_camera_config: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
