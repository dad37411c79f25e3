"""mgeo_depth_node's compressed outputs across processes: depth/image/compressedDepth in each format and encoding and
depth/mask/compressed, decoded by the independent reference reader (test/depth_codec_reference.py) to the node's own
depth/image and depth/mask (16UC1 depth/image the millimetres of the 32FC1 one, the cloud the same in either
encoding), also at a reduced `output_scale`; the compressed topic recorded into a real bag (rosbags) decodes the
same; nothing is encoded while nobody subscribes. Real rclpy, real ONNX Runtime."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest
from depth_codec_reference import ref_decode, ref_depth_metres
from node_harness import NodeHarness, camera_intrinsics, no_torch_env, smooth_rgb, start_node, stop_node

pytestmark = [pytest.mark.ros, pytest.mark.ros_runtime]

W, H = 160, 120
COMPRESSED = 'depth/image/compressedDepth'
MASK = 'depth/mask/compressed'
MAX_DEPTH = 100.0  # m: compressed_depth_max 0 and max_depth 0 -> the open-range default (outputs.OPEN_RANGE_DEPTH_MAX)


def _encode_counts(harness) -> tuple[int, int, int]:
    """(frames published, compressed depth encodes, mask encodes) in the node's newest status."""
    diag = harness.latest_diagnostics()
    return (int(diag.get('frames_published', 0)), int(diag.get('latency_ms.encode_depth.count', 0)),
            int(diag.get('latency_ms.encode_mask.count', 0)))


def _status_after(harness, frames: int) -> tuple[int, int, int]:
    """The encode counts once a status has seen `frames` published frames."""
    assert harness.wait_for(lambda: _encode_counts(harness)[0] >= frames, 10), harness.latest_diagnostics()
    return _encode_counts(harness)


def _check_32fc1(fmt: str, data, depth: np.ndarray, depth_max: float, quantization: float) -> None:
    """The decoded inverse-depth code is the node's depth within one code step; NaN (and beyond depth_max) NaN."""
    _, a, b, _ = ref_decode(fmt, bytes(data))
    assert a == pytest.approx(quantization * (quantization + 1), rel=1e-6)  # float32 header
    assert b == pytest.approx(1 - a / depth_max, rel=1e-5, abs=1e-5)  # B carries the depth_max the node used
    decoded = ref_depth_metres(fmt, data)
    inside = np.isfinite(depth) & (depth < depth_max)
    assert inside.any()
    np.testing.assert_array_equal(np.isfinite(decoded), inside)
    # decoded = A/(v - B) with v = trunc(A/d + B): d lies within A/((v - B)(v + 1 - B)) <= decoded^2/A below it;
    # 1e-4 relative for float32 rounding of A/d and the decode
    err = decoded[inside] - depth[inside]
    assert np.all(err >= -1e-4 * depth[inside])
    assert np.all(err <= decoded[inside] ** 2 / a * (1 + 1e-4) + 1e-4 * depth[inside])


def _check_16uc1(fmt: str, data: bytes, millimetres: np.ndarray, depth_max: float) -> None:
    """16UC1: the codes are depth/image's millimetres, 0 at and beyond depth_max."""
    encoding, _, _, codes = ref_decode(fmt, data)
    assert encoding == '16UC1'
    np.testing.assert_array_equal(codes, np.where(millimetres > depth_max * 1000, 0, millimetres))


