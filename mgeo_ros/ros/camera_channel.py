"""One camera of the depth node: its topics, newest-frame slot, CameraInfo cache, counters, publishers, per-frame
pipeline and its two stages: stage 1 runs the model on the newest frame while stage 2 makes and publishes the
outputs of the frame before it (`_stage1`, `_stage2`), and stage 1's CPU part (decode, rectify, preprocess) has a
thread of its own (`_prepare`) that readies the next frame while the model runs, timed to be done when the model is
free. The channel owns the publishers: it asks which outputs are subscribed, hands that set to the pipeline and
publishes the messages the pipeline builds.

The node (node.py) owns the parameters and the model; everything that is per camera lives here (the model-side part
in the pipeline's session, runtime/camera_session.py), so N cameras are N channels sharing one model, and the
single-camera node is the one channel without a name (plain topic names). A bad frame or CameraInfo on one channel
is counted and logged on that channel only.
"""
from __future__ import annotations

import collections
import threading
import time

from rclpy.exceptions import InvalidHandle
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mgeo_ros import node_params as P
from mgeo_ros.ros.compat import with_message_info
from mgeo_ros.ros.diagnostics import NodeStats, ThrottledLog, to_diagnostic_status
from mgeo_ros.ros.frame_slot import FrameSlot, HandOver, SequenceGaps, StagePacer
from mgeo_ros.ros.outputs import OUTPUTS
from mgeo_ros.ros.pipeline import FramePipeline, IncomingFrame, InferredFrame, PreparedFrame
from mgeo_ros.ros.qos import make_qos
from mgeo_ros.ros.scale_anchor_inputs import ScaleAnchorInputs

ANCHOR_QOS_DEPTH = 5  # anchor messages kept per subscription: they are stored by stamp, a burst must not drop one
STOP_WAIT_S = 0.2  # how long shutdown waits for a worker to leave on its own
CLEANUP_WAIT_S = 30.0  # how long a lifecycle cleanup waits for a frame still in the backend (then frees the model)
# How long the first frame waits for its CameraInfo when a camera_info publisher is matched: an image and its info
# come on two subscriptions in no fixed order, and without the wait the first frame would have recovered intrinsics.
FIRST_INFO_WAIT_S = 0.5


class CameraInfoCache:
    """The last few CameraInfo messages by stamp, so a frame is paired with the info of its own stamp."""

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._arrived = threading.Condition()
        self._infos: collections.OrderedDict = collections.OrderedDict()  # (sec, nanosec) -> CameraInfo
        self._wakes = 0  # wake() calls: a wait that sees it change ends

    def put(self, msg: CameraInfo) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._arrived:
            self._infos.pop(key, None)
            self._infos[key] = msg
            while len(self._infos) > self._keep:
                self._infos.popitem(last=False)
            self._arrived.notify_all()

    def wake(self) -> None:
        """End the waits in progress (the channel stops): they return what they have."""
        with self._arrived:
            self._wakes += 1
            self._arrived.notify_all()

    def empty(self) -> bool:
        with self._arrived:
            return not self._infos

    def for_header(self, header, wait_s: float = 0.0) -> CameraInfo | None:
        """The CameraInfo with the image's stamp if one arrived, else the latest (asked when the frame is processed,
        so an info that arrives just after its image is still used). With none at all, waits up to `wait_s` for the
        first one (or until wake())."""
        with self._arrived:
            if not self._infos and wait_s > 0:
                wakes = self._wakes
                self._arrived.wait_for(lambda: bool(self._infos) or self._wakes != wakes, timeout=wait_s)
            if not self._infos:
                return None
            exact = self._infos.get((header.stamp.sec, header.stamp.nanosec))
            return exact if exact is not None else next(reversed(self._infos.values()))


