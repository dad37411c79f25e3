"""Pure-logic tests of the node's parts (no ROS): frame slot, scale filter, parameter table, throttled logging."""
import math
import threading
import time

import numpy as np
import pytest

from mgeo_ros import node_params as P
from mgeo_ros.ros.diagnostics import LEVEL_ERROR, LEVEL_OK, NodeStats, ThrottledLog, Timings
from mgeo_ros.ros.frame_slot import FrameSlot, HandOver, StagePacer
from mgeo_ros.runtime.scale_filter import ScaleFilter

pytestmark = pytest.mark.ros_runtime  # torch-free: also runs in the Jazzy venv (make test-jazzy)


# ---- frame slot -------------------------------------------------------------------------------------------------
def test_slot_newest_wins_and_counts_drops():
    slot = FrameSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.put(3) == 2
    assert (slot.put_count, slot.drop_count) == (3, 2)
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None
    assert slot.drop_count == 2


def test_slot_wakes_a_waiting_consumer_and_close_releases_it():
    slot = FrameSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    t.start()
    time.sleep(0.05)
    slot.put('frame')
    t.join(2)
    assert got == ['frame']
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=120)))
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(60)  # close wakes the waiting take: it returns long before its own 120 s timeout, on any machine
    assert not t.is_alive() and got[-1] is None
    slot.put('late')
    assert slot.take(timeout=0) is None


def test_slot_under_a_fast_producer_never_holds_more_than_one():
    slot = FrameSlot()
    taken = []

    def consume():
        while not slot.closed:
            item = slot.take(timeout=0.01)
            if item is not None:
                taken.append(item)
                time.sleep(0.005)  # slow consumer

    t = threading.Thread(target=consume)
    t.start()
    for i in range(500):
        slot.put(i)
    deadline = time.monotonic() + 5.0  # a loaded machine may schedule the consumer late: wait for it, not a fixed time
    while not (taken and taken[-1] == 499) and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.close()
    t.join(2)
    assert taken == sorted(taken)  # order kept
    assert len(taken) + slot.drop_count == 500  # every frame was either processed or counted as dropped
    assert taken[-1] == 499  # the newest frame is never lost


# ---- scale filter -----------------------------------------------------------------------------------------------
def test_handover_passes_every_item_once_in_order_and_holds_one():
    """Producer and consumer threads: the consumer gets 0..n-1 in order, none twice; the producer waits for a free
    hand-over before each item, so it never holds more than one."""
    handover: HandOver[int] = HandOver()
    got, n = [], 200

    def consume():
        while len(got) < n:
            item = handover.take(timeout=5)
            if item is None:
                return
            got.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        assert handover.wait_free(timeout=5)
        handover.put(i)
    consumer.join(10)
    assert got == list(range(n))


def test_handover_is_busy_until_taken_and_close_releases_everyone():
    handover: HandOver[str] = HandOver()
    handover.put('a')
    assert not handover.wait_free(timeout=0.01)  # the item waits for the consumer
    assert handover.take(timeout=0) == 'a' and handover.wait_free(timeout=0)
    results = []
    waiter = threading.Thread(target=lambda: results.append(handover.take(timeout=10)))
    waiter.start()
    handover.close()
    waiter.join(5)
    assert results == [None] and not waiter.is_alive()
    handover.put('b')  # dropped after close, without blocking
    assert handover.take(timeout=0) is None and not handover.wait_free(timeout=0)


