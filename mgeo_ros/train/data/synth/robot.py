"""A robot's camera sequence as a bag: a camera at a fixed height, pitch and roll driving through a synthetic room
with the floor in view (the `ground` scale source's test and measurement data). The mount is written beside the
bag's metadata.yaml as camera_mount.json ({"camera_height": m, "camera_pitch": deg, "camera_roll": deg, ...})."""
from __future__ import annotations

import json
from pathlib import Path

from mgeo_ros.errors import BadInputError
from mgeo_ros.train.data.synth.scene import CameraMount

MOUNT_FILE = 'camera_mount.json'


def write_robot_bag(path, seed: int, frames: int, size: tuple[int, int] = (320, 240),
                    mount: CameraMount = CameraMount(), step_m: float = 0.08, rate_hz: float = 10.0,
                    storage: str = 'mcap', anchors: bool = True, device: str = 'cpu') -> Path:
    """Render `frames` of indoor scene `seed` seen from `mount` and write them (image, camera_info, GT depth, and
    with `anchors` the sparse-depth and scan anchor topics) with the mount sidecar. Returns the bag directory."""
    from mgeo_ros.train.data.bag_writer import write_bag
    from mgeo_ros.train.data.synth import render_sequence
    from mgeo_ros.train.data.synth.anchors import anchor_bag_topics

    samples = render_sequence(seed, frames, size=size, kinds=('indoor',), device=device, step_m=step_m, mount=mount)
    topics, messages = anchor_bag_topics('camera_optical_frame', seed=seed) if anchors else ((), None)
    bag = write_bag(samples, path, storage=storage, rate_hz=rate_hz, depth_topic='/camera/depth_gt/image',
                    extra_topics=topics, extra_messages=messages)
    (bag / MOUNT_FILE).write_text(json.dumps({**mount.as_dict(), 'seed': int(seed), 'frames': int(frames)},
                                             indent=2) + '\n')
    return bag


def read_camera_mount(bag) -> CameraMount:
    """The mount a robot bag was rendered with (its camera_mount.json)."""
    p = Path(bag)
    side = (p if p.is_dir() else p.parent) / MOUNT_FILE
    if not side.is_file():
        raise BadInputError(f'bag {bag}: no {MOUNT_FILE} beside its metadata.yaml; give the camera height and '
                            'angles yourself (ground:HEIGHT[,PITCH])')
    data = json.loads(side.read_text())
    return CameraMount(float(data['camera_height']), float(data.get('camera_pitch', 0.0)),
                       float(data.get('camera_roll', 0.0)))
