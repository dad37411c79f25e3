"""One camera's model-side work, the same for every camera of a node: the shared model's forward through its own
preprocessing, the frame stage and where its per-pixel work runs (the post graph beside a GPU backend, numpy/OpenCV
otherwise, and the fall back from one to the other), and what is carried from frame to frame (the scale filter and
its restarts). The ROS node (ros/) decodes frames, builds and publishes messages; it asks a session for the rest.

Loading: `load_model` opens the model once (backend choice, the engine fallback), a `LoadedModel` shares its
backend between the cameras (through a `SharedModel` queue when there are several), and `CameraSession.attach`
gives each camera its view and its per-pixel placement.

Scale: `CameraSession.scale_source` is where a metric scale from outside the network (a fit to the robot's own
range sensors) replaces the model's for a frame, before the scale filter and the per-pixel work.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgeo_ros.errors import MgeoError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import unproject
from mgeo_ros.runtime import post_graph
from mgeo_ros.runtime.backends.base import RawOutput
from mgeo_ros.runtime.devices import set_opencv_threads
from mgeo_ros.runtime.frame_stage import FrameOutputs, FrameSettings, FrameStage, Recovery
from mgeo_ros.runtime.postprocess import network_depth
from mgeo_ros.runtime.predictor import (
    ModelInput,
    Predictor,
    choose_backend,
    default_cache_dir,
    default_model_path,
    model_kind,
)
from mgeo_ros.runtime.scale_filter import ScaleFilter
from mgeo_ros.runtime.scale_source import ScaleAnchoring

# A frame's metric scale from another source than the network (runtime/scale_source.py's ScaleAnchoring): given the
# frame's stamp (seconds; None when it has none), its network outputs and their recovery (shift, mask, intrinsics,
# the model's scale), the scale to use, or None to keep the model's.
ScaleSource = Callable[['float | None', RawOutput, Recovery], 'float | None']


@dataclass
class LoadedModel:
    """The model every camera of a node shares: one backend, behind a `SharedModel` queue when several cameras
    batch their frames through it."""

    predictor: Predictor  # the loaded model (its backend, token budget, input size, mask threshold)
    path: Path
    label: str  # the backend as reported (with the engine's fallback reason)
    shared: object = None  # runtime.batching.SharedModel, or None for one camera

    def view(self, camera: str, warn: Callable[[str], None]) -> Predictor:
        """The Predictor one camera runs its frames with (its own preprocessing buffers and warnings)."""
        if self.shared is not None:
            return self.shared.view(camera, warn=warn)
        base = self.predictor
        return Predictor.on_backend(base.backend, base.num_tokens, base.preprocessor.input_size, base.mask_threshold,
                                    warn)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        self.shared = None


def backend_choice(path: Path, cfg: Mapping, info: Callable[[str], None]) -> tuple[str, str]:
    """Backend and precision for Predictor: `build_engine: false` never builds an engine from an .onnx (ONNX
    Runtime runs it instead); precision auto = fp32 (only the torch backend reads it)."""
    kind = model_kind(str(path))
    backend = cfg['backend']
    resolved = choose_backend(kind) if backend == 'auto' else backend
    if kind == 'onnx' and resolved == 'tensorrt' and not cfg['build_engine']:
        if backend == 'tensorrt':
            raise MgeoError('backend tensorrt with an .onnx model needs build_engine: true (or give a prebuilt '
                            '.engine as `model`)')
        info('build_engine is false: running the .onnx model with ONNX Runtime instead of building a TensorRT engine')
        backend = 'onnxruntime'
    precision = cfg['precision']
    if precision == 'auto':  # only torch reads it: engines and ONNX Runtime run the ONNX's own types
        precision = 'fp32'
    return backend, precision


def load_model(cfg: Mapping, cameras: int, log) -> LoadedModel:
    """Open the model the node's parameters name (`cfg`: model, backend, build_engine, precision, num_tokens,
    mask_threshold, intra_op_threads, opencv_threads, engine_fallback, max_batch) for `cameras` cameras; raises
    what stops it."""
    path = Path(cfg['model']).expanduser() if cfg['model'] else default_model_path()
    if not path.exists():
        raise MgeoError(f'model {str(path)!r} does not exist'
                        + ('' if cfg['model'] else ' (no packaged default model; set the `model` parameter)'))
    backend, precision = backend_choice(path, cfg, log.info)
    set_opencv_threads(cfg['opencv_threads'])
    t0 = time.perf_counter()
    predictor = Predictor(str(path), backend=backend, num_tokens=cfg['num_tokens'], precision=precision,
                          mask_threshold=cfg['mask_threshold'], threads=cfg['intra_op_threads'],
                          engine_fallback=cfg['engine_fallback'], warn=log.warning)
    label = str(predictor.backend_name)
    fallback = getattr(predictor.backend, 'fallback_reason', None)
    if fallback:  # the engine failed its probe: say so wherever the backend is reported
        label += f' (fallback: {fallback})'
    log.info(f'model {path} loaded on backend {label} in {(time.perf_counter() - t0) * 1e3:.0f} ms')
    from mgeo_ros.runtime.model_info import model_line

    log.info(f'model: {model_line(path, predictor.backend)}')
    from mgeo_ros.runtime.start_warnings import start_warnings

    for warning in start_warnings(cfg['model'], cfg['num_tokens'], predictor.backend):
        log.warning(warning)
    model = LoadedModel(predictor, path, label)
    if cameras > 1:
        from mgeo_ros.runtime.batching import SharedModel

        model.shared = SharedModel(predictor, cfg['max_batch'])
        log.info(f'one model serves {cameras} cameras, up to {model.shared.max_batch} frames per forward')
    return model


def per_pixel_placement(backend) -> post_graph.PostGraph | post_graph.TensorRTPostGraph | None:
    """Where a camera's per-pixel work runs beside `backend` (runtime/post_graph.py: `post_graph_for`); None =
    numpy/OpenCV on the CPU. Asked once per camera, so each camera gets its own graph and buffers."""
    return post_graph.post_graph_for(backend, str(default_cache_dir()))


class CameraSession:
    """One camera's model, frame stage and cross-frame state. Stage 1 (`forward`) and stage 2 (`outputs`) may run
    on two threads; a scale restart asked from any thread falls between the right two frames (`take_reset`)."""

    def __init__(self, cfg: Mapping, log) -> None:
        self.log = log
        self.predictor: Predictor | None = None
        self.scale = ScaleFilter(cfg['scale_smoothing'], cfg['scale_reset_ratio'])
        self.stage = FrameStage(FrameSettings.from_mapping(cfg), self.scale)  # owns the frame's arrays
        self.scale_source: ScaleSource | None = None  # a scale from outside the network (None: the model's)
        self.anchoring: ScaleAnchoring | None = None  # the camera's scale anchors (`use_anchors`)
        self._pending_reset = ''
        self._reset_lock = threading.Lock()

    # ---- setup ----------------------------------------------------------------------------------------------------
    def attach(self, model: LoadedModel, camera: str = '') -> None:
        """Run this camera's frames on `model`, its per-pixel work where `per_pixel_placement` puts it (numpy when
        the post graph cannot start, said in the log)."""
        self.predictor = model.view(camera, self.log.warning)
        try:
            self.stage.post = per_pixel_placement(model.predictor.backend)
        except Exception as exc:  # TensorRT/cuda-python/onnxruntime-gpu missing or failing: numpy still works
            self.stage.post = None
            self.log.warning(f'per-pixel work stays on the CPU: the post graph cannot run beside the network ({exc})')
        where = 'numpy/OpenCV on the CPU' if self.stage.post is None else f'post graph on {self.stage.post.providers}'
        self.log.info(f'per-pixel work: {where}')

    def use_anchors(self, anchoring: ScaleAnchoring) -> None:
        """Take each frame's scale from `anchoring`'s fallback list (the model's own when no source is usable);
        a change of source restarts the scale smoothing, and each source's change between usable and not is
        logged once."""
        self.anchoring = anchoring
        self.scale_source = self._anchored_scale

    def _anchored_scale(self, stamp: float | None, raw: RawOutput, rec: Recovery) -> float | None:
        """The `ScaleSource` of `use_anchors`: the fit on the network grid's depth (model scale 1), so the fit's
        scale is the frame's metric scale. A frame without a stamp cannot be paired with anchors: model scale."""
        if stamp is None:
            return None
        depth, valid = network_depth(raw, rec, 1.0)

        def points() -> np.ndarray:  # made only when the ground source is asked
            nh, nw = depth.shape
            return unproject(np.where(valid, depth, np.float32(np.nan)), rec.intrinsics.resized(nw, nh))

        model = rec.metric_scale if math.isfinite(rec.metric_scale) and rec.metric_scale > 0 else 1.0
        choice = self.anchoring.choose(float(stamp), rec.intrinsics, depth, valid, points, model)
        for event in choice.events:  # one call site per severity: rclpy's logger refuses a site that changes it
            if event.usable:
                self.log.info(event.message)
            else:
                self.log.warning(event.message)
        if choice.changed:
            self.log.info(f'scale source is {choice.source}: metric scale smoothing restarts')
            self.scale.reset()
        scale = choice.fit.scale
        if scale is None or not (math.isfinite(scale) and scale > 0):  # never a NaN or zero scale
            return None
        return float(scale)

    def detach(self) -> None:
        """Let go of the model view and the post graph (the model itself is the node's to close)."""
        self.predictor = None
        self.stage.post = None

    def configure(self, cfg: Mapping, updates: Mapping) -> None:
        """`cfg`: the parameters after a live change; `updates`: the ones that changed."""
        self.scale.configure(cfg['scale_smoothing'], cfg['scale_reset_ratio'])
        if 'use_camera_info' in updates:
            self.request_reset('use_camera_info changed')
        if 'mask_threshold' in updates and self.predictor is not None:
            self.predictor.mask_threshold = float(updates['mask_threshold'])

    # ---- per frame ------------------------------------------------------------------------------------------------
    def forward(self, rgb: np.ndarray) -> RawOutput:
        """Stage 1: preprocessing and the network (through the shared queue with several cameras)."""
        return self.predictor.forward(rgb)

    def prepare(self, rgb: np.ndarray) -> ModelInput:
        """Stage 1's preprocessing alone, for a caller that runs it on another thread than the network (`run`):
        the input stays valid until the prepare after next."""
        return self.predictor.prepare(rgb)

    def run(self, prepared: ModelInput) -> RawOutput:
        """Stage 1's network on a prepared input."""
        return self.predictor.run(prepared)

    def request_reset(self, why: str) -> None:
        """Restart the scale smoothing before the next frame stage 1 hands over (new size, new camera...)."""
        with self._reset_lock:
            self._pending_reset = self._pending_reset or why

    def take_reset(self) -> str:
        """Stage 1, per frame: the restart that falls before this frame ('' = none), handed to `outputs`."""
        with self._reset_lock:
            reset, self._pending_reset = self._pending_reset, ''
        return reset

    def outputs(self, raw: RawOutput, frame_size: tuple[int, int], intrinsics: Intrinsics | None,
                wanted: Iterable[str], cfg: Mapping, reset: str = '', stamp: float | None = None) -> FrameOutputs:
        """Stage 2: the frame stage's arrays for `wanted` (frame_stage.STAGE_ARRAYS names) with the settings in
        `cfg`, for the frame stamped `stamp` (seconds; what `scale_source` is asked about); a post graph that fails
        hands the work to numpy for good (said in the log)."""
        if reset:
            self.log.debug(f'metric scale smoothing restarts: {reset}')
            self.scale.reset()
        self.stage.settings = FrameSettings.from_mapping(cfg)
        source = None if self.scale_source is None else functools.partial(self.scale_source, stamp)
        try:
            return self.stage.run(raw, frame_size, intrinsics, wanted, source)
        except Exception as exc:
            if self.stage.post is None:
                raise
            self.log.error(f'post graph failed ({type(exc).__name__}: {exc}); per-pixel work moves to the CPU')
            self.stage.post = None
            return self.stage.run(raw, frame_size, intrinsics, wanted, source)