def test_stage_pacer_starts_stage_one_to_finish_when_stage_two_is_free():
    """Times are given, not measured: stage 1 waits only while stage 2 is busy and the slower one, and only as long
    as lets it finish (with its margin) when stage 2 does."""
    pacer = StagePacer(weight=0.5, margin=1.0)
    assert pacer.delay(10.0) == 0.0  # nothing known yet
    pacer.stage1_done(0.030)
    pacer.stage2_done(0.100)
    assert pacer.delay(10.0) == 0.0  # stage 2 idle: take a frame now
    pacer.stage2_started(10.0)  # busy until about 10.100
    assert pacer.delay(10.0) == pytest.approx(0.070) and pacer.delay(10.05) == pytest.approx(0.020)
    assert pacer.delay(10.2) == 0.0  # overdue: no wait
    pacer.stage2_done(0.020)  # stage 2 got faster (average 0.060) and is idle again
    pacer.stage2_started(20.0)
    assert pacer.delay(20.0) == pytest.approx(0.030)
    pacer.stage1_done(0.090)  # now stage 1 is the slower one (average 0.060): never waits
    assert pacer.delay(20.0) == 0.0
    assert pacer.lead() == pytest.approx(0.060)  # what a stage before stage 1 starts ahead of it by
    assert StagePacer(margin=1.5).lead() == 0.0  # unknown: no lead


def test_slot_wait_closed_sleeps_through_puts_and_wakes_on_close():
    slot = FrameSlot()
    slot.put(1)
    assert slot.wait_closed(0.01) is False and slot.take(0) == 1
    closer = threading.Timer(0.05, slot.close)
    closer.start()
    assert slot.wait_closed(10) is True
    closer.join()


def test_scale_filter_off_passes_raw_through():
    f = ScaleFilter(0.0, 1.5)
    for s in (1.0, 1.3, 0.8):
        assert f.update(s).smoothed == pytest.approx(s)


def test_scale_filter_is_a_log_space_ema():
    f = ScaleFilter(0.8, 10.0)
    f.update(2.0)
    out = f.update(4.0).smoothed
    assert out == pytest.approx(math.exp(0.8 * math.log(2.0) + 0.2 * math.log(4.0)))
    # symmetric in log space: a x2 and a /2 step move it equally far
    a, b = ScaleFilter(0.5, 10.0), ScaleFilter(0.5, 10.0)
    a.update(1.0)
    b.update(1.0)
    assert math.log(a.update(2.0).smoothed) == pytest.approx(-math.log(b.update(0.5).smoothed))


def test_scale_filter_reduces_jitter():
    import numpy as np

    rng = np.random.default_rng(0)
    raw = 3.0 * np.exp(rng.normal(0, 0.05, 200))
    f = ScaleFilter(0.9, 1.5)
    smoothed = np.array([f.update(s).smoothed for s in raw])
    assert np.std(np.log(smoothed[20:])) < 0.4 * np.std(np.log(raw[20:]))
    assert f.reset_count == 0


def test_scale_filter_resets_on_a_jump_and_on_request():
    f = ScaleFilter(0.9, 1.5)
    for _ in range(10):
        f.update(2.0)
    up = f.update(4.0)  # x2 > 1.5: a real change, not noise
    assert up.reset and up.smoothed == pytest.approx(4.0) and f.reset_count == 1
    small = f.update(4.4)  # x1.1 < 1.5: smoothed
    assert not small.reset and 4.0 < small.smoothed < 4.4
    f.reset()
    assert f.value is None and f.reset_count == 2
    assert f.update(1.0).smoothed == pytest.approx(1.0)


def test_scale_filter_ignores_bad_scales_and_rejects_bad_settings():
    f = ScaleFilter(0.5, 2.0)
    f.update(2.0)
    for bad in (float('nan'), 0.0, -1.0, float('inf')):
        f.update(bad)
        assert f.value == pytest.approx(2.0)
    with pytest.raises(ValueError):
        f.configure(1.0, 2.0)
    with pytest.raises(ValueError):
        f.configure(0.5, 1.0)
    f.configure(0.2, 3.0)  # live change keeps the state
    assert f.value == pytest.approx(2.0) and f.smoothing == 0.2


# ---- parameters ---------------------------------------------------------------------------------------------------
def test_every_param_default_is_valid_and_described():
    for spec in P.PARAMS:
        assert P.validate(spec.name, spec.default) is None, spec.name
        assert spec.description and spec.describe().endswith(('live.', 'change).'))
    assert len(P.SPECS) == len(P.PARAMS)  # declared once


