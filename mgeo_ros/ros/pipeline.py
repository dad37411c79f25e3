"""What the node does with one frame, in two stages: stage 1 decodes the frame that runs, picks its intrinsics,
rectifies it and runs the model; stage 2 turns the prediction into the output messages. The camera channel
(camera_channel.py) hands one stage's result to the other and publishes what stage 2 built.

Kept apart from node.py so that ROS setup (parameters, topics, threads) and per-frame work read separately.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgeo_ros.errors import BadInputError, MgeoError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.ros import cloud, convert, rectify, serialized
from mgeo_ros.runtime.frame_buffers import FrameBuffers
from mgeo_ros.runtime.frame_stage import FrameSettings, FrameStage, fov_degrees
from mgeo_ros.runtime.heap import keep_freed_buffers
from mgeo_ros.runtime.predictor import default_cache_dir, default_model_path
from mgeo_ros.runtime.scale_filter import ScaleFilter


@dataclass
class IncomingFrame:
    """A frame as the subscription received it: still serialized, so a frame the slot replaces costs nothing."""

    kind: str  # 'raw' (sensor_msgs/Image) | 'compressed' (sensor_msgs/CompressedImage)
    data: bytes  # the serialized message
    received: float  # time.monotonic() at the callback
    camera_info_for: object  # header -> the CameraInfo to use (or None), looked up when the frame is processed


@dataclass
class InferredFrame:
    """Stage 1's hand-over to stage 2: one frame's prediction and what its outputs are made with."""

    raw: object  # runtime.backends.base.RawOutput: the network's outputs at its own size
    intrinsics: Intrinsics | None  # the frame's camera (None: recovered from the model in stage 2)
    rgb: np.ndarray  # the (rectified) frame the model saw: its size, and the cloud's colours
    header: object  # the input's header (frame_id overridden if asked): every output carries it
    wanted: frozenset  # the outputs somebody subscribes to: depth, info, points, mask, confidence, normals
    cfg: dict  # the parameters the frame was started with (stage 2 uses the same)
    started: float  # time.perf_counter() when stage 1 began
    received: float  # time.monotonic() at the callback
    timings: dict = field(default_factory=dict)  # stage -> ms so far
    scale_reset: str = ''  # why the scale smoothing restarts before this frame ('' = it does not)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class FramePipeline:
    """Per-frame work and the state it needs across frames (model, scale filter, last camera, last size).

    `log` is the camera's logger; `stats` its counters; `log_bad(reason, text)` its throttled warning."""

    def __init__(self, cfg: dict, log, stats, log_bad) -> None:
        self.log = log
        self.stats = stats
        self.log_bad = log_bad
        self.predictor = None
        self.scale = ScaleFilter(cfg['scale_smoothing'], cfg['scale_reset_ratio'])
        self.stage = FrameStage(FrameSettings.from_mapping(cfg), self.scale)  # owns the frame's arrays
        self._size: tuple[int, int] | None = None
        self._camera_key: tuple | None = None
        self._warned: set[str] = set()
        self.rectifier = rectify.Rectifier()
        self.last_frame_id = ''
        # Frame-sized arrays freed by one frame are reused by the next instead of page-faulting in anew (process-wide).
        keep_freed_buffers()
        self.buffers = FrameBuffers()  # the mask's and the cloud's message bytes, rewritten each frame
        self._info_key: tuple | None = None
        self._info_msg = None
        # A restart of the scale smoothing found by stage 1 (new size, new camera) or asked by a parameter change is
        # applied by stage 2 before the next frame's scale update, so it falls between the right two frames.
        self._pending_reset = ''
        self._reset_lock = threading.Lock()

    # ---- setup ----------------------------------------------------------------------------------------------------
    def load_model(self, cfg: dict) -> None:
        """Load the predictor; on failure the node stays up and reports the reason in diagnostics."""
        path = Path(cfg['model']).expanduser() if cfg['model'] else default_model_path()
        self.stats.model_status = 'loading'
        try:
            if not path.exists():
                raise MgeoError(f'model {str(path)!r} does not exist'
                                + ('' if cfg['model'] else ' (no packaged default model; set the `model` parameter)'))
            from mgeo_ros.runtime import Predictor

            backend, precision = self._backend_choice(path, cfg)
            t0 = time.perf_counter()
            self.predictor = Predictor(str(path), backend=backend, num_tokens=cfg['num_tokens'],
                                       precision=precision, mask_threshold=cfg['mask_threshold'],
                                       threads=cfg['intra_op_threads'], engine_fallback=cfg['engine_fallback'],
                                       warn=self.log.warning)  # frame-size warnings in the node's log
            self.stats.backend = str(getattr(self.predictor, 'backend_name', cfg['backend']))
            fallback = getattr(getattr(self.predictor, 'backend', None), 'fallback_reason', None)
            if fallback:  # the engine failed its probe: say so wherever the backend is reported
                self.stats.backend += f' (fallback: {fallback})'
            self._place_post_graph()
            self.stats.model_status = 'ready'
            self.log.info(f'model {path} loaded on backend {self.stats.backend} in {_ms(t0):.0f} ms')
            from mgeo_ros.runtime.model_info import model_line

            self.log.info(f'model: {model_line(path, self.predictor.backend)}')
            from mgeo_ros.runtime.start_warnings import start_warnings

            for warning in start_warnings(cfg['model'], cfg['num_tokens'], self.predictor.backend):
                self.log.warning(warning)
        except Exception as exc:  # missing/corrupt model, backend absent: keep the node alive and say why
            self.stats.model_status = 'error'
            self.stats.model_error = f'{type(exc).__name__}: {exc}'
            self.log.error(f'cannot load model {str(path)!r}: {self.stats.model_error}. The node keeps running and '
                           'reports this in /diagnostics; fix the `model`/`backend` parameters and restart.')

    def _place_post_graph(self) -> None:
        """The frame stage's per-pixel work beside the network on a GPU backend (runtime/post_graph.py); numpy on
        the CPU, or when the GPU path cannot start (said in the log)."""
        from mgeo_ros.runtime.post_graph import post_graph_for

        try:
            self.stage.post = post_graph_for(self.predictor.backend, str(default_cache_dir()))
        except Exception as exc:  # TensorRT/cuda-python/onnxruntime-gpu missing or failing: numpy still works
            self.stage.post = None
            self.log.warning(f'per-pixel work stays on the CPU: the post graph cannot run beside the network ({exc})')
        where = 'numpy/OpenCV on the CPU' if self.stage.post is None else f'post graph on {self.stage.post.providers}'
        self.log.info(f'per-pixel work: {where}')

    def _backend_choice(self, path: Path, cfg: dict) -> tuple[str, str]:
        """Backend and precision for Predictor: `build_engine: false` never builds an engine from an .onnx (ONNX
        Runtime runs it instead); precision auto = fp32 (only the torch backend reads it)."""
        from mgeo_ros.runtime.predictor import choose_backend, model_kind

        kind = model_kind(str(path))
        backend = cfg['backend']
        resolved = choose_backend(kind) if backend == 'auto' else backend
        if kind == 'onnx' and resolved == 'tensorrt' and not cfg['build_engine']:
            if backend == 'tensorrt':
                raise MgeoError('backend tensorrt with an .onnx model needs build_engine: true (or give a prebuilt '
                                '.engine as `model`)')
            self.log.info('build_engine is false: running the .onnx model with ONNX Runtime instead of building a '
                          'TensorRT engine')
            backend = 'onnxruntime'
        precision = cfg['precision']
        if precision == 'auto':  # only torch reads it: engines and ONNX Runtime run the ONNX's own types
            precision = 'fp32'
        return backend, precision

    def on_config_changed(self, cfg: dict, updates: dict) -> None:
        """`cfg`: the parameters after the change; `updates`: the ones that changed."""
        self.scale.configure(cfg['scale_smoothing'], cfg['scale_reset_ratio'])
        if 'use_camera_info' in updates:
            self._reset_scale('use_camera_info changed')
        if 'mask_threshold' in updates and self.predictor is not None:
            self.predictor.mask_threshold = float(updates['mask_threshold'])

    # ---- per frame ------------------------------------------------------------------------------------------------
    def infer(self, frame: IncomingFrame, cfg: dict, wanted: frozenset) -> InferredFrame | None:
        """Stage 1: decode, intrinsics, rectify, model. None when the frame is skipped (counted and logged)."""
        t_start = time.perf_counter()
        timings = {'queue_wait': (time.monotonic() - frame.received) * 1000.0}
        if self.predictor is None:
            why = self.stats.model_error or self.stats.model_status
            self._bad('no_model', f'frame skipped: no model loaded ({why})')
            return None

        t0 = time.perf_counter()
        msg = self._parse(frame)
        rgb = None if msg is None else self._decode(frame.kind, msg, cfg)
        if rgb is None:
            return None
        timings['decode'] = _ms(t0)
        height, width = rgb.shape[:2]
        self._check_size(width, height)

        info = frame.camera_info_for(msg.header) if cfg['use_camera_info'] else None
        if cfg['rectify'] and info is not None:
            t0 = time.perf_counter()
            rgb = self._rectified(rgb, info)
            timings['rectify'] = _ms(t0)
        intrinsics = self._intrinsics(info, width, height, cfg)
        try:
            raw = self.predictor.forward(rgb)
        except (BadInputError, ValueError) as exc:
            self._bad('inference', f'inference rejected the frame: {exc}')
            return None
        timings.update(raw.timings_ms)
        header = msg.header
        if cfg['frame_id']:
            header.frame_id = cfg['frame_id']
        self.last_frame_id = header.frame_id
        with self._reset_lock:
            reset, self._pending_reset = self._pending_reset, ''
        return InferredFrame(raw, intrinsics, rgb, header, wanted, cfg, t_start, frame.received, timings, reset)

    def messages(self, frame: InferredFrame) -> list[tuple[str, object]]:
        """Stage 2: the frame stage's outputs (runtime/frame_stage.py) as messages of the wanted outputs, (output
        name, message) in publishing order; all share the frame's header and the intrinsics used.

        The images are the stage's own arrays, wrapped without a copy (FrameBuffers: reused from frame to frame,
        which rclpy's synchronous publish allows: publish them before the next call). Depth, cloud, normals and
        camera_info come from the same depth and intrinsics, so they agree exactly."""
        rgb, header, wanted, timings, cfg = frame.rgb, frame.header, frame.wanted, frame.timings, frame.cfg
        if frame.scale_reset:
            self.log.debug(f'metric scale smoothing restarts: {frame.scale_reset}')
            self.scale.reset()
        height, width = rgb.shape[:2]
        self.stage.settings = FrameSettings.from_mapping(cfg)
        asked = set(wanted) & {'depth', 'confidence', 'normals'}
        if 'points' in wanted:
            asked.add('point_planes')  # packed into the message in one pass with the colours and normals
        if 'mask' in wanted:
            asked.add('valid')
        if 'points' in wanted and cfg['points_normals']:
            asked.add('points_normals')
        t0 = time.perf_counter()
        try:
            res = self.stage.run(frame.raw, (width, height), frame.intrinsics, asked)
        except Exception as exc:
            if self.stage.post is None:
                raise
            self.log.error(f'post graph failed ({type(exc).__name__}: {exc}); per-pixel work moves to the CPU')
            self.stage.post = None
            res = self.stage.run(frame.raw, (width, height), frame.intrinsics, asked)
        timings['postprocess'] = _ms(t0)
        for stage, ms in res.timings_ms.items():
            timings[f'postprocess/{stage}'] = ms
        self._report(res, width, height)
        out: list[tuple[str, object]] = []
        if 'normals' in wanted:
            out.append(('normals', convert.image_around(res.data['normals'], height, width, '32FC3', header)))
        if 'confidence' in wanted:
            out.append(('confidence', convert.image_around(res.data['confidence'], height, width, '32FC1', header)))
        if 'depth' in wanted:
            out.append(('depth', convert.image_around(res.data['depth'], height, width, '32FC1', header)))
        if 'info' in wanted:
            out.append(('info', self._camera_info(res.intrinsics, header)))
        if 'mask' in wanted:
            data = self.buffers.bytes_for('mask', height * width)
            out.append(('mask', convert.mask_to_image(res.valid, header, data)))
        if 'points' in wanted:
            out.append(('points', self._cloud(res, rgb, header, cfg)))
        return out

    def _report(self, res, width: int, height: int) -> None:
        """The frame's scalars into the diagnostics."""
        fov_x, fov_y = fov_degrees(res.intrinsics)
        with self.stats.lock:
            self.stats.resolution = f'{width}x{height}'
            self.stats.scale_raw = res.scale.raw
            self.stats.scale_smoothed = res.scale.smoothed
            self.stats.scale_resets = self.scale.reset_count
            self.stats.shift = float(res.shift)
            self.stats.fov_x_deg, self.stats.fov_y_deg = fov_x, fov_y

    def _cloud(self, res, rgb: np.ndarray, header, cfg: dict):
        """The stage's cloud xyz (at points_stride, NaN invalid) with the frame's colours and the cloud normals."""
        stride = max(1, int(cfg['points_stride']))
        colours = rgb[::stride, ::stride] if cfg['points_color'] else None
        organized = bool(cfg['points_organized'])
        data = None
        if organized:  # packed straight into the bytes kept for the cloud
            rows, cols = (res.points if res.point_planes is None else res.point_planes[0]).shape[:2]
            step = cloud.point_step(colours is not None, res.points_normals is not None)
            data = self.buffers.bytes_for('points', rows * cols * step)
        points = res.points if res.point_planes is None else res.point_planes  # the post graph gives points
        return convert.points_to_pointcloud2(points, header, rgb=colours, normals=res.points_normals,
                                             organized=organized, data=data)

    def _parse(self, frame: IncomingFrame):
        """The serialized message's fields (pixel data not copied), or None (counted and logged as `image`) when
        its bytes are not a whole Image / CompressedImage."""
        try:
            if frame.kind == 'compressed':
                return serialized.parse_compressed_image(frame.data)
            return serialized.parse_image(frame.data)
        except BadInputError as exc:
            self._bad('image', f'image skipped: {exc}')
            return None

    def _decode(self, kind: str, msg, cfg: dict) -> np.ndarray | None:
        """RGB uint8 H x W x 3, or None (counted and logged) when the message is not a usable image. Oversized
        images (image_too_large) and damaged files (image_decode) are counted under their own reasons."""
        limit = cfg['max_input_pixels']
        try:
            if kind == 'compressed':
                rgb = convert.compressed_to_rgb8(msg, limit, warn=self._decoder_warning)
            else:
                rgb = convert.image_to_rgb8(msg, limit)
        except (BadInputError, ValueError) as exc:
            self._bad(getattr(exc, 'reason', 'image'), f'image skipped: {exc}')
            return None
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            self._bad('image', 'image skipped: it is empty (0 pixels)')
            return None
        return rgb

    def _camera_info(self, intr: Intrinsics, header):
        """The CameraInfo of `intr`, built once per camera and reused with each frame's header (publish copies it)."""
        key = (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height)
        if self._info_key != key:
            self._info_msg, self._info_key = convert.intrinsics_to_camera_info(intr), key
        self._info_msg.header = header
        return self._info_msg

    # ---- helpers ----------------------------------------------------------------------------------------------------
    def _bad(self, reason: str, text: str) -> None:
        self.stats.count_bad(reason)
        self.log_bad(reason, text)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(text)

    def _reset_scale(self, why: str) -> None:
        """Restart the scale smoothing before the next frame that stage 1 hands over."""
        with self._reset_lock:
            self._pending_reset = self._pending_reset or why

    def _check_size(self, width: int, height: int) -> None:
        if self._size is not None and self._size != (width, height):
            with self.stats.lock:
                self.stats.size_changes += 1
            self.log_bad('image_size_change', f'image size changed mid-stream from {self._size[0]}x{self._size[1]} '
                         f'to {width}x{height}; following it (scale smoothing restarts)')
            self._reset_scale('image size changed')
        self._size = (width, height)

    def _decoder_warning(self, text: str) -> None:
        self._bad('image_decode_warning', text)

    def _rectified(self, rgb: np.ndarray, info) -> np.ndarray:
        """The frame undistorted with its camera_info (`rectify`), or unchanged when it has no distortion or the
        camera_info cannot rectify it (counted as camera_info)."""
        if not rectify.has_distortion(info):
            return rgb
        try:
            return self.rectifier(rgb, info)
        except (BadInputError, ValueError) as exc:
            self._bad('camera_info', f'image not rectified: {exc}')
            return rgb

    def _intrinsics(self, info, width: int, height: int, cfg: dict) -> Intrinsics | None:
        """The CameraInfo's intrinsics (P when valid, else K; image_pipeline's rule), rescaled to the image;
        None (= recover from the model) otherwise."""
        intr, matrix = None, ''
        if cfg['use_camera_info'] and info is not None:
            try:
                intr, matrix = convert.camera_info_intrinsics(info)
            except (BadInputError, ValueError) as exc:
                self._bad('camera_info', f'camera_info ignored, intrinsics recovered from the image instead: {exc}')
            if intr is not None and not cfg['rectify'] and rectify.looks_unrectified(info):
                self._warn_once(f'unrectified{tuple(info.d)}', (
                    'camera_info has distortion (D != 0) but P equals K: this looks like an unrectified image_raw. '
                    'Depth and points assume a rectified image: feed image_rect (image_proc), or set rectify: true'))
            if intr is not None and (intr.width, intr.height) != (width, height):
                if abs(intr.width / intr.height - width / height) > 0.01:
                    self._warn_once(f'aspect{intr.width}x{intr.height}', (
                        f'camera_info is {intr.width}x{intr.height} but the image is {width}x{height} with another '
                        'aspect ratio; rescaling each axis on its own (correct only for a plain resize, not a crop)'))
                else:
                    self._warn_once(f'size{intr.width}x{intr.height}', (
                        f'camera_info is {intr.width}x{intr.height} but the image is {width}x{height}; '
                        'rescaling the intrinsics to the image'))
                intr = intr.resized(width, height)
        if intr is None:
            self._warn_once('recovered', 'no usable camera_info (or use_camera_info is false): recovering the '
                            'intrinsics from the model and publishing them on depth/camera_info')
        key = ('recovered',) if intr is None else tuple(round(v, 3) for v in (intr.fx, intr.fy, intr.cx, intr.cy))
        key += (width, height)
        if self._camera_key is not None and key != self._camera_key:
            with self.stats.lock:
                self.stats.camera_changes += 1
            self._reset_scale('camera changed')
        self._camera_key = key
        with self.stats.lock:
            self.stats.intrinsics_source = 'recovered' if intr is None else f'camera_info ({matrix})'
        return intr
