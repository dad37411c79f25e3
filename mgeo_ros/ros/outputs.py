"""The node's outputs, one row each: name, topic (relative to the camera's prefix), message type, the frame stage's
arrays it is made of, its message builder, the parameters of its QoS and what docs/node.md says of it. The camera
channel makes one publisher per row and asks each row's publisher whether anyone subscribes; stage 2 asks the frame
stage for the arrays the subscribed rows need and builds their messages; the docs' topic table is checked against
these rows.

Adding an output is a row here and its builder (a function of the frame's `Frame` -> message).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mgeo_ros import depth_codec
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.ros import cloud, convert
from mgeo_ros.runtime.frame_buffers import FrameBuffers
from mgeo_ros.runtime.frame_stage import FrameOutputs


class CameraInfoMessage:
    """The CameraInfo of a camera's intrinsics, built once per camera and reused with each frame's header (publish
    copies it)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._msg: CameraInfo | None = None

    def __call__(self, intr: Intrinsics, header) -> CameraInfo:
        key = (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height)
        if self._key != key:
            self._msg, self._key = convert.intrinsics_to_camera_info(intr), key
        self._msg.header = header
        return self._msg


@dataclass
class Frame:
    """What a builder makes its message of: the frame stage's arrays, the frame the model saw (its size, the
    cloud's colours), the input's header, the frame's parameters, and the camera's reused message bytes."""

    res: FrameOutputs
    rgb: np.ndarray  # the frame the model saw (maybe decoded smaller than sent; the outputs may be smaller still)
    header: object
    cfg: Mapping
    buffers: FrameBuffers  # message bytes reused from frame to frame (see runtime/frame_buffers.py)
    camera_info: CameraInfoMessage

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the outputs."""
        return self.res.valid.shape[0], self.res.valid.shape[1]

    def colours(self, stride: int) -> np.ndarray:
        """The frame's colours on the cloud's grid: the outputs' pixels at `stride` (the frame shrunk to the
        outputs' size by area first when it is larger)."""
        height, width = self.size
        rgb = self.rgb
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        return rgb[::stride, ::stride]


@dataclass(frozen=True)
class Output:
    """One output of the node (see the module docstring)."""

    name: str
    topic: str
    msg_type: type
    type_text: str  # the docs' type column
    needs: frozenset  # frame stage arrays (frame_stage.STAGE_ARRAYS) it is made of
    build: Callable[[Frame], object]
    notes: str  # the docs' notes column
    needs_if: Callable[[Mapping], frozenset] = lambda cfg: frozenset()  # more arrays, by the frame's parameters
    qos: tuple[str, str] = ('output_qos', 'output_qos_depth')  # the parameters of its QoS: reliability, depth
    timing: str = ''  # its build's stage name in the frame's timings (latency_ms.<timing> in /diagnostics); '' = none


def _image(name: str, encoding: str) -> Callable[[Frame], Image]:
    def build(f: Frame) -> Image:
        return convert.image_around(f.res.data[name], *f.size, encoding, f.header)
    return build


def _depth(f: Frame) -> Image:
    """depth/image in `depth_encoding`: the stage's 32FC1 metres as they are, or 16UC1 millimetres (0 invalid)."""
    if f.cfg['depth_encoding'] != '16UC1':
        return convert.image_around(f.res.data['depth'], *f.size, '32FC1', f.header)
    data, millimetres = f.buffers.take('depth_16uc1', f.size, np.uint16)
    depth_codec.metres_to_millimetres(f.res.depth, out=millimetres)
    return convert.image_around(data, *f.size, '16UC1', f.header)


OPEN_RANGE_DEPTH_MAX = 100.0  # m: the compressed depth's range when neither compressed_depth_max nor max_depth is set


def compressed_depth_max(cfg: Mapping) -> float:
    """The depth (m) at and beyond which the compressed depth is invalid (see the compressed_depth_max parameter)."""
    return float(cfg['compressed_depth_max'] or cfg['max_depth'] or OPEN_RANGE_DEPTH_MAX)


# Stock decoders refuse a 32FC1 rvl message whose pixels outnumber 5 x its bytes (their check against corrupt data),
# which a mostly invalid frame reaches: such a frame goes out as png, which every decoder reads.
RVL_STOCK_PIXELS_PER_BYTE = 5


def _compressed_depth(f: Frame) -> CompressedImage:
    """depth/image/compressedDepth: the stage's depth as image_transport's compressedDepth (depth_codec.py)."""
    cfg = f.cfg
    args = (f.res.depth, cfg['depth_encoding'], cfg['compressed_depth_format'], compressed_depth_max(cfg),
            cfg['compressed_depth_quantization'], cfg['compressed_depth_png_level'])
    fmt, data = depth_codec.encode_depth(*args)
    if fmt == '32FC1; compressedDepth rvl' and f.res.depth.size > RVL_STOCK_PIXELS_PER_BYTE * len(data):
        fmt, data = depth_codec.encode_depth(*args[:2], 'png', *args[3:])
    return convert.compressed_image(fmt, data, f.header)


def _mask_compressed(f: Frame) -> CompressedImage:
    """depth/mask/compressed: the mask as image_transport's `compressed` png (mono8)."""
    return convert.compressed_image(*depth_codec.encode_mask_png(f.res.valid, f.cfg['compressed_depth_png_level']),
                                    f.header)