@pytest.mark.parametrize('name, value, fragment', [
    ('points_stride', 0, '>= 1'),
    ('points_stride', 2.0, 'points_stride must be an integer, got a number (double) 2.0'),
    ('scale_smoothing', 1.0, '< 1.0'),
    ('scale_smoothing', -0.1, '>= 0.0'),
    ('max_depth', float('nan'), 'finite'),
    ('max_depth', True, 'max_depth must be a number (double), got a boolean'),
    ('backend', 'cuda', 'one of'),
    ('image_transport', 'theora', 'one of'),
    ('input_qos', 'fast', 'one of'),
    ('no_such_param', 1, 'unknown'),
])
def test_validate_rejects_with_a_reason(name, value, fragment):
    reason = P.validate(name, value)
    assert reason is not None and fragment in reason


def test_validate_accepts_ints_for_floats_and_coerce_converts():
    assert P.validate('max_depth', 5) is None
    assert P.coerce('max_depth', 5) == 5.0 and isinstance(P.coerce('max_depth', 5), float)
    assert P.coerce('points_stride', 3) == 3


def test_check_change_refuses_restart_params_but_allows_live_ones():
    assert P.check_change('max_depth', 0.0, 8.0) is None
    assert P.check_change('points_stride', 1, 4) is None
    reason = P.check_change('backend', 'auto', 'torch')
    assert reason is not None and 'restart' in reason
    assert P.check_change('backend', 'auto', 'auto') is None  # re-setting the same value is harmless
    assert 'one of' in P.check_change('backend', 'auto', 'bogus')


def test_safe_params_are_live_and_setup_params_are_not():
    live = {p.name for p in P.PARAMS if p.live}
    assert {'max_depth', 'points_stride', 'scale_smoothing', 'scale_reset_ratio', 'mask_threshold', 'frame_id'} <= live
    assert not live & {'model', 'backend', 'precision', 'num_tokens', 'image_transport', 'input_qos', 'output_qos'}


# ---- diagnostics ----------------------------------------------------------------------------------------------------
def test_throttled_log_is_per_reason_and_reports_suppressed():
    lines = []
    log = ThrottledLog(lines.append, period=10.0)
    assert log('image', 'bad encoding', now=0.0)
    assert not log('image', 'bad encoding', now=1.0)
    assert not log('image', 'bad encoding', now=2.0)
    assert log('camera_info', 'zero focal', now=2.5)  # another reason is not hidden by the first
    assert log('image', 'bad encoding', now=11.0)
    assert lines == ['bad encoding', 'zero focal', 'bad encoding (2 similar messages suppressed)']


def test_stats_levels_and_values():
    s = NodeStats()
    s.model_status, s.model_error = 'error', 'CheckpointError: bad file'
    assert s.level_and_message()[0] == LEVEL_ERROR and 'bad file' in s.level_and_message()[1]
    s.model_status = 'ready'
    assert 'inactive' in s.level_and_message()[1]
    s.active = True
    s.received = 3
    s.count_bad('image')
    s.count_bad('image')
    for t in (0.0, 0.1, 0.2):
        s.mark_published(now=t)
    assert s.level_and_message()[0] == LEVEL_OK
    kv = dict(s.key_values())
    assert kv['bad_input.image'] == '2' and kv['bad_input_total'] == '2' and kv['frames_published'] == '3'
    assert s.output_rate(now=0.2) == pytest.approx(10.0)


def test_timings_window():
    t = Timings(window=3)
    for ms in (10, 20, 30, 40):
        t.add('forward', ms)
    s = t.summary()['forward']
    assert (s.median, s.mean, s.max, s.count) == (30.0, 30.0, 40.0, 3)  # 10 fell out of the window


