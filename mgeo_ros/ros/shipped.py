"""Where the files under config/ are once installed: a colcon install's share directory, a pip install's
<prefix>/share/mgeo_ros/config, or config/ of a source checkout, so a shipped file is found from any directory
(plain Python: ament_index_python is optional)."""
from __future__ import annotations

import sys
from pathlib import Path


def shipped_config(name: str) -> Path | None:
    """The shipped config file `name` (e.g. 'mgeo_multi_camera.yaml'), or None when no install holds it."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            candidates.append(Path(get_package_share_directory('mgeo_ros'), 'config', name))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (not a colcon install)
            pass
    except ImportError:
        pass
    candidates += [Path(sys.prefix, 'share', 'mgeo_ros', 'config', name),
                   Path(__file__).resolve().parents[2] / 'config' / name]
    return next((c for c in candidates if c.is_file()), None)
