"""An independent reading of image_transport's compressedDepth wire format, for tests: plain loops, struct and
OpenCV's PNG reader, sharing no code with mgeo_ros/depth_codec.py.

Written from the wire format of compressed_depth_image_transport (12-byte header int32 0 / float32 A / float32 B;
16-bit PNG or RVL: uint32 cols, rows, then 32-bit little-endian words of nibbles, first nibble in the top bits, 3
data bits per nibble with 0x8 = more follows, zero-run / non-zero-run pairs and zigzag deltas against the previous
non-zero value). Not a test module (no test_ prefix): the codec tests and the node's transport tests import it.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

# --- the reference coder -------------------------------------------------------------------------------------

def ref_rvl_encode(image: np.ndarray) -> bytes:
    flat = [int(v) for v in image.reshape(-1)]
    words, state = [], {'word': 0, 'count': 0}

    def put(value: int) -> None:
        while True:
            nibble = value & 7
            value >>= 3
            if value:
                nibble |= 8
            state['word'] = ((state['word'] << 4) | nibble) & 0xFFFFFFFF
            state['count'] += 1
            if state['count'] == 8:
                words.append(state['word'])
                state['word'], state['count'] = 0, 0
            if not value:
                return

    i, previous, n = 0, 0, len(flat)
    while i < n:
        start = i
        while i < n and flat[i] == 0:
            i += 1
        put(i - start)
        start = i
        while i < n and flat[i] != 0:
            i += 1
        put(i - start)
        for value in flat[start:i]:
            delta = value - previous
            put((delta << 1) ^ (delta >> 31) if delta >= 0 else ((-delta) << 1) - 1)
            previous = value
    if state['count']:
        words.append((state['word'] << 4 * (8 - state['count'])) & 0xFFFFFFFF)
    return struct.pack('<II', image.shape[1], image.shape[0]) + struct.pack(f'<{len(words)}I', *words)


def ref_rvl_decode(payload: bytes) -> np.ndarray:
    cols, rows = struct.unpack_from('<II', payload)
    words = struct.unpack_from(f'<{(len(payload) - 8) // 4}I', payload, 8)
    nibbles = [(w >> (28 - 4 * k)) & 0xF for w in words for k in range(8)]
    pos = 0

    def get() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            nibble = nibbles[pos]
            pos += 1
            value |= (nibble & 7) << shift
            shift += 3
            if not nibble & 8:
                return value

    out, previous = [], 0
    while len(out) < cols * rows:
        out += [0] * get()
        for _ in range(get()):
            p = get()
            previous = (previous + ((p >> 1) ^ -(p & 1))) & 0xFFFF
            out.append(previous)
    return np.array(out, np.uint16).reshape(rows, cols)


def ref_quantize(depth: np.ndarray, depth_max: float, q: float) -> tuple[np.ndarray, float, float]:
    """The published 32FC1 formula, float32, pixel by pixel: v = trunc(A/d + B) for 0 < d < depth_max, clamped to
    16 bits; 0 otherwise."""
    a = np.float32(np.float32(q) * (np.float32(q) + np.float32(1)))
    b = np.float32(np.float32(1) - a / np.float32(depth_max))
    out = np.zeros(depth.shape, np.uint16)
    for idx, d in np.ndenumerate(depth.astype(np.float32)):
        if np.isfinite(d) and 0 < d < np.float32(depth_max):
            with np.errstate(over='ignore', divide='ignore'):
                v = np.float32(a / d) + b
            out[idx] = int(min(v, np.float32(65535)))
    return out, float(a), float(b)


def ref_decode(fmt: str, data: bytes):
    """(encoding, A, B, 16-bit codes) of a compressedDepth message, read with struct and OpenCV's PNG reader."""
    encoding, kind = fmt.split(';')[0].strip(), fmt.split()[-1]
    zero, a, b = struct.unpack_from('<iff', data)
    assert zero == 0
    payload = data[12:]
    if kind == 'png':
        codes = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        assert codes.dtype == np.uint16 and codes.ndim == 2
    else:
        codes = ref_rvl_decode(payload)
    return encoding, a, b, codes


def ref_depth_metres(fmt: str, data: bytes) -> np.ndarray:
    """A compressedDepth message -> float32 metres, NaN invalid: A / (v - B) for 32FC1, millimetres / 1000 for
    16UC1, 0 invalid in both."""
    encoding, a, b, codes = ref_decode(fmt, bytes(data))
    out = np.full(codes.shape, np.nan, np.float32)
    valid = codes > 0
    if encoding == '16UC1':
        out[valid] = codes[valid].astype(np.float32) / np.float32(1000.0)
    else:
        out[valid] = np.float32(a) / (codes[valid].astype(np.float32) - np.float32(b))
    return out
