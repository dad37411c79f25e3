"""A lifecycle cleanup frees what its configure made: the managed node (its own process) cycled through configure,
activate, deactivate and cleanup while a camera streams keeps its resident size, threads and file descriptors flat
from the second cycle on (`python -m mgeo_ros.bench.memory --lifecycle-cycles N` is the same run, longer)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

CYCLES = 8
SIZE = (320, 240)


def test_lifecycle_cycles_under_a_stream_leave_memory_threads_and_fds_flat():
    """The packaged default model (torch on the CPU, as a new user starts it) at 320x240 and 5 Hz: a cleanup that
    left the frame in the backend running, or the model and its buffers to the heap, grows RSS by tens of MiB per
    cycle at this size."""
    from mgeo_ros.bench.lifecycle_memory import run_cycles, summary, trend
    from mgeo_ros.runtime.predictor import default_model_path

    r = run_cycles(str(default_model_path()), 'auto', SIZE, 5.0, CYCLES, 1.5, {}, timeout=120.0)
    print(summary(r))
    samples = r['samples']
    assert [s['cycle'] for s in samples] == list(range(1, CYCLES + 1))
    assert sum(s['depth_received'] for s in samples) >= CYCLES // 2, summary(r)  # frames flowed while active
    # the bounds the managed node is held to: < 5 % from cycles 2-3 to the lowest of the last third, and no upward
    # trend: the median pairwise slope over cycles 2..N rises less than 3 % over the run (measured here 0.1-1.4 %:
    # single-sample dips and jumps of a few tens of MiB from the allocator, gone by the next cycle; a cleanup that
    # leaves the model to the frame in flight: +25 %)
    assert r['rss']['growth_percent'] < 5.0, summary(r)
    assert r['rss']['slope_percent_over_run'] < 3.0, summary(r)
    assert samples[-1]['threads'] == samples[1]['threads'], summary(r)
    assert samples[-1]['fds'] == samples[1]['fds'], summary(r)
    assert trend([100.0, 100.0, 100.0, 104.0])['growth_percent'] == pytest.approx(4.0)
    dip = trend([100.0, 95.0, 100.0, 100.0, 100.0, 100.0])   # one low sample at the start is not growth
    assert dip['growth_percent'] == 0.0 and dip['slope_per_cycle'] == 0.0
    spike = trend([100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 115.0])   # nor one high sample at the end
    assert spike['growth_percent'] == 0.0 and spike['slope_per_cycle'] == 0.0
    leak = trend([100.0, 100.0, 103.0, 106.0, 109.0, 112.0])
    assert leak['growth_percent'] == pytest.approx(100 * 9 / 103) and leak['slope_per_cycle'] == pytest.approx(3.0)