def _mask(f: Frame) -> Image:
    height, width = f.size
    return convert.mask_to_image(f.res.valid, f.header, f.buffers.bytes_for('mask', height * width))


def _points(f: Frame) -> PointCloud2:
    """The stage's cloud xyz (at points_stride, NaN invalid) with the frame's colours and the cloud normals, packed
    straight into the bytes kept for the cloud when organized."""
    res, cfg = f.res, f.cfg
    stride = max(1, int(cfg['points_stride']))
    colours = f.colours(stride) if cfg['points_color'] else None
    organized = bool(cfg['points_organized'])
    data = None
    if organized:
        rows, cols = res.points.shape[:2]
        data = f.buffers.bytes_for('points', rows * cols * cloud.point_step(colours is not None,
                                                                            res.points_normals is not None))
    return convert.points_to_pointcloud2(res.points, f.header, rgb=colours, normals=res.points_normals,
                                         organized=organized, data=data)


# In publishing order: the cloud, the costliest to pack, last.
OUTPUTS: tuple[Output, ...] = (
    Output('normals', 'depth/normals', Image, 'sensor_msgs/Image 32FC3', frozenset({'normals'}),
           _image('normals', '32FC3'),
           'unit surface normals (x, y, z) in the optical frame, facing the camera, NaN where depth is invalid; from '
           "the model's normal head, else from the published depth; same header"),
    Output('confidence', 'depth/confidence', Image, 'sensor_msgs/Image 32FC1', frozenset({'confidence'}),
           _image('confidence', '32FC1'),
           "0..1, the mask head's probability at the size of `depth/image` (same header); finite everywhere, also "
           'where depth is invalid (see Behaviour)'),
    Output('depth', 'depth/image', Image, 'sensor_msgs/Image 32FC1 (16UC1)', frozenset({'depth'}), _depth,
           'metres along the optical z axis at the camera resolution times `output_scale`; NaN invalid, +Inf beyond '
           '`max_depth` if `inf_beyond_max_depth` (REP 117/118); with `depth_encoding: 16UC1` millimetres, 0 invalid'),
    Output('compressed_depth', 'depth/image/compressedDepth', CompressedImage, 'sensor_msgs/CompressedImage',
           frozenset({'depth'}), _compressed_depth, timing='encode_depth', notes=
           "`depth/image` as image_transport's compressedDepth (format `32FC1; compressedDepth png`, or `rvl`, or "
           '16UC1 with `depth_encoding`), invalid beyond `compressed_depth_max`; encoded only while subscribed; '
           'same header'),
    Output('info', 'depth/camera_info', CameraInfo, 'sensor_msgs/CameraInfo', frozenset(),
           lambda f: f.camera_info(f.res.intrinsics, f.header),
           'same header and size as `depth/image`; K and P = the intrinsics used (given or recovered), scaled by '
           '`output_scale` as image_proc\'s resize scales them'),
    Output('mask', 'depth/mask', Image, 'sensor_msgs/Image mono8', frozenset({'valid'}), _mask,
           '255 where depth is valid (model mask, finite, within `max_depth`, not a flying pixel, confidence ≥ '
           '`min_confidence`), 0 elsewhere'),
    Output('mask_compressed', 'depth/mask/compressed', CompressedImage, 'sensor_msgs/CompressedImage',
           frozenset({'valid'}), _mask_compressed, timing='encode_mask', notes=
           "`depth/mask` as image_transport's compressed png (format `mono8; png compressed `); encoded only while "
           'subscribed; same header'),
    Output('points', 'points', PointCloud2, 'sensor_msgs/PointCloud2', frozenset({'points'}), _points,
           'x, y, z (+ rgb) (+ normal_x, normal_y, normal_z with `points_normals`) float32 in the optical frame; '
           'organized H×W (or decimated by `points_stride`) with NaN invalid, `is_dense=false`; or only valid '
           'points with `points_organized: false`',
           needs_if=lambda cfg: frozenset({'points_normals'}) if cfg['points_normals'] else frozenset()),
)
BY_NAME: dict[str, Output] = {o.name: o for o in OUTPUTS}
TOPICS: tuple[str, ...] = tuple(o.topic for o in OUTPUTS)
# The image_transport forms of another output: a client takes one or the other, so the benches' "every output"
# leaves them out (name them to measure them).
COMPRESSED: frozenset[str] = frozenset(o.name for o in OUTPUTS if o.msg_type is CompressedImage)


def stage_arrays(wanted: Iterable[str], cfg: Mapping) -> frozenset:
    """The frame stage arrays the `wanted` outputs are made of, with the frame's parameters `cfg`."""
    names: set[str] = set()
    for name in wanted:
        out = BY_NAME[name]
        names |= out.needs | out.needs_if(cfg)
    return frozenset(names)


def build(wanted: frozenset, frame: Frame, timings: dict | None = None) -> list[tuple[str, object]]:
    """(name, message) of every wanted output, in publishing order; the build time (ms) of each timed row into
    `timings` under its `timing` name."""
    built = []
    for o in OUTPUTS:
        if o.name in wanted:
            t0 = time.perf_counter()
            built.append((o.name, o.build(frame)))
            if o.timing and timings is not None:
                timings[o.timing] = (time.perf_counter() - t0) * 1000.0
    return built


def markdown_rows() -> list[str]:
    """The outputs' rows of docs/node.md's topic table."""
    return [f'| `{o.topic}` | {o.type_text} | out | {o.notes} |' for o in OUTPUTS]
