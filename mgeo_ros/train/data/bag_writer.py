"""Write Samples into a ROS 2 bag (sqlite3 or mcap) as colour image + depth + camera_info, with rosbags (no ROS).

Used to make test and demo bags. Stamps are header stamps; the bag receive time equals the stamp.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mgeo_ros.depth_codec import DEFAULT_DEPTH_MAX, DEFAULT_QUANTIZATION, encode_depth, metres_to_millimetres
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data.sample import Sample

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
INFO = 'sensor_msgs/msg/CameraInfo'
SCAN = 'sensor_msgs/msg/LaserScan'
TF = 'tf2_msgs/msg/TFMessage'


def _header(stamp_ns: int, frame_id: str):
    t = TYPESTORE.types
    stamp = t['builtin_interfaces/msg/Time'](sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
    return t['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """sensor_msgs/Image from an H×W(×C) array already in `encoding`'s layout (little endian)."""
    a = np.ascontiguousarray(array)
    h, w = a.shape[:2]
    data = a.view(np.uint8).reshape(-1)
    return TYPESTORE.types[IMAGE](header=_header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                                  is_bigendian=0, step=data.size // h, data=data)


def compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = 'jpeg'):
    """sensor_msgs/CompressedImage (jpeg or png) from RGB uint8."""
    ok, buf = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError('could not encode image')
    return TYPESTORE.types[COMPRESSED](header=_header(stamp_ns, frame_id), format=f'rgb8; {fmt} compressed bgr8',
                                       data=buf.reshape(-1))


