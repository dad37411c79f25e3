"""Which environment variable the installed Fast DDS reads its default XML profile from (no rclpy import).

Fast DDS 3 (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE and warns that the old name is deprecated; Fast DDS 2.x
(Jazzy, Humble) reads only FASTRTPS_DEFAULT_PROFILES_FILE, so there the large-frames profile was silently not loaded
and best-effort 640x480 frames were dropped (measured: 3 of 45 arrived on Jazzy, 45 of 45 with the old name).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

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
