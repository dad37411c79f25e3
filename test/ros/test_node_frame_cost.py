"""The node's per-frame cost: output bytes reused between frames and handed to rclpy without a copy, the
cloud interleaved in one pass, freed frame buffers kept by the allocator. Values must not change: each test compares
with the plain way of computing the same thing."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mgeo_ros.geometry import Intrinsics, unproject
from mgeo_ros.ros import cloud, convert
from mgeo_ros.runtime.frame_buffers import FrameBuffers


def test_output_buffers_are_reused_until_the_size_changes():
    bufs = FrameBuffers()
    data, view = bufs.take('depth', (4, 6))
    view[...] = 1.5
    again, view2 = bufs.take('depth', (4, 6))
    assert again is data and np.shares_memory(view, view2) and view2.dtype == np.float32
    assert np.frombuffer(data, np.float32).tolist() == [1.5] * 24  # the view writes the message's bytes
    bigger, _ = bufs.take('depth', (5, 6))
    assert bigger is not data and len(bigger) == 5 * 6 * 4
    assert bufs.take('mask', (5, 6), np.uint8)[1].dtype == np.uint8 and len(bufs.bytes_for('points', 96)) == 96


def test_messages_keep_the_assigned_bytes_without_copying():
    """rclpy's generated classes copy an array('B') assigned to `data` unless the message checks its fields."""
    bufs = FrameBuffers()
    data, view = bufs.take('depth', (3, 4))
    view[...] = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = convert.image_around(data, 3, 4, '32FC1')
    assert msg.data is data and (msg.step, msg.encoding) == (16, '32FC1')
    np.testing.assert_array_equal(convert.image_to_numpy(msg), view)
    normals = convert.image_around(bufs.take('normals', (3, 4, 3))[0], 3, 4, '32FC3')
    assert normals.step == 48
    with pytest.raises(Exception, match='needs 144'):
        convert.image_around(data, 3, 4, '32FC3')  # 48 bytes given
    depth = np.ones((3, 4), np.float32)
    intr = Intrinsics(fx=3.0, fy=3.0, cx=1.5, cy=1.0, width=4, height=3)
    kept = bufs.bytes_for('points', 3 * 4 * 16)
    cloud_msg = convert.points_to_pointcloud2(unproject(depth, intr), rgb=np.zeros((3, 4, 3), np.uint8), data=kept)
    assert cloud_msg.data is kept


@pytest.mark.parametrize('with_rgb,with_normals', [(False, False), (True, False), (True, True), (False, True)])
def test_fill_organized_interleaves_points_colour_and_normals(with_rgb, with_normals):
    rng = np.random.default_rng(5)
    h, w = 37, 53
    depth = (rng.uniform(0.3, 9.0, (h, w))).astype(np.float32)
    depth[rng.uniform(size=(h, w)) < 0.2] = np.nan
    depth[0, 0] = np.inf
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if with_rgb else None
    normals = rng.normal(size=(h, w, 3)).astype(np.float32) if with_normals else None
    intr = Intrinsics(fx=40.0, fy=41.0, cx=26.0, cy=18.5, width=w, height=h)
    channels = 3 + with_rgb + 3 * with_normals
    out = np.full((h, w, channels), 5.0, np.float32)
    ref = unproject(depth, intr)
    cloud.fill_organized(out, ref, rgb, normals)
    np.testing.assert_array_equal(out[..., :3].view(np.uint32), ref.view(np.uint32))  # bit for bit, NaN included
    if with_rgb:
        want = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        np.testing.assert_array_equal(out[..., 3].view(np.uint32), want)
    if with_normals:
        np.testing.assert_array_equal(out[..., channels - 3:], normals)
    with pytest.raises(Exception, match='out must be'):
        cloud.fill_organized(np.empty((h, w, channels + 1), np.float32), ref, rgb, normals)


_FAULTS = """
import json, resource, numpy as np
from mgeo_ros.runtime.heap import keep_freed_buffers
tuned = keep_freed_buffers()
def frame():  # twenty 640x480 float32 temporaries alive together, written, freed (like a numpy expression chain)
    arrays = [np.empty((480, 640), np.float32) for _ in range(20)]
    for a in arrays:
        a.fill(1.0)
for _ in range(3):
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(json.dumps({'tuned': tuned, 'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt and minor-fault counts are Linux')
def test_freed_frame_buffers_are_reused_without_page_faults():
    """Without the tuning glibc returns the freed 24 MB to the kernel and each frame faults its ~6000 pages in
    again; with it, almost none."""
    runs = {}
    for setting in ('0', '1'):
        env = dict(os.environ, MGEO_MALLOC_TUNING=setting)
        out = subprocess.run([sys.executable, '-c', _FAULTS], capture_output=True, text=True, env=env, check=True)
        runs[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs['0']['tuned'] is False and runs['1']['tuned'] is True
    assert runs['0']['faults'] > 10 * 3000, runs  # the kernel hands out fresh pages every frame
    assert runs['1']['faults'] < 500, runs
