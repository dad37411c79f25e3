"""What the node does with one frame, in two stages: stage 1 decodes the frame that runs, picks its intrinsics,
rectifies and preprocesses it (`prepare`, on its own thread while the model runs the frame before), then runs the
model (`infer`, the camera's session: runtime/camera_session.py); stage 2 has the session make the frame's arrays
and builds the output messages of them (outputs.py). The camera channel (camera_channel.py) hands one stage's
result to the other and publishes what stage 2 built.

Kept apart from node.py so that ROS setup (parameters, topics, threads) and per-frame work read separately.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.output_scale import output_size, scaled_intrinsics
from mgeo_ros.image_codec import (
    ReducedFrame,
    compressed_size,
    compressed_to_rgb8_reduced,
    image_to_rgb8_reduced,
    reduction_factor,
)
from mgeo_ros.ros import convert, outputs, rectify, serialized
from mgeo_ros.runtime.camera_session import CameraSession, LoadedModel
from mgeo_ros.runtime.frame_buffers import FrameBuffers
from mgeo_ros.runtime.frame_stage import fov_degrees
from mgeo_ros.runtime.heap import keep_freed_buffers
from mgeo_ros.runtime.predictor import ModelInput


@dataclass
class IncomingFrame:
    """A frame as the subscription received it: still serialized, so a frame the slot replaces costs nothing."""

    kind: str  # 'raw' (sensor_msgs/Image) | 'compressed' (sensor_msgs/CompressedImage)
    data: bytes  # the serialized message
    received: float  # time.monotonic() at the callback
    camera_info_for: object  # header -> the CameraInfo to use (or None), looked up when the frame is processed


@dataclass
class PreparedFrame:
    """Stage 1's frame ready for the model: decoded (maybe at a reduced size), rectified, preprocessed, with its
    camera."""

    rgb: np.ndarray  # RGB uint8, what the model sees (and the cloud's colours)
    model_input: ModelInput  # rgb preprocessed for the network (valid until the prepare after next)
    intrinsics: Intrinsics | None  # the frame's camera (None: recovered from the model in stage 2)
    header: object  # the input's header (frame_id overridden if asked)
    wanted: frozenset  # the outputs somebody subscribed to when the frame was taken
    cfg: dict  # the parameters the frame was started with
    started: float  # time.perf_counter() when its preparation began
    received: float  # time.monotonic() at the callback
    timings: dict  # stage -> ms so far
    frame_size: tuple[int, int]  # (W, H) as sent


@dataclass
class InferredFrame:
    """Stage 1's hand-over to stage 2: one frame's prediction and what its outputs are made with."""

    raw: object  # runtime.backends.base.RawOutput: the network's outputs at its own size
    intrinsics: Intrinsics | None  # the frame's camera (None: recovered from the model in stage 2)
    rgb: np.ndarray  # the (rectified) frame the model saw, maybe decoded at a reduced size: the cloud's colours
    header: object  # the input's header (frame_id overridden if asked): every output carries it
    wanted: frozenset  # the outputs (outputs.OUTPUTS names) somebody subscribes to
    cfg: dict  # the parameters the frame was started with (stage 2 uses the same)
    started: float  # time.perf_counter() when stage 1 began
    received: float  # time.monotonic() at the callback
    timings: dict = field(default_factory=dict)  # stage -> ms so far
    scale_reset: str = ''  # why the scale smoothing restarts before this frame ('' = it does not)
    # (W, H) of the frame as sent (None: rgb's size): the outputs are output_size(W, H, output_scale)
    frame_size: tuple[int, int] | None = None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _cpu_ms(t0: float) -> float:
    """This thread's CPU ms since `t0` (time.thread_time()): what a stage costs the machine, not its wait."""
    return (time.thread_time() - t0) * 1000.0


def sent_size(kind: str, msg) -> tuple[int, int] | None:
    """(W, H) of a parsed Image / CompressedImage as sent, read from its fields or its PNG/JPEG header without
    decoding; None when the header does not say."""
    return compressed_size(msg) if kind == 'compressed' else (int(msg.width), int(msg.height))