class CameraChannel:
    """Everything of one camera. `name` '' = the single-camera node (topics image, camera_info, depth/image, ...);
    otherwise topics are <name>/image, <name>/depth/image, ..."""

    def __init__(self, node, name: str = '') -> None:
        self.node = node
        self.name = name
        self.prefix = f'{name}/' if name else ''
        self.stats = NodeStats()
        self.log = node.get_logger() if not name else node.get_logger().get_child(name)  # its lines name the camera
        self.log_bad = ThrottledLog(self.log.warning, node.cfg['log_throttle'])
        self.slot: FrameSlot[IncomingFrame] = FrameSlot()
        self.prepared: HandOver[PreparedFrame] = HandOver()
        self.handover: HandOver[InferredFrame] = HandOver()
        self.pacer = StagePacer()  # the model stage against stage 2
        self.prepare_pacer = StagePacer()  # the prepare thread against the model stage
        self.infos = CameraInfoCache()
        self._info_waited = False  # this activation's first frame has waited for the first CameraInfo
        self.gaps = SequenceGaps()
        self.pipeline: FramePipeline | None = None
        self.publishers: dict[str, object] = {}  # output name (outputs.OUTPUTS) -> its publisher
        self.image_sub = self.info_sub = None
        self.anchors: ScaleAnchorInputs | None = None  # the scale-anchor subscriptions (with the outputs)
        self._threads: list[threading.Thread] = []

    def topic(self, relative: str) -> str:
        return self.prefix + relative

    def camera_frame(self) -> str:
        """The frame_id of the camera's latest frame ('' before the first): where anchors are moved into."""
        return self.pipeline.last_frame_id if self.pipeline is not None else ''

    # ---- publishers and the per-frame pipeline
    def create_outputs(self) -> None:
        cfg = self.node.cfg
        self.publishers = {o.name: self.node.create_publisher(o.msg_type, self.topic(o.topic),
                                                              make_qos(cfg[o.qos[0]], cfg[o.qos[1]]))
                           for o in OUTPUTS}
        self.pipeline = FramePipeline(cfg, self.log, self.stats, self.log_bad)
        self.anchors = ScaleAnchorInputs(self, cfg)
        if self.anchors.anchoring is not None:
            self.pipeline.session.use_anchors(self.anchors.anchoring)

    def destroy_outputs(self) -> None:
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        if self.pipeline is not None:
            self.pipeline.session.detach()
        if self.anchors is not None:
            self.anchors.destroy()
        self.publishers, self.pipeline, self.anchors = {}, None, None

    # ---- subscriptions (the executor thread: callbacks stay O(1))
    def create_inputs(self) -> None:
        cfg = self.node.cfg
        qos = make_qos(cfg['input_qos'], cfg['input_qos_depth'])
        if cfg['image_transport'] == 'compressed':
            # Like image_transport: <resolved image topic>/compressed, so `-r image:=/cam/image_raw` is enough.
            topic = self.node.resolve_topic_name(self.topic('image')) + '/compressed'
            self.image_sub = self.node.create_subscription(CompressedImage, topic,
                                                           with_message_info(self._on_compressed), qos, raw=True)
        else:
            self.image_sub = self.node.create_subscription(Image, self.topic('image'),
                                                           with_message_info(self._on_image), qos, raw=True)
        self.info_sub = self.node.create_subscription(CameraInfo, self.topic('camera_info'), self.infos.put, qos)
        self._info_waited = False
        if self.anchors is not None:
            self.anchors.create(cfg['input_qos'], ANCHOR_QOS_DEPTH)
        self.stats.active = True

    def destroy_inputs(self) -> None:
        for sub in (self.image_sub, self.info_sub):
            if sub is not None:
                self.node.destroy_subscription(sub)
        self.image_sub = self.info_sub = None
        if self.anchors is not None:
            self.anchors.destroy()
        self.stats.active = False

    # Images arrive serialized (raw=True): only the frame that runs is read (pipeline stage 1, ros/serialized.py).
    def _on_image(self, data: bytes, info: dict) -> None:
        self._enqueue(IncomingFrame('raw', data, time.monotonic(), self._camera_info_for), info)

    def _on_compressed(self, data: bytes, info: dict) -> None:
        self._enqueue(IncomingFrame('compressed', data, time.monotonic(), self._camera_info_for), info)

    def _camera_info_for(self, header) -> CameraInfo | None:
        """The frame's CameraInfo (the prepare thread asks). Until the first info arrives, one frame per activation
        waits up to FIRST_INFO_WAIT_S for it when a camera_info publisher is matched; with no publisher, or after
        that wait ran out (a camera that never sends its info), frames go on at once with recovered intrinsics."""
        wait_s = 0.0
        sub = self.info_sub
        if not self._info_waited and sub is not None and self.infos.empty():
            try:
                matched = sub.get_publisher_count() > 0
            except InvalidHandle:  # deactivated meanwhile
                matched = False
            if matched:
                self._info_waited, wait_s = True, FIRST_INFO_WAIT_S
        return self.infos.for_header(header, wait_s)

    def _enqueue(self, frame: IncomingFrame, info: dict) -> None:
        replaced = self.slot.put(frame)
        gid = info.get('publisher_gid') or {}
        publisher = bytes(gid.get('data', b'')) if isinstance(gid, dict) else gid
        with self.stats.lock:
            self.stats.received += 1
            if replaced is not None:
                self.stats.dropped += 1
            self.stats.lost_before_node += self.gaps.observe(publisher, info.get('publication_sequence_number'))
            sent, got = info.get('source_timestamp'), info.get('received_timestamp')
            if sent and got:
                self.stats.timings.add('transport', (got - sent) / 1e6)

    # ---- the stages, one thread each
    def start(self, model_ready: threading.Event) -> None:
        """Start the stages; they wait for `model_ready`, then stage 1 runs the model on this camera's newest
        frame (prepared on its own thread) while stage 2 makes and publishes the outputs of the one before it."""
        self.slot, self.prepared, self.handover = FrameSlot(), HandOver(), HandOver()
        self.pacer, self.prepare_pacer = StagePacer(), StagePacer()
        suffix = f'_{self.name}' if self.name else ''
        self._threads = [
            threading.Thread(target=self._prepare, args=(self.slot, self.prepared, model_ready),
                             name='mgeo_decode' + suffix, daemon=True),
            threading.Thread(target=self._stage1, args=(self.prepared, self.handover, model_ready),
                             name='mgeo_inference' + suffix, daemon=True),
            threading.Thread(target=self._stage2, args=(self.handover,), name='mgeo_publish' + suffix, daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Close the slot and the hand-overs and give every stage `wait_s` to leave. A frame in the backend (or a
        model still loading) is a native call that cannot be interrupted: at shutdown it is not waited for and ends
        without publishing; a lifecycle cleanup waits for it (`CLEANUP_WAIT_S`), so that the model and the frame's
        buffers it holds are freed with the session."""
        self.slot.close()
        self.prepared.close()
        self.handover.close()
        self.infos.wake()  # a first frame waiting for its CameraInfo
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _frame_cfg(self) -> dict:
        cfg = self.node.cfg
        if self.name:  # the camera's own per-camera values (`<camera>.output_scale`)
            cfg = P.for_camera(cfg, self.name)
        if self.name and cfg['frame_id']:  # one frame_id cannot name several cameras: keep each image's own
            cfg = {**cfg, 'frame_id': ''}
        return cfg

    def _prepare(self, slot: FrameSlot, prepared: HandOver, model_ready: threading.Event) -> None:
        """Newest frame -> decode, intrinsics, rectify, preprocess -> the model stage. It takes a frame once the
        previous one has gone to the model, and only as late as lets it be ready when the model stage takes its next
        one (the model's own pacing against stage 2 included), so the frame the model runs is the newest it can be
        and its CPU work overlaps the forward before it instead of adding to it."""
        def delay(now: float) -> float:
            return max(self.prepare_pacer.delay(now), self.pacer.delay(now) - self.prepare_pacer.lead())

        pipeline = self.pipeline
        self._run_stage(slot, prepared, model_ready, delay,
                        lambda frame: self._prepared(pipeline, frame, self._frame_cfg()))

    def _stage1(self, prepared: HandOver, handover: HandOver, model_ready: threading.Event) -> None:
        """Prepared frame -> model -> hand-over. It takes a frame only once the hand-over is free (stage 2 has
        taken the previous one) and, when stage 2 is the slower stage, only as late as lets it finish when stage 2
        does (`StagePacer`)."""
        pipeline = self.pipeline
        self._run_stage(prepared, handover, model_ready, self.pacer.delay,
                        lambda frame: self._infer(pipeline, frame))

    def _run_stage(self, source, target: HandOver, model_ready: threading.Event, delay, work) -> None:
        """One producer stage's loop: once the model is ready, and each time `target` is free and `delay(now)`
        seconds have passed, take an item from `source` (a FrameSlot or a HandOver), `work` it and hand the result
        (unless None) to `target`, until `source` is closed. An exception is counted and said, never fatal."""
        while not model_ready.wait(0.2):
            if source.closed:
                return
        while not source.closed:
            if not target.wait_free(timeout=0.2):
                continue
            wait = delay(time.perf_counter())
            if wait > 0 and source.wait_closed(wait):
                return
            item = source.take(timeout=0.2)
            if item is None:
                continue
            try:
                result = work(item)
            except Exception as exc:  # a bug or an unforeseen input must not kill the node: count it, say it
                if source.closed:  # stopped under this frame (publishers, context or shared model gone): quiet
                    return
                self._internal_error(exc)
                continue
            if result is not None:
                target.put(result)

    def _stage2(self, handover: HandOver) -> None:
        """Hand-over -> outputs -> published, frames in the order stage 1 ran them."""
        pipeline = self.pipeline
        while not handover.closed:
            frame = handover.take(timeout=0.2)
            if frame is None:
                continue
            try:
                self._publish(pipeline, frame)
            except Exception as exc:
                if handover.closed:
                    return
                self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        self.stats.count_bad('internal_error')
        self.log_bad('internal_error', f'frame skipped after an unexpected error: {type(exc).__name__}: {exc}')

    # ---- one frame: the subscribed outputs, stage 1, stage 2, publish
    def wanted(self) -> frozenset:
        """The outputs (outputs.OUTPUTS names) somebody subscribes to, asked once per frame."""
        return frozenset(name for name, pub in self.publishers.items() if pub.get_subscription_count() > 0)

    def _prepared(self, pipeline: FramePipeline, frame: IncomingFrame, cfg: dict) -> PreparedFrame | None:
        """Stage 1's CPU part of one frame, or None when nobody subscribes or the frame is skipped."""
        wanted = self.wanted()
        if not wanted:
            with self.stats.lock:
                self.stats.skipped_no_subscribers += 1
            return None
        cpu0 = time.thread_time()
        ready = pipeline.prepare(frame, cfg, wanted)
        if ready is not None:
            self.prepare_pacer.stage1_done(time.perf_counter() - ready.started)
            ready.timings['prepare_cpu'] = (time.thread_time() - cpu0) * 1000.0
        return ready

    def _infer(self, pipeline: FramePipeline, frame: PreparedFrame) -> InferredFrame | None:
        """Stage 1's model part of one prepared frame, or None; the model's busy time goes to both pacers."""
        taken, cpu0 = time.perf_counter(), time.thread_time()
        frame.timings['prepared_wait'] = (taken - frame.started) * 1000.0 - frame.timings['prepare']
        self.prepare_pacer.stage2_started(taken)
        try:
            inferred = pipeline.infer(frame)
        finally:
            self.prepare_pacer.stage2_done(time.perf_counter() - taken)
        if inferred is not None:
            now = time.perf_counter()
            self.pacer.stage1_done(now - taken)
            inferred.timings['stage1'] = (now - inferred.started) * 1000.0
            inferred.timings['stage1_cpu'] = (time.thread_time() - cpu0) * 1000.0 + inferred.timings['prepare_cpu']
        return inferred

    def _publish(self, pipeline: FramePipeline, frame: InferredFrame) -> None:
        """Stage 2 and the publishing of its messages; then the frame's timings and the published count."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        self.pacer.stage2_started(t0)
        timings = frame.timings
        timings['handover_wait'] = (t0 - frame.started) * 1000.0 - timings['stage1']
        publishers = self.publishers
        for name, msg in pipeline.messages(frame):
            publishers[name].publish(msg)
        t1 = time.perf_counter()
        self.pacer.stage2_done(t1 - t0)
        timings['publish'] = (t1 - t0) * 1000.0 - timings.get('postprocess', 0.0)  # the frame stage's part apart
        timings['stage2'] = (t1 - t0) * 1000.0
        timings['stage2_cpu'] = (time.thread_time() - cpu0) * 1000.0
        timings['publish_cpu'] = timings['stage2_cpu'] - timings.get('postprocess_cpu', 0.0)
        timings['total'] = (t1 - frame.started) * 1000.0 + timings['queue_wait']
        stamp = frame.header.stamp
        age = self.node.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)
        with self.stats.lock:
            for stage, ms in timings.items():
                self.stats.timings.add(stage, ms)
            self.stats.timings.add('since_stamp', age / 1e6)
        self.stats.mark_published()

    # ---- diagnostics
    def diagnostic_status(self, node_name: str):
        """This camera's DiagnosticStatus: `<node>: depth` alone, `<node>: <camera> depth` among several."""
        last_frame = self.pipeline.last_frame_id if self.pipeline is not None else ''
        override = self.node.cfg['frame_id'] if not self.name else ''
        hardware = override or last_frame or self.name or 'camera'
        label = f'{node_name}: {self.name} depth' if self.name else f'{node_name}: depth'
        return to_diagnostic_status(self.stats, label, hardware)
