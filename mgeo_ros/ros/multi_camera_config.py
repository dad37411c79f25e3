"""The multi-camera setup file (config/mgeo_multi_camera.yaml): which cameras one node serves, where each camera's
topics are, and node parameters. Read by launch/mgeo_multi_camera.launch.py, and by
`python -m mgeo_ros.ros.multi_camera_config FILE` (a path, or the bare name of a shipped setup), which prints the
equivalent `--ros-args` for machines without `launch` (plain Python: no rclpy, so it is testable anywhere).

The printed arguments are meant for `mgeo_depth_node $(python -m mgeo_ros.ros.multi_camera_config FILE)`: the shell
splits them on white space and expands glob patterns but never removes quotes, so they hold no quoting and no
brackets. The parameters therefore go into a params file written beside the system's temporary files (named by its
user and content), and only the namespace, the remaps and that file's path are printed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mgeo_ros import node_params as P
from mgeo_ros.errors import BadInputError
from mgeo_ros.ros.shipped import shipped_config


@dataclass(frozen=True)
class CameraTopics:
    """One camera: its name (the output namespace <name>/...) and the topics its inputs are remapped to."""

    name: str
    image: str
    camera_info: str
    parameters: tuple[tuple[str, object], ...] = ()  # the camera's own values of params.PER_CAMERA (output_scale)


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
        """The node's parameters: the file's `parameters` plus `cameras`, and each camera's own values as
        `<camera>.NAME`."""
        own = {f'{c.name}.{key}': value for c in self.cameras for key, value in c.parameters}
        return {**self.parameters, 'cameras': [c.name for c in self.cameras], **own}

    def params_yaml(self) -> str:
        """The node's parameters as a ROS params file (applies to the node whatever its namespace)."""
        return yaml.safe_dump({'/**': {'ros__parameters': self.node_parameters()}}, sort_keys=False)

    def ros_arguments(self, params_file: str | Path) -> list[str]:
        """The same setup as `--ros-args` (namespace, remaps, `--params-file params_file`) for a command line."""
        args = ['--ros-args']
        if self.namespace:
            args += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        for src, dst in self.remappings():
            args += ['-r', f'{src}:={dst}']
        return args + ['--params-file', str(params_file)]


def write_params_file(setup: MultiCameraSetup, folder: str | Path | None = None) -> Path:
    """Write the setup's parameters to `folder` (default: the temporary directory), named by the user and the content.

    Several processes may write and read it at once (nodes started together from one setup): it appears whole,
    written to a private file and renamed into place, and is never removed, so a node reads it whenever it starts.
    """
    text = setup.params_yaml()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(folder or tempfile.gettempdir())
    path = folder / f'mgeo_multi_camera_{os.getuid()}_{digest}.yaml'
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text() == text:
            return path
    handle, private = tempfile.mkstemp(dir=folder, prefix='.mgeo_multi_camera_', suffix='.tmp')
    try:
        with os.fdopen(handle, 'w') as f:
            f.write(text)
        os.chmod(private, 0o644)
        os.replace(private, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(private)
        raise
    return path


def setup_path(text: str | Path) -> Path:
    """The setup file a command names: a path (relative to the current directory), or the bare name of a shipped
    one (`mgeo_multi_camera.yaml`), found in the install whatever the current directory."""
    path = Path(text)
    if path.is_file():
        return path
    shipped = shipped_config(path.name) if path.name == str(text) else None
    if shipped is not None:
        return shipped
    raise BadInputError(f'setup file {text}: no such file; expected a path to a setup YAML or the name of a shipped '
                        'one (mgeo_multi_camera.yaml); give the path, e.g. an absolute one')


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
        own = []
        for key, value in entry.items():
            if key in ('name', 'image', 'camera_info'):
                continue
            if key not in P.PER_CAMERA:
                raise BadInputError(f'{path}: camera {entry["name"]!r}: {key!r} cannot be set per camera (per '
                                    f'camera: {", ".join(P.PER_CAMERA)}; node-wide values go under `parameters`)')
            reason = P.validate(key, P.coerce(key, value))
            if reason:
                raise BadInputError(f'{path}: camera {entry["name"]!r}: {reason}')
            own.append((key, P.coerce(key, value)))
        cameras.append(CameraTopics(str(entry['name']), str(entry['image']), str(entry['camera_info']), tuple(own)))
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
        print('usage: python -m mgeo_ros.ros.multi_camera_config SETUP.yaml (a path, or mgeo_multi_camera.yaml for '
              'the shipped example)', file=sys.stderr)
        return 2
    try:
        setup = load_setup(setup_path(argv[0]))
        args = setup.ros_arguments(write_params_file(setup))
        unsafe = [a for a in args if any(c.isspace() or c in '*?[]\'"$\\' for c in a)]
        if unsafe:
            raise BadInputError(f'{unsafe} would not survive the shell\'s word splitting in $(...): use names and a '
                                'temporary directory (TMPDIR) without spaces, quotes or glob characters')
        print(' '.join(args))
    except (BadInputError, OSError, yaml.YAMLError) as exc:
        print(f'multi_camera_config: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