def test_timings_median_p95_and_count_reach_diagnostics():
    from mgeo_ros.ros.diagnostics import NodeStats, summarize

    ms = [float(v) for v in range(1, 101)]  # 1..100 in a shuffled order: the summary must sort
    rng = np.random.default_rng(0)
    s = summarize(list(rng.permutation(ms)))
    assert (s.median, s.p95, s.max, s.count) == (50.5, 95.0, 100.0, 100)
    assert summarize([3.0]).p95 == 3.0 and summarize([1.0, 9.0]).median == 5.0
    stats = NodeStats()
    for v in ms[:40]:
        stats.timings.add('forward', v)
    kv = dict(stats.key_values())
    assert float(kv['latency_ms.forward.median']) == 20.5 and float(kv['latency_ms.forward.p95']) == 38.0
    assert kv['latency_ms.forward.count'] == '40' and kv['latency_window_frames'] == '100'
    assert float(kv['latency_ms.forward.mean']) == pytest.approx(20.5) and float(kv['latency_ms.forward.max']) == 40


def test_shared_model_batch_latency_uses_the_camera_stage_keys():
    """The model status of several cameras reports its forward time under the same keys as a camera's stages."""
    from mgeo_ros.ros.model_status import model_key_values
    from mgeo_ros.runtime.batching import SharedModelStats

    shared = SharedModelStats(forwards=4, frames=6)
    shared.forward_ms.extend([12.0, 10.0, 30.0, 11.0])
    kv = dict(model_key_values('ready', '', 'onnxruntime', 2, shared))
    assert kv['mean_batch'] == '1.50'
    assert {k: float(v) for k, v in kv.items() if k.startswith('latency_ms.')} == {
        'latency_ms.forward_batch.median': 11.5, 'latency_ms.forward_batch.p95': 30.0,
        'latency_ms.forward_batch.mean': 15.75, 'latency_ms.forward_batch.max': 30.0,
        'latency_ms.forward_batch.count': 4.0}
    stats = NodeStats()
    stats.timings.add('forward', 1.0)
    camera_suffixes = {k.rsplit('.', 1)[1] for k, _ in stats.key_values() if k.startswith('latency_ms.forward.')}
    assert camera_suffixes == {k.rsplit('.', 1)[1] for k in kv if k.startswith('latency_ms.')}


def test_sequence_gaps_count_messages_lost_before_the_node():
    from mgeo_ros.ros.frame_slot import SequenceGaps

    gaps = SequenceGaps()
    assert gaps.observe('a', 1) == 0
    assert gaps.observe('a', 2) == 0
    assert gaps.observe('a', 5) == 2  # 3 and 4 never arrived
    assert gaps.observe('b', 10) == 0  # another publisher has its own numbering
    assert gaps.observe('b', 12) == 1
    assert gaps.observe('a', 4) == 0  # late/reordered: not a loss, not double counted
    assert gaps.observe('a', None) == 0 and gaps.observe('a', 0) == 0  # RMW without sequence numbers
    assert gaps.lost == 3


def test_qos_profiles_from_parameter_strings():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from mgeo_ros.ros.qos import make_qos

    reliable = make_qos('reliable', 3)
    assert (reliable.reliability, reliable.depth, reliable.history) == (ReliabilityPolicy.RELIABLE, 3,
                                                                        HistoryPolicy.KEEP_LAST)
    for kind in ('best_effort', 'sensor_data'):
        profile = make_qos(kind, 1)
        assert profile.reliability == ReliabilityPolicy.BEST_EFFORT and profile.depth == 1
        assert profile.durability == DurabilityPolicy.VOLATILE
    with pytest.raises(ValueError, match='one of'):
        make_qos('fast', 1)


def test_flying_pixel_defaults_are_the_ones_the_runtime_tests_measure():
    """test/runtime/test_runtime_flying_pixels.py checks walls and edges at a 0.08 jump and radius 1."""
    assert P.SPECS['flying_pixel_max_jump'].default == 0.08
    assert P.SPECS['flying_pixel_radius'].default == 1
