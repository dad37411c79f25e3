"""The large-frames Fast DDS profile: where it is, and the environment variable the installed Fast DDS reads it from
(no rclpy import).

Without it, Fast DDS's default shared-memory segment drops most best-effort camera-sized frames between processes
(640x480 rgb8: 3 of 148 arrived); the node and the launch files therefore load it themselves unless the user has set
a profile.

Fast DDS 3 (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE and warns that the old name is deprecated; Fast DDS 2.x
(Jazzy, Humble) reads only FASTRTPS_DEFAULT_PROFILES_FILE, so there the large-frames profile was silently not loaded
and best-effort 640x480 frames were dropped (measured: 3 of 45 arrived on Jazzy, 45 of 45 with the old name).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from mgeo_ros.ros.shipped import shipped_config

NEW, OLD = 'FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'


def fast_dds_2_installed() -> bool:
    """Fast DDS 2.x: the `ros-fastrtps` wheel, or libfastrtps in an ament prefix (apt ROS)."""
    try:
        importlib.metadata.version('ros-fastrtps')
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return any(next(Path(p, 'lib').glob('libfastrtps.so*'), None) is not None for p in prefixes)


def profile_env(path: str) -> dict[str, str]:
    """The variable(s) that make the installed Fast DDS load the XML profile at `path`."""
    return {OLD: path} if fast_dds_2_installed() else {NEW: path}


PROFILE_NAME = 'fastdds_large_frames.xml'


def profile_path() -> Path | None:
    """The shipped large-frames profile (see ros/shipped.py for where it is looked for); None when none is found."""
    return shipped_config(PROFILE_NAME)


def apply_default_profile(environ=os.environ) -> dict[str, str]:
    """Point Fast DDS at the shipped profile unless a profile variable (either name) is already set; call before
    rclpy.init. Returns what was set ({} when the user's choice stands or no profile was found)."""
    if environ.get(NEW) or environ.get(OLD):
        return {}
    path = profile_path()
    if path is None:
        return {}
    added = profile_env(str(path))
    environ.update(added)
    return added