class FramePipeline:
    """Per-frame work of one camera: its session (model, frame stage, scale filter: runtime/camera_session.py) and
    what stage 1 and 2 keep across frames here (last camera, last size, the message bytes).

    `log` is the camera's logger; `stats` its counters; `log_bad(reason, text)` its throttled warning."""

    def __init__(self, cfg: dict, log, stats, log_bad) -> None:
        self.log = log
        self.stats = stats
        self.log_bad = log_bad
        self.session = CameraSession(cfg, log)
        self._size: tuple[int, int] | None = None
        self._camera_key: tuple | None = None
        self._warned: set[str] = set()
        self.rectifier = rectify.Rectifier()
        self.last_frame_id = ''
        # Frame-sized arrays freed by one frame are reused by the next instead of page-faulting in anew (process-wide).
        keep_freed_buffers()
        self.buffers = FrameBuffers()  # the mask's and the cloud's message bytes, rewritten each frame
        self.camera_info = outputs.CameraInfoMessage()

    # ---- setup ----------------------------------------------------------------------------------------------------
    def attach(self, model: LoadedModel | None, camera: str = '') -> None:
        """Run this camera's frames on the node's model (None: it did not load; frames are skipped and counted)."""
        if model is not None:
            self.session.attach(model, camera)

    def on_config_changed(self, cfg: dict, updates: dict) -> None:
        """`cfg`: the parameters after the change; `updates`: the ones that changed."""
        self.session.configure(cfg, updates)

    # ---- per frame ------------------------------------------------------------------------------------------------
    def prepare(self, frame: IncomingFrame, cfg: dict, wanted: frozenset) -> PreparedFrame | None:
        """Stage 1, its CPU part: decode, intrinsics, rectify, preprocess. None when the frame is skipped (counted
        and logged). It runs on its own thread while the model runs the frame before (camera_channel.py)."""
        t_start = time.perf_counter()
        timings = {'queue_wait': (time.monotonic() - frame.received) * 1000.0}
        if self.session.predictor is None:
            self._no_model()
            return None

        t0, cpu0 = time.perf_counter(), time.thread_time()
        msg = self._parse(frame)
        decoded = None if msg is None else self._decode(frame.kind, msg, cfg)
        if decoded is None:
            return None
        timings['decode'], timings['decode_cpu'] = _ms(t0), _cpu_ms(cpu0)
        rgb, (width, height) = decoded.rgb, decoded.frame_size
        self._check_size(width, height)

        info = frame.camera_info_for(msg.header) if cfg['use_camera_info'] else None
        if cfg['rectify'] and info is not None:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            rgb = self._rectified(rgb, info, None if decoded.factor == 1 else decoded.scale)
            timings['rectify'], timings['rectify_cpu'] = _ms(t0), _cpu_ms(cpu0)
        intrinsics = self._intrinsics(info, width, height, cfg)
        try:
            model_input = self.session.prepare(rgb)
        except (BadInputError, ValueError) as exc:
            self._bad('inference', f'inference rejected the frame: {exc}')
            return None
        header = msg.header
        if cfg['frame_id']:
            header.frame_id = cfg['frame_id']
        timings['prepare'] = _ms(t_start)
        return PreparedFrame(rgb, model_input, intrinsics, header, wanted, cfg, t_start, frame.received, timings,
                             (width, height))

    def infer(self, frame: PreparedFrame) -> InferredFrame | None:
        """Stage 1, the model: the prepared frame through the network. None when the frame is skipped."""
        if self.session.predictor is None:
            self._no_model()
            return None
        try:
            raw = self.session.run(frame.model_input)
        except (BadInputError, ValueError) as exc:
            self._bad('inference', f'inference rejected the frame: {exc}')
            return None
        timings = frame.timings
        timings.update(raw.timings_ms)
        self.last_frame_id = frame.header.frame_id
        return InferredFrame(raw, frame.intrinsics, frame.rgb, frame.header, frame.wanted, frame.cfg, frame.started,
                             frame.received, timings, self.session.take_reset(), frame.frame_size)

    def _no_model(self) -> None:
        why = self.stats.model_error or self.stats.model_status
        self._bad('no_model', f'frame skipped: no model loaded ({why})')

    def messages(self, frame: InferredFrame) -> list[tuple[str, object]]:
        """Stage 2: the session's frame stage arrays (runtime/frame_stage.py) for the wanted outputs, and their
        messages (outputs.py), (output name, message) in publishing order; all share the frame's header and the
        intrinsics used. Every output is made at output_size(W, H, output_scale) straight from the network's outputs,
        with the frame's intrinsics scaled as image_proc's resize scales them (geometry/output_scale.py).

        The images are the stage's own arrays, wrapped without a copy (FrameBuffers: reused from frame to frame,
        which rclpy's synchronous publish allows: publish them before the next call). Depth, cloud, normals and
        camera_info come from the same depth and intrinsics, so they agree exactly."""
        rgb, wanted, timings, cfg = frame.rgb, frame.wanted, frame.timings, frame.cfg
        width, height = frame.frame_size or (rgb.shape[1], rgb.shape[0])
        scale = cfg['output_scale']
        intrinsics = None if frame.intrinsics is None else scaled_intrinsics(frame.intrinsics, scale)
        t0, cpu0 = time.perf_counter(), time.thread_time()
        stamp = frame.header.stamp.sec + frame.header.stamp.nanosec * 1e-9
        res = self.session.outputs(frame.raw, output_size(width, height, scale), intrinsics,
                                   outputs.stage_arrays(wanted, cfg), cfg, frame.scale_reset, stamp)
        timings['postprocess'], timings['postprocess_cpu'] = _ms(t0), _cpu_ms(cpu0)
        for stage, ms in res.timings_ms.items():
            timings[f'postprocess/{stage}'] = ms
        self._report(res, width, height, rgb)
        return outputs.build(wanted, outputs.Frame(res, rgb, frame.header, cfg, self.buffers, self.camera_info),
                             timings)

    def _report(self, res, width: int, height: int, rgb: np.ndarray) -> None:
        """The frame's scalars into the diagnostics."""
        fov_x, fov_y = fov_degrees(res.intrinsics)
        with self.stats.lock:
            self.stats.resolution = f'{width}x{height}'
            self.stats.decoded = f'{rgb.shape[1]}x{rgb.shape[0]}'
            self.stats.output_size = '{}x{}'.format(*res.size)
            self.stats.scale_raw = res.scale.raw
            self.stats.scale_smoothed = res.scale.smoothed
            self.stats.scale_resets = self.session.scale.reset_count
            self.stats.shift = float(res.shift)
            self.stats.fov_x_deg, self.stats.fov_y_deg = fov_x, fov_y
            if self.session.anchoring is not None:
                self.stats.scale_anchor = self.session.anchoring.diagnostics()

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

    def decode_factor(self, size: tuple[int, int] | None, cfg: dict) -> int:
        """1, 2, 4 or 8: how much smaller than sent a frame of `size` (W, H) is decoded, so that it still covers
        the largest size it is used at (the network input, the outputs at output_scale); 1 for an unknown size."""
        if size is None or min(size) <= 0 or cfg['output_scale'] >= 1.0:
            return 1  # outputs at the frame size need every pixel
        out_w, out_h = output_size(*size, cfg['output_scale'])
        net_w, net_h = self.session.predictor.network_size(*size)
        return reduction_factor(*size, max(out_w, net_w), max(out_h, net_h))

    def _decode(self, kind: str, msg, cfg: dict) -> ReducedFrame | None:
        """The frame as RGB uint8, decoded at the size `decode_factor` allows (JPEG by libjpeg's DCT scaling, raw
        shrunk from the message bytes), or None (counted and logged) when the message is not a usable image.
        Oversized images (image_too_large) and damaged files (image_decode) are counted under their own reasons."""
        limit = cfg['max_input_pixels']
        try:
            factor = self.decode_factor(sent_size(kind, msg), cfg)
            if kind == 'compressed':
                frame = compressed_to_rgb8_reduced(msg, factor, limit, warn=self._decoder_warning)
            else:
                frame = image_to_rgb8_reduced(msg, factor, limit)
        except (BadInputError, ValueError) as exc:
            self._bad(getattr(exc, 'reason', 'image'), f'image skipped: {exc}')
            return None
        if frame.rgb.shape[0] == 0 or frame.rgb.shape[1] == 0:
            self._bad('image', 'image skipped: it is empty (0 pixels)')
            return None
        return frame

    # ---- helpers ----------------------------------------------------------------------------------------------------
    def _bad(self, reason: str, text: str) -> None:
        self.stats.count_bad(reason)
        self.log_bad(reason, text)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(text)

    def _check_size(self, width: int, height: int) -> None:
        if self._size is not None and self._size != (width, height):
            with self.stats.lock:
                self.stats.size_changes += 1
            self.log_bad('image_size_change', f'image size changed mid-stream from {self._size[0]}x{self._size[1]} '
                         f'to {width}x{height}; following it (scale smoothing restarts)')
            self.session.request_reset('image size changed')
        self._size = (width, height)

    def _decoder_warning(self, text: str) -> None:
        self._bad('image_decode_warning', text)

    def _rectified(self, rgb: np.ndarray, info, scale: tuple[float, float] | None = None) -> np.ndarray:
        """The frame undistorted with its camera_info (`rectify`; scaled first by `scale` when the frame was decoded
        at a reduced size), or unchanged when it has no distortion or the camera_info cannot rectify it (counted as
        camera_info)."""
        if not rectify.has_distortion(info):
            return rgb
        try:
            return self.rectifier(rgb, info, scale)
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
            self.session.request_reset('camera changed')
        self._camera_key = key
        with self.stats.lock:
            self.stats.intrinsics_source = 'recovered' if intr is None else f'camera_info ({matrix})'
        return intr
