"""Every parameter of mgeo_depth_node, declared once: type, default, unit, range, and whether it may change live.

This module is plain Python (no rclpy), shared by every layer: `ros/node.py` turns the table into ROS parameter
declarations with descriptors, `mgeo eval` reads the node's params files against it, and `config/mgeo_depth.yaml`
documents the same names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mgeo_ros.cli_args import NUM_TOKENS_MAX, NUM_TOKENS_MIN
from mgeo_ros.errors import BadInputError

QOS_CHOICES = ('sensor_data', 'reliable', 'best_effort')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. `live` = may change while running; otherwise a change is refused with a reason."""

    name: str
    default: bool | int | float | str | tuple[str, ...]
    description: str
    unit: str = ''
    live: bool = False
    min: float | None = None
    max: float | None = None
    max_exclusive: bool = False
    min_exclusive: bool = False
    choices: tuple[str, ...] = ()

    @property
    def kind(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """The description with unit, range and liveness, as shown by `ros2 param describe`."""
        parts = [self.description]
        if self.unit:
            parts.append(f'Unit: {self.unit}.')
        if self.choices:
            parts.append('One of: ' + ', '.join(self.choices) + '.')
        if self.min is not None or self.max is not None:
            lo, hi = '(' if self.min_exclusive else '[', ')' if self.max_exclusive else ']'
            parts.append(f'Range: {lo}{self.min}, {self.max}{hi}.')
        parts.append('Changes apply live.' if self.live else 'Fixed at start (restart to change).')
        return ' '.join(parts)


PARAMS: tuple[ParamSpec, ...] = (
    # ---- model and backend (fixed: changing them means reloading the network) ------------------------------------
    ParamSpec('model', '', 'Model to run: a checkpoint directory (config.json + model.safetensors), a .pt file, an '
              '.onnx file or a TensorRT .engine. Empty = the packaged default model.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto picks the fastest one installed that has a device.',
              choices=('auto', 'tensorrt', 'onnxruntime', 'torch')),
    ParamSpec('precision', 'auto', 'Numeric precision of the torch backend on CUDA (fp16 = autocast; auto = fp32). '
              'TensorRT engines and ONNX Runtime compute in the ONNX\'s own types: fp16 comes from `mgeo export '
              '--precision fp16`.',
              choices=('auto', 'fp32', 'fp16')),
    ParamSpec('num_tokens', 1200, 'ViT token budget: sets the network input resolution; more is slower and finer.',
              unit='tokens', min=NUM_TOKENS_MIN, max=NUM_TOKENS_MAX),
    ParamSpec('build_engine', True, 'With an .onnx model and TensorRT available: build a TensorRT engine on first '
              'start and cache it (keyed by ONNX hash, TensorRT version, GPU, precision; can take minutes). false = '
              'never build: the .onnx runs on ONNX Runtime (backend auto) or start fails with the reason.'),
    ParamSpec('engine_fallback', False, 'A TensorRT engine that fails its probe (wrong output on this TensorRT/GPU) is '
              'replaced by ONNX Runtime on the .onnx beside it (or the one it was built from). false = the node '
              'stays up without a model and reports the failure in /diagnostics.'),
    ParamSpec('intra_op_threads', 0, 'CPU threads one inference may use: PyTorch set_num_threads (process-wide), '
              'ONNX Runtime intra_op_num_threads; TensorRT: not applicable (the GPU runs the network). 0 = auto: '
              'the usable cores minus one, at least 1, leaving a core to the executor, DDS and the per-frame numpy '
              'work (a pool as wide as the machine stalls at every operator when one of its threads is preempted).',
              unit='threads', min=0, max=256),
    ParamSpec('opencv_threads', 1, 'Worker threads OpenCV may use for the per-frame image work (JPEG decode, '
              'resizing, the outputs\' upsampling; cv2.setNumThreads, process-wide). 1 = each stage does its own '
              'on its thread: the least CPU per frame, since the node already runs its stages side by side (a pool '
              'spins on every core after each call); 0 = OpenCV\'s default pool, one thread per core.',
              unit='threads', min=0, max=256),
    # ---- inputs (fixed: changing them means new subscriptions) ----------------------------------------------------
    ParamSpec('image_transport', 'raw', 'Input image transport: raw subscribes the image topic (sensor_msgs/Image), '
              'compressed subscribes image/compressed (sensor_msgs/CompressedImage, jpeg/png).',
              choices=('raw', 'compressed')),
    ParamSpec('input_qos', 'best_effort', 'Reliability of the image and camera_info subscriptions; best_effort '
              'matches every camera driver.', choices=QOS_CHOICES),
    ParamSpec('input_qos_depth', 1, 'History depth of the input subscriptions.', unit='messages', min=1, max=100),
    ParamSpec('output_qos', 'reliable', 'Reliability of the depth, camera_info, points and mask publishers; '
              'reliable connects to both reliable (depth_image_proc, RTAB-Map, RViz default) and best-effort '
              'subscribers.', choices=QOS_CHOICES),
    ParamSpec('output_qos_depth', 2, 'History depth of the output publishers.', unit='messages', min=1, max=100),
    ParamSpec('cameras', (), 'Camera names served by this one process and one model: each subscribes '
              '<name>/image (or <name>/image/compressed) and <name>/camera_info and publishes every output under '
              '<name>/. Empty = one camera on the plain topic names.'),
    ParamSpec('max_batch', 0, 'Most frames of different cameras run as one batch (0 = what the model allows: '
              'torch any, an ONNX/engine its exported batch; 1 = one after another).', unit='frames', min=0,
              max=64),
    ParamSpec('diagnostics_period', 1.0, 'Period of the /diagnostics status message.', unit='s', min=0.1, max=60.0),
    # ---- live: camera, frame, depth range -------------------------------------------------------------------------
    ParamSpec('use_camera_info', True, 'Use the camera_info for intrinsics (rescaled to the image size): its P '
              'when filled in (a rectified image), else K; false = recover the intrinsics from the model and '
              'publish them.', live=True),
    ParamSpec('rectify', False, 'Undistort each image with its camera_info (K, D, R, P; plumb_bob, '
              'rational_polynomial or equidistant) before inference, for cameras that publish only a distorted '
              'image_raw; maps are built once per camera_info. Off: the image is taken as rectified (image_rect) '
              'and described by P.', live=True),
    ParamSpec('max_input_pixels', 4096 * 2160, 'Images with more pixels (width x height) are refused before they '
              'are decoded, from the PNG/JPEG header or the Image fields, and counted as image_too_large. The '
              'default admits 4K (4096 x 2160); 0 = no limit.', unit='pixels', live=True, min=0, max=1 << 30),
    ParamSpec('frame_id', '', 'Overrides the frame_id of every output header; empty = the input image frame_id '
              '(the camera optical frame).', live=True),
    ParamSpec('max_depth', 0.0, 'Depth beyond this is invalid in the depth image (NaN, or +Inf with '
              'inf_beyond_max_depth), the mask and the point cloud; 0 = no limit.', unit='m', live=True,
              min=0.0, max=1000.0),
    ParamSpec('inf_beyond_max_depth', False, 'Publish +Inf (REP 117 "too far") instead of NaN for pixels beyond '
              'max_depth in depth/image.', live=True),
    ParamSpec('mask_threshold', 0.5, 'Validity threshold on the model mask probability (higher = fewer, more '
              'reliable pixels).', live=True, min=0.0, max=1.0),
    ParamSpec('min_confidence', 0.0, 'Pixels whose depth/confidence (the mask head probability at the image size, '
              '0..1) is below this are invalid in the depth image, the mask and the point cloud; 0 = off. Acts on '
              'the published grid after upsampling; mask_threshold decides which network pixels count at all.',
              live=True, min=0.0, max=1.0),
    # ---- live: depth encoding and the compressed outputs (depth/image/compressedDepth, depth/mask/compressed) --------
    ParamSpec('depth_encoding', '32FC1', 'Encoding of depth/image and depth/image/compressedDepth: 32FC1 = metres, '
              'NaN invalid; 16UC1 = millimetres, 0 invalid (REP 118), for consumers that take only that; depth '
              'beyond 65.535 m, NaN and +Inf are 0.', live=True, choices=('32FC1', '16UC1')),
    ParamSpec('compressed_depth_format', 'png', 'Format of depth/image/compressedDepth (image_transport\'s '
              'compressedDepth: a 12-byte header, then a 16-bit PNG or an RVL stream). rvl is faster to encode, png '
              'smaller on smooth depth; a mostly invalid 32FC1 frame, whose rvl stock decoders refuse, goes out as '
              'png.', live=True, choices=('png', 'rvl')),
    ParamSpec('compressed_depth_max', 0.0, 'Depth at or beyond this is invalid on depth/image/compressedDepth (NaN '
              'once decoded; 0 with 16UC1). 0 = max_depth when it is set, else 100 m (outdoor scenes keep their '
              'depth out to 100 m; 16UC1 also stops at 65.535 m).', unit='m', live=True, min=0.0, max=1000.0),
    ParamSpec('compressed_depth_quantization', 100.0, 'Inverse-depth quantization q of a 32FC1 compressedDepth, '
              'the depth where one code step is about 1 m: a step is about d^2 / (q (q + 1)) metres at depth d (1 cm '
              'at 10 m with 100).', unit='m', live=True, min=1.0, max=150.0),
    ParamSpec('compressed_depth_png_level', 1, 'zlib level of the png compressedDepth and of depth/mask/compressed '
              '(0 = none, 9 = smallest); 1 encodes depth much faster than the plugin\'s 3 for a slightly '
              'larger message.', live=True, min=0, max=9),
    # ---- live: flying-pixel removal ------------------------------------------------------------------------------
    ParamSpec('flying_pixel_max_jump', 0.08, 'Flying-pixel removal: a pixel is invalid when the depth range of its '
              'valid neighbours (window of flying_pixel_radius) exceeds this fraction of its depth. 0 = off. A plane '
              'keeps every pixel further than 2 x radius / this (25 px) from its vanishing line: with 0.08 a floor '
              'seen from 0.3 m height is kept out to 6.3 m at f = 525 px, from 1 m out to 21 m.',
              unit='ratio', live=True, min=0.0, max=10.0),
    ParamSpec('flying_pixel_radius', 1, 'Half-size of the flying-pixel window: 1 = 3x3, 2 = 5x5 (wider removes '
              'more of a blurred edge and more of a distant floor).', unit='pixels', live=True, min=1, max=5),
    ParamSpec('flying_pixel_max_view_angle', 0.0, 'Also invalidate pixels whose surface normal is more than this '
              'angle from the viewing ray (grazing surfaces, edge veils); 0 = off. Needs normals: from the normal '
              'head, else computed from depth (a few ms at 640x480 on a CPU).',
              unit='deg', live=True, min=0.0, max=90.0, max_exclusive=True),
    # ---- live: point cloud ---------------------------------------------------------------------------------------
    ParamSpec('points_stride', 1, 'Keep every n-th pixel in both axes in the point cloud (1 = full resolution).',
              unit='pixels', live=True, min=1, max=64),
    ParamSpec('points_organized', True, 'true: organized cloud (height x width grid, NaN for invalid points, '
              'is_dense=false); false: only valid points, as one row (is_dense=true).', live=True),
    ParamSpec('points_color', False, 'Add the image colour to the cloud (x, y, z, rgb) instead of (x, y, z).',
              live=True),
    ParamSpec('points_normals', False, 'Add float32 fields normal_x, normal_y, normal_z (unit normals, optical '
              'frame, as on depth/normals) to the cloud.', live=True),
    # ---- live: output size -----------------------------------------------------------------------------------------
    ParamSpec('output_scale', 1.0, 'Size of every output (depth, mask, confidence, normals, the cloud, '
              'depth/camera_info) as a fraction of the frame size: W·s x H·s rounded as image_proc\'s resize rounds, '
              'K and P scaled by s as image_proc\'s resize scales them (header unchanged). The outputs are made at '
              'that size straight from the network\'s outputs, and a frame is decoded at a reduced size (JPEG: '
              'libjpeg\'s DCT scaling) when the network input and the outputs need at most half of it. 1 = the '
              'frame size.', unit='ratio', live=True, min=0.0, max=1.0, min_exclusive=True),
    # ---- live: temporal scale stabilization ------------------------------------------------------------------------
    ParamSpec('scale_smoothing', 0.0, 'Weight of the past in the log-space moving average of the metric scale '
              '(0 = off, 0.8 = strong). Resets on a camera change and on a jump beyond scale_reset_ratio.',
              live=True, min=0.0, max=1.0, max_exclusive=True),
    ParamSpec('scale_reset_ratio', 1.5, 'A raw scale that differs from the smoothed one by more than this factor '
              'restarts the smoothing from it.', unit='ratio', live=True, min=1.001, max=100.0),
    # ---- scale anchors (fixed: the sources set the subscriptions) ------------------------------------------------
    ParamSpec('scale_source', 'model', 'Where each frame\'s metric scale comes from: a comma-separated fallback '
              'list of depth (scale_anchor/depth), scan (scale_anchor/scan), points (scale_anchor/points), range '
              '(scale_anchor/range) and ground (camera_height above a flat floor); each frame uses the first source '
              'with a usable fit, else the model\'s own scale (model, always last). Only the listed sources are '
              'subscribed; the scale smoothing restarts when the source changes.'),
    ParamSpec('scale_anchor_min_points', 20, 'Matched anchor pixels a depth, scan or points fit needs (a range '
              'reading needs 1); fewer and the next source is tried.', unit='points', min=1, max=100000),
    ParamSpec('scale_anchor_max_age', 0.1, 'Largest stamp difference between a frame and the anchor message it '
              'uses (the nearest by stamp, before or after); none that close and the next source is tried.',
              unit='s', min=0.001, max=10.0),
    ParamSpec('scale_anchor_extrinsics', '', 'The scan/points/range sensor\'s pose in the camera\'s optical frame '
              'as 7 numbers "x y z qx qy qz qw" (m; as `ros2 run tf2_ros tf2_echo <camera_optical_frame> '
              '<sensor_frame>` prints it). Empty = TF (tf2_ros) when the anchor\'s frame_id differs from the '
              'image\'s, identity when they match. The depth source is registered to the camera and ignores it.'),
    ParamSpec('scale_anchor_transport', 'raw', 'Transport of the depth anchor: raw subscribes scale_anchor/depth '
              '(sensor_msgs/Image 32FC1 m or 16UC1 mm), compressedDepth subscribes '
              'scale_anchor/depth/compressedDepth (sensor_msgs/CompressedImage, png or rvl).',
              choices=('raw', 'compressedDepth')),
    ParamSpec('camera_height', 0.0, 'The ground source: the camera\'s height above a flat floor; 0 = off.',
              unit='m', min=0.0, max=100.0),
    ParamSpec('camera_pitch', 0.0, 'The ground source: the optical frame\'s tilt against gravity about its x axis '
              '(down positive).', unit='deg', min=-90.0, max=90.0),
    ParamSpec('camera_roll', 0.0, 'The ground source: the optical frame\'s roll against gravity about its z axis.',
              unit='deg', min=-90.0, max=90.0),
    ParamSpec('ground_max_tilt', 20.0, 'The ground source: the floor is read in the points below the horizon whose '
              'surface normal lies within this angle of the up direction camera_pitch and camera_roll give.',
              unit='deg', min=0.0, max=90.0),
    # ---- live: logging -------------------------------------------------------------------------------------------
    ParamSpec('log_throttle', 5.0, 'Minimum time between two log lines about the same kind of bad input.',
              unit='s', live=True, min=0.0, max=3600.0),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
# ---- per camera: with `cameras`, `<camera>.<name>` sets one of these for that camera alone -----------------------
PER_CAMERA = ('output_scale',)


def spec_name(name: str) -> str:
    """The declared parameter a name sets: itself, or NAME for a camera's own `<camera>.NAME` (NAME in PER_CAMERA)."""
    camera, _, tail = name.rpartition('.')
    return tail if camera and tail in PER_CAMERA else name


def camera_parameters(cameras: tuple[str, ...], cfg: dict) -> dict:
    """Each camera's own per-camera parameters, `<camera>.NAME`, at the node-wide value unless set."""
    return {f'{camera}.{name}': cfg[name] for camera in cameras for name in PER_CAMERA}


def for_camera(cfg: dict, camera: str) -> dict:
    """The parameters one camera's frames run with: `cfg` with the camera's own per-camera values."""
    own = {name: cfg[f'{camera}.{name}'] for name in PER_CAMERA if f'{camera}.{name}' in cfg}
    return {**cfg, **own} if own else cfg


def defaults() -> dict[str, bool | int | float | str]:
    return {p.name: p.default for p in PARAMS}


_TYPE_WORDS = {bool: 'a boolean (true or false)', int: 'an integer', float: 'a number (double)', str: 'a string',
               list: 'a list', bytes: 'a byte array'}


def validate(name: str, value) -> str | None:
    """Why `value` is not acceptable for parameter `name` (or a camera's own `<camera>.NAME`), or None when it is."""
    spec = SPECS.get(spec_name(name))
    if spec is None:
        return f'unknown parameter {name!r}'
    kind = spec.kind
    if kind is tuple:
        return _validate_names(name, value)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        got = _TYPE_WORDS.get(type(value), type(value).__name__)
        unit = f' (unit: {spec.unit})' if spec.unit else ''
        return f'parameter {name} must be {_TYPE_WORDS[kind]}, got {got} {value!r}{unit}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}; got {value!r}'
    if name in _TEXT_CHECKS:
        return _TEXT_CHECKS[name](value)
    if kind in (int, float):
        if not math.isfinite(float(value)):
            return f'{name} must be finite, got {value!r}'
        if spec.min is not None and (value <= spec.min if spec.min_exclusive else value < spec.min):
            op = '>' if spec.min_exclusive else '>='
            return f'{name} must be {op} {spec.min}{" " + spec.unit if spec.unit else ""}, got {value!r}'
        if spec.max is not None and (value >= spec.max if spec.max_exclusive else value > spec.max):
            op = '<' if spec.max_exclusive else '<='
            return f'{name} must be {op} {spec.max}{" " + spec.unit if spec.unit else ""}, got {value!r}'
    return None


def _check_scale_source(value: str) -> str | None:
    from mgeo_ros.runtime.scale_anchors import parse_scale_sources

    try:
        parse_scale_sources(value)
    except BadInputError as exc:
        return str(exc)
    return None


def anchor_extrinsics(value: str):
    """scale_anchor_extrinsics as a RigidTransform, or None when empty (raises BadInputError when malformed)."""
    from mgeo_ros.geometry.rigid import RigidTransform

    return RigidTransform.from_text(value)


def _check_extrinsics(value: str) -> str | None:
    try:
        anchor_extrinsics(value)
    except BadInputError as exc:
        return f'scale_anchor_extrinsics {value!r}: {exc}'
    return None


_TEXT_CHECKS = {'scale_source': _check_scale_source, 'scale_anchor_extrinsics': _check_extrinsics}
_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')


def _validate_names(name: str, value) -> str | None:
    """A list of distinct ROS name tokens (each becomes a topic namespace)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return f'{name} must be a list of strings, got {type(value).__name__} {value!r}'
    bad = [v for v in value if not _NAME.fullmatch(v)]
    if bad:
        return f'{name}: {bad} are not valid names (a letter, then letters, digits or _)'
    if len(set(value)) != len(value):
        return f'{name} lists a name twice: {list(value)}'
    return None


def check_change(name: str, old, new) -> str | None:
    """Why changing `name` from `old` to `new` at run time is refused, or None when it may apply live."""
    reason = validate(name, new)
    if reason is not None:
        return reason
    spec = SPECS[spec_name(name)]
    if not spec.live and new != old:
        return (f'{name} cannot change while the node runs (it sets up the model or the topics); '
                f'set it at start (params file or -p {name}:=...) and restart')
    return None


def coerce(name: str, value):
    """ROS delivers an integer for a float parameter set as `-p x:=2`, a list for a string array and None for an
    empty one; make it the declared type."""
    kind = SPECS[spec_name(name)].kind
    if kind is tuple:
        return () if value is None else tuple(value) if isinstance(value, list) else value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _usage_default(spec: ParamSpec) -> str:
    if spec.kind is tuple:
        return '[]' if not spec.default else '[' + ', '.join(spec.default) + ']'
    if spec.kind is bool:
        return 'true' if spec.default else 'false'
    if spec.kind is str:
        return repr(spec.default) if spec.default == '' else str(spec.default)
    return f'{spec.default:g}' if spec.kind is float else str(spec.default)


def usage(node_name: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> str:
    """`mgeo_depth_node --help`: how to start it, its topics and every parameter (unit, default, range), from PARAMS."""
    import textwrap

    lines = [f'usage: {node_name} [--lifecycle] [--help] [--ros-args -p NAME:=VALUE ... --params-file FILE '
             '-r FROM:=TO ...]',
             '',
             'Monocular metric depth (MoGe-2) for one or more cameras; every output carries its input\'s header.',
             '  --lifecycle   start as a managed (lifecycle) node, unconfigured',
             '  --help        print this and exit',
             '',
             'topics (relative: remap with -r, or put the node in a namespace; with `cameras` they sit under '
             '<name>/):',
             '  subscribed:  ' + ', '.join(inputs) + ' (image/compressed with image_transport:=compressed),',
             '               scale_anchor/{depth,scan,points,range} for the sources listed in scale_source',
             '  published:   ' + ', '.join(outputs) + ', /diagnostics',
             '',
             'parameters (set with -p NAME:=VALUE or a params file; `ros2 param describe` shows the same):']
    for spec in PARAMS:
        unit = f' [{spec.unit}]' if spec.unit else ''
        rng = ''
        if spec.min is not None or spec.max is not None:
            rng = f', range {spec.min:g}..{spec.max:g}' + (' (exclusive)' if spec.max_exclusive else '') \
                + (' (above the lower bound)' if spec.min_exclusive else '')
        choices = f', one of {"|".join(spec.choices)}' if spec.choices else ''
        live = ', live' if spec.live else ''
        lines.append(f'  {spec.name}{unit} (default {_usage_default(spec)}{rng}{choices}{live})')
        lines += textwrap.wrap(spec.description, 110, initial_indent='      ', subsequent_indent='      ')
    return '\n'.join(lines) + '\n'


def undeclared_warnings(overrides: list[str], declared) -> list[str]:
    """One warning per parameter override (-p NAME:=..., a params file) the node does not declare, naming the
    nearest declared parameter: such a value would otherwise be ignored without a word."""
    from mgeo_ros.cli_args import nearest

    known = set(declared)
    out = []
    for name in sorted(set(overrides)):
        if name in known or name.startswith('qos_overrides.'):
            continue
        near = nearest(name, [p.name for p in PARAMS])
        hint = f'; did you mean {near}?' if near else '; the declared ones are listed by --help'
        out.append(f'parameter {name!r} is not a parameter of this node and is ignored{hint}')
    return out


# ---- the node's parameters outside ROS (`mgeo eval --params-file/--param`) ---------------------------------------
NODE_NAME = 'mgeo_depth_node'


def _section_applies(key: str, node_name: str) -> bool:
    """Whether a params file's top-level key may address the node in some namespace: `/**`, `/robot/**`, its name
    alone or under a namespace (`/robot/mgeo_depth_node`, `/**/mgeo_depth_node`). Outside ROS there is no
    namespace to tell them apart, so every such section counts."""
    return key.strip().rstrip('/').split('/')[-1] in ('**', node_name)


def read_params_file(path, node_name: str = NODE_NAME) -> dict:
    """The parameters a ROS params file gives the node (every `ros__parameters` section addressed to it, in file
    order, later values winning), coerced to the declared types and validated; raises BadInputError naming the file
    and the parameter."""
    from pathlib import Path

    import yaml

    from mgeo_ros.errors import BadInputError

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f'--params-file {path}: no such file (expected the node\'s ROS params file, e.g. '
                            'config/mgeo_depth.yaml)')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BadInputError(f'--params-file {path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise BadInputError(f'--params-file {path}: expected `/**:` or `{node_name}:` with `ros__parameters:` '
                            'under it, as the node reads it')
    values: dict = {}
    for key, section in data.items():
        if _section_applies(str(key), node_name) and isinstance(section, dict):
            values.update(section.get('ros__parameters') or {})
    if not values and not any(_section_applies(str(k), node_name) for k in data):
        raise BadInputError(f'--params-file {path} has no section for {node_name} (top-level keys: '
                            f'{", ".join(map(str, data))}); expected `/**:` or `{node_name}:` with `ros__parameters:`')
    return {name: checked(name, value, f'--params-file {path}') for name, value in values.items()}


def parse_assignment(text: str) -> tuple[str, object]:
    """`NAME=VALUE` (also `NAME:=VALUE`, as `-p` takes it), VALUE read as YAML the way ROS reads `-p` values;
    validated."""
    import yaml

    from mgeo_ros.errors import BadInputError

    name, sep, value = text.partition(':=') if ':=' in text else text.partition('=')
    if not sep or not name.strip():
        raise BadInputError(f'--param {text!r}: expected NAME=VALUE, e.g. --param min_confidence=0.3')
    try:
        parsed = yaml.safe_load(value) if value.strip() else ''
    except yaml.YAMLError:
        parsed = value
    return name.strip(), checked(name.strip(), parsed, '--param')


def checked(name: str, value, where: str):
    """`value` coerced to the declared type of `name`; BadInputError (naming `where` and the nearest declared name)
    when the node would refuse it."""
    from mgeo_ros.cli_args import nearest
    from mgeo_ros.errors import BadInputError

    if name not in SPECS:
        near = nearest(name, [p.name for p in PARAMS])
        hint = f'; did you mean {near}?' if near else '; `mgeo_depth_node --help` lists them'
        raise BadInputError(f'{where}: {name!r} is not a parameter of {NODE_NAME}{hint}')
    value = coerce(name, value)
    reason = validate(name, value)
    if reason is not None:
        raise BadInputError(f'{where}: {reason}')
    return value


def node_settings(params_files=(), assignments=()) -> dict:
    """Every parameter as the node would start with: the declared defaults, then each params file, then each
    `NAME=VALUE`, in that order (as `--params-file` then `-p` on the node's command line)."""
    values = defaults()
    for path in params_files:
        values.update(read_params_file(path))
    for text in assignments:
        name, value = parse_assignment(text)
        values[name] = value
    return values


# ---- the parameter table of the docs, generated from PARAMS ------------------------------------------------------
TABLE_BEGIN = ('<!-- parameters: generated by `python -m mgeo_ros.node_params --update FILE`; '
               'edit node_params.py -->')
TABLE_END = '<!-- parameters: end -->'
_KIND_WORDS = {bool: 'bool', int: 'int', float: 'float', str: 'str', tuple: 'str[]'}


def _default_text(spec: ParamSpec) -> str:
    value = spec.default
    if isinstance(value, bool):
        return f'`{str(value).lower()}`'
    if isinstance(value, tuple):
        return '`[' + ', '.join(value) + ']`'
    if isinstance(value, str):
        return f'`"{value}"`'
    return f'`{value}`'


def _range_text(spec: ParamSpec) -> str:
    if spec.choices:
        return ', '.join(spec.choices)
    if spec.kind is tuple:
        return 'names: a letter, then letters, digits, `_`'
    if spec.min is not None or spec.max is not None:
        return (f'{"(" if spec.min_exclusive else "["}{spec.min}, {spec.max}'
                f'{")" if spec.max_exclusive else "]"}')
    return ''


def markdown_table() -> str:
    """Every parameter as a Markdown table (the one docs/node.md carries between TABLE_BEGIN and TABLE_END)."""
    rows = ['| parameter | type | default | unit | range / choices | live | what it does |',
            '|---|---|---|---|---|---|---|']
    for p in PARAMS:
        cells = [f'`{p.name}`', _KIND_WORDS[p.kind], _default_text(p), p.unit, _range_text(p),
                 'yes' if p.live else 'no', p.description.replace('|', '\\|')]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def between_markers(text: str, begin: str, end: str, body: str) -> str:
    """`text` with the part between the `begin` and `end` marker lines replaced by `body` (unchanged without them):
    how the docs' generated tables are kept in step with their declarations."""
    if begin not in text:
        return text
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f'{head}{begin}\n{body}\n{end}{tail}'


def with_table(text: str) -> str:
    """`text` with the part between the table markers replaced by today's table (unchanged when it has none)."""
    return between_markers(text, TABLE_BEGIN, TABLE_END, markdown_table())


def main(argv: list[str] | None = None) -> int:
    """`--markdown` prints the table; `--update FILE ...` rewrites it between the markers in each file."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog='python -m mgeo_ros.node_params',
                                     description='the mgeo_depth_node parameter table, from its one declaration')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--markdown', action='store_true', help='print the table as Markdown')
    group.add_argument('--update', nargs='+', metavar='FILE', help='rewrite the table between the markers')
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table())
        return 0
    for name in args.update:
        path = Path(name)
        text = path.read_text()
        if TABLE_BEGIN not in text:
            print(f'{name}: no parameter table markers ({TABLE_BEGIN})')
            return 1
        path.write_text(with_table(text))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