def camera_info_msg(intr: Intrinsics, stamp_ns: int, frame_id: str, distortion: Sequence[float] = (0.0,) * 5):
    """sensor_msgs/CameraInfo for a pinhole camera (plumb_bob distortion, zero by default)."""
    t = TYPESTORE.types
    k = intr.K.reshape(-1)
    p = np.array([intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t[INFO](header=_header(stamp_ns, frame_id), height=intr.height, width=intr.width,
                   distortion_model='plumb_bob', d=np.asarray(distortion, dtype=np.float64), k=k,
                   r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def laser_scan_msg(ranges: np.ndarray, angle_min: float, angle_increment: float, range_min: float, range_max: float,
                   stamp_ns: int, frame_id: str):
    """sensor_msgs/LaserScan (no intensities, all beams at the stamp)."""
    r = np.asarray(ranges, dtype=np.float32)
    return TYPESTORE.types[SCAN](header=_header(stamp_ns, frame_id), angle_min=float(angle_min),
                                 angle_max=float(angle_min + angle_increment * max(r.size - 1, 0)),
                                 angle_increment=float(angle_increment), time_increment=0.0, scan_time=0.0,
                                 range_min=float(range_min), range_max=float(range_max), ranges=r,
                                 intensities=np.zeros(0, np.float32))


def tf_static_msg(parent: str, child: str, xyz_quaternion: Sequence[float], stamp_ns: int):
    """tf2_msgs/TFMessage with one transform: `child`'s pose in `parent` as x y z qx qy qz qw."""
    t = TYPESTORE.types
    x, y, z, qx, qy, qz, qw = (float(v) for v in xyz_quaternion)
    transform = t['geometry_msgs/msg/Transform'](translation=t['geometry_msgs/msg/Vector3'](x=x, y=y, z=z),
                                                 rotation=t['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw))
    stamped = t['geometry_msgs/msg/TransformStamped'](header=_header(stamp_ns, parent), child_frame_id=child,
                                                      transform=transform)
    return t[TF](transforms=[stamped])


def depth_array(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Depth (metres, NaN invalid) as 32FC1 metres (NaN kept) or 16UC1 millimetres (0 invalid)."""
    if encoding == '32FC1':
        return depth.astype(np.float32)
    if encoding == '16UC1':
        return metres_to_millimetres(depth)
    raise ValueError(f'depth encoding must be 32FC1 or 16UC1, got {encoding!r}')


def compressed_depth_msg(depth: np.ndarray, encoding: str, fmt: str, stamp_ns: int, frame_id: str,
                         depth_max: float = DEFAULT_DEPTH_MAX, quantization: float = DEFAULT_QUANTIZATION):
    """sensor_msgs/CompressedImage in image_transport's compressedDepth format (png or rvl) from depth in metres."""
    format_, data = encode_depth(depth, encoding, fmt, depth_max, quantization)
    return TYPESTORE.types[COMPRESSED](header=_header(stamp_ns, frame_id), format=format_,
                                       data=np.frombuffer(data, np.uint8))


def write_bag(samples: Iterable[Sample], path, storage: str = 'sqlite3', image_topic: str = '/camera/image_raw',
              depth_topic: str | None = '/camera/depth/image_raw', info_topic: str | None = '/camera/camera_info',
              depth_encoding: str = '32FC1', compressed: bool = False, rate_hz: float = 10.0,
              start_ns: int = 1_700_000_000_000_000_000, frame_id: str = 'camera_optical_frame',
              skip_depth: Sequence[int] = (), skip_image: Sequence[int] = (), depth_offset_ns: int = 0,
              distortion: Sequence[float] = (0.0,) * 5, compressed_depth: str | None = None,
              compressed_depth_max: float = DEFAULT_DEPTH_MAX,
              compressed_depth_quantization: float = DEFAULT_QUANTIZATION,
              extra_topics: Sequence[tuple[str, str]] = (),
              extra_messages: Callable[[int, Sample, int], Iterable[tuple[str, Any]]] | None = None) -> Path:
    """Write samples as a bag at `path` (must not exist). With compressed=True the image topic carries
    CompressedImage (jpeg) and gets '/compressed' appended. compressed_depth 'png' or 'rvl': the depth topic carries
    compressedDepth in `depth_encoding` (depth_max in m, quantization as image_transport's) and gets
    '/compressedDepth' appended. skip_depth/skip_image drop frames by index (to make unpaired frames);
    depth_offset_ns shifts depth stamps (to test pairing tolerance); distortion fills CameraInfo.d.
    depth_topic/info_topic None leaves that topic out. More topics: `extra_topics` (topic, message type) and
    `extra_messages(index, sample, stamp_ns)` giving (topic, message) pairs for each frame, written at the frame's
    stamp (index -1 before the first frame: static messages such as /tf_static). Returns the bag directory."""
    if storage not in ('sqlite3', 'mcap'):
        raise ValueError(f'storage must be sqlite3 or mcap, got {storage!r}')
    path = Path(path)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    skip_d, skip_i = set(skip_depth), set(skip_image)
    with Writer(path, version=9 if storage == 'mcap' else 8, storage_plugin=plugin) as writer:
        img_topic = image_topic + '/compressed' if compressed else image_topic
        c_img = writer.add_connection(img_topic, COMPRESSED if compressed else IMAGE, typestore=TYPESTORE)
        depth_type = COMPRESSED if compressed_depth else IMAGE
        c_depth = None
        if depth_topic:
            c_depth = writer.add_connection(depth_topic + '/compressedDepth' if compressed_depth else depth_topic,
                                            depth_type, typestore=TYPESTORE)
        c_info = writer.add_connection(info_topic, INFO, typestore=TYPESTORE) if info_topic else None
        c_extra = {topic: (writer.add_connection(topic, msgtype, typestore=TYPESTORE), msgtype)
                   for topic, msgtype in extra_topics}

        def write_extra(i: int, sample: Sample | None, stamp: int) -> None:
            for topic, msg in (extra_messages(i, sample, stamp) if extra_messages else ()):
                conn, msgtype = c_extra[topic]
                writer.write(conn, stamp, TYPESTORE.serialize_cdr(msg, msgtype))

        write_extra(-1, None, int(start_ns))
        for i, s in enumerate(samples):
            stamp = int(start_ns + round(i * 1e9 / rate_hz))
            if c_info is not None:
                info = camera_info_msg(s.intrinsics, stamp, frame_id, distortion)
                writer.write(c_info, stamp, TYPESTORE.serialize_cdr(info, INFO))
            if i not in skip_i:
                msg = compressed_msg(s.rgb, stamp, frame_id) if compressed else image_msg(s.rgb, 'rgb8', stamp,
                                                                                           frame_id)
                writer.write(c_img, stamp, TYPESTORE.serialize_cdr(msg, COMPRESSED if compressed else IMAGE))
            if c_depth is not None and i not in skip_d:
                ds = stamp + depth_offset_ns
                depth = np.where(s.mask, s.depth, np.nan)
                if compressed_depth:
                    msg = compressed_depth_msg(depth, depth_encoding, compressed_depth, ds, frame_id,
                                               compressed_depth_max, compressed_depth_quantization)
                else:
                    msg = image_msg(depth_array(depth, depth_encoding), depth_encoding, ds, frame_id)
                writer.write(c_depth, ds, TYPESTORE.serialize_cdr(msg, depth_type))
            write_extra(i, s, stamp)
    return path