def test_compressed_outputs_decode_to_the_node_depth_and_record_into_a_bag(tiny_onnx, tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import CompressedImage

    from mgeo_ros.ros import convert
    from mgeo_ros.ros.bag_player import BagRecorder

    ns = f'/ncd{os.getpid()}'
    log = tmp_path / 'node.log'
    proc = start_node(ns, {'model': str(tiny_onnx), 'backend': 'onnxruntime', 'diagnostics_period': 0.2},
                      env=no_torch_env(tmp_path), log_path=log)
    harness = NodeHarness(ns, 'compressed_depth_harness', outputs=('depth/image',))
    intr = camera_intrinsics(W, H)
    rgb = smooth_rgb(W, H, seed=3)
    bag = tmp_path / 'compressed_bag'
    recorder = None
    try:
        harness.wait_ready(proc, timeout=60)
        harness.publish(rgb, (7000, 0), intrinsics=intr)
        depth = convert.image_to_numpy(harness.wait_outputs((7000, 0))['depth/image'])
        assert depth.dtype == np.float32
        assert _status_after(harness, 1)[1:] == (0, 0), 'nobody subscribes: nothing may be encoded'

        for topic in (COMPRESSED, MASK, 'depth/mask', 'points'):
            harness.subscribe(topic)
        recorder = BagRecorder(harness.node, bag, [f'{ns}/{COMPRESSED}:sensor_msgs/msg/CompressedImage'],
                               storage='mcap')
        assert recorder.wait_ready(10)
        harness.wait_ready(proc, timeout=10)

        # the tiny model's depth of this frame spans a few centimetres: cut_at lies inside it
        cut_at = float(np.round(np.quantile(depth, 0.5), 3))
        # (format, encoding, compressed_depth_max, quantization, max_depth with +Inf beyond it)
        combos = [('png', '32FC1', 0.0, 100.0, 0.0), ('rvl', '32FC1', cut_at, 60.0, 0.0),
                  ('png', '16UC1', 0.0, 100.0, 0.0), ('rvl', '16UC1', cut_at, 100.0, 0.0),
                  ('png', '32FC1', 0.0, 100.0, cut_at),
                  # 95 % invalid: too small an rvl for stock decoders, so it goes out as png
                  ('rvl', '32FC1', float(np.round(np.quantile(depth, 0.05), 3)), 100.0, 0.0)]
        node_depth: dict[tuple, tuple] = {}  # stamp -> (depth/image as published, encoding, its depth_max, q)
        clouds: list[np.ndarray] = []
        for i, (fmt, encoding, depth_max, q, max_depth) in enumerate(combos, start=1):
            results = harness.set_parameters('mgeo_depth_node', {
                'compressed_depth_format': fmt, 'depth_encoding': encoding, 'compressed_depth_max': depth_max,
                'compressed_depth_quantization': q, 'max_depth': max_depth, 'inf_beyond_max_depth': True})
            assert all(r.successful for r in results), results
            key = (7000, i)
            harness.publish(rgb, key, intrinsics=intr)
            out = harness.wait_outputs(key)
            image, compressed = out['depth/image'], out[COMPRESSED]
            sent_as = 'png' if i == len(combos) else fmt
            assert image.encoding == encoding and compressed.format == f'{encoding}; compressedDepth {sent_as}'
            assert compressed.header == image.header
            published = convert.image_to_numpy(image)
            wire_max = depth_max or max_depth or MAX_DEPTH
            if max_depth:  # +Inf beyond max_depth: invalid on the wire, as far as compressed_depth_max follows it
                finite = np.isfinite(published)
                assert np.isposinf(published).any() and finite.any()
                np.testing.assert_array_equal(published[finite], depth[finite])
                _check_32fc1(compressed.format, compressed.data, published, wire_max, q)
            elif encoding == '32FC1':
                np.testing.assert_array_equal(published, depth)  # the same frame: the same depth
                _check_32fc1(compressed.format, compressed.data, published, wire_max, q)
            else:
                # REP 118 millimetres of the node's 32FC1 depth of the same frame; NaN -> 0
                expected = np.rint(np.nan_to_num(depth.astype(np.float64), nan=0.0) * 1000).astype(np.uint16)
                np.testing.assert_array_equal(published, expected)
                _check_16uc1(compressed.format, bytes(compressed.data), published, wire_max)
            if wire_max < MAX_DEPTH:
                assert (depth >= wire_max).any(), 'the cut should drop part of the frame'
            node_depth[key] = (published, encoding, wire_max, q)
            if not max_depth:  # the cloud: the same in either encoding
                clouds.append(convert.pointcloud2_to_numpy(out['points'])[0])
                np.testing.assert_array_equal(clouds[-1], clouds[0])
            mask = convert.image_to_numpy(out['depth/mask'])
            assert out[MASK].format == 'mono8; png compressed '
            np.testing.assert_array_equal(
                cv2.imdecode(np.frombuffer(bytes(out[MASK].data), np.uint8), cv2.IMREAD_UNCHANGED), mask)
        # output_scale: the compressed forms at the outputs' size (the last combo left 32FC1, q 100)
        results = harness.set_parameters('mgeo_depth_node', {'output_scale': 0.5, 'compressed_depth_max': 0.0,
                                                              'max_depth': 0.0})
        assert all(r.successful for r in results), results
        harness.publish(rgb, (7000, 8), intrinsics=intr)
        out = harness.wait_outputs((7000, 8))
        small = convert.image_to_numpy(out['depth/image'])
        assert small.shape == (H // 2, W // 2)
        _check_32fc1(out[COMPRESSED].format, out[COMPRESSED].data, small, MAX_DEPTH, 100.0)
        node_depth[(7000, 8)] = (small, '32FC1', MAX_DEPTH, 100.0)
        np.testing.assert_array_equal(
            cv2.imdecode(np.frombuffer(bytes(out[MASK].data), np.uint8), cv2.IMREAD_UNCHANGED),
            convert.image_to_numpy(out['depth/mask']))
        encoded = len(combos) + 1
        _, depth_encodes, mask_encodes = _status_after(harness, 1 + encoded)
        assert depth_encodes == mask_encodes == encoded

        harness.unsubscribe(COMPRESSED)
        harness.unsubscribe(MASK)
        recorder.close()
        assert harness.wait_for(lambda: harness.latest_diagnostics().get('frames_published') is not None, 5)
        time.sleep(1.0)  # the node's side of discovery sees the subscriptions gone
        harness.publish(rgb, (7000, 9), intrinsics=intr)
        harness.wait_outputs((7000, 9))
        assert _status_after(harness, 2 + encoded)[1:] == (encoded, encoded), \
            'unsubscribed: nothing more may be encoded'
    finally:
        if recorder is not None and not recorder.closed:
            recorder.close()
        harness.close()
        code = stop_node(proc)
        print('\n' + log.read_text()[-2000:])
    assert code == 0

    # the bag: every recorded frame decodes (independent reader) to the node's depth of the same stamp
    with Reader(bag) as reader:
        frames = [deserialize_message(raw, CompressedImage) for _, _, raw in reader.messages()]
    assert sorted((m.header.stamp.sec, m.header.stamp.nanosec) for m in frames) == sorted(node_depth)
    for msg in frames:
        published, encoding, wire_max, q = node_depth[(msg.header.stamp.sec, msg.header.stamp.nanosec)]
        if encoding == '32FC1':
            _check_32fc1(msg.format, msg.data, published, wire_max, q)
        else:
            _check_16uc1(msg.format, bytes(msg.data), published, wire_max)
            decoded = ref_depth_metres(msg.format, msg.data)
            kept = (published > 0) & (published <= wire_max * 1000)
            np.testing.assert_array_equal(decoded[kept], published[kept].astype(np.float32) / np.float32(1000))
