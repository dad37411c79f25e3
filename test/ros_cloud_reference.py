"""A straightforward per-point PointCloud2 packer (struct.pack in Python loops): the baseline that the vectorized
`mgeo_ros.ros.cloud.fill_organized` is checked and benchmarked against. Run as a script for the 640x480 numbers."""
from __future__ import annotations

import struct
import time

import numpy as np


def pack_points_per_point(points, rgb=None, stride: int = 1) -> bytes:
    """Little-endian x, y, z float32 (+ rgb as the bits of 0x00RRGGBB), one struct.pack per point."""
    height, width = len(points), len(points[0])
    chunks = []
    for row in range(0, height, stride):
        for col in range(0, width, stride):
            x, y, z = (float(v) for v in points[row][col])
            if rgb is None:
                chunks.append(struct.pack('<fff', x, y, z))
            else:
                r, g, b = (int(v) for v in rgb[row][col])
                chunks.append(struct.pack('<fffI', x, y, z, (r << 16) | (g << 8) | b))
    return b''.join(chunks)


def benchmark(width: int = 640, height: int = 480, repeats: int = 5) -> dict:
    """ms per frame for the vectorized packer and the per-point baseline on a random xyzrgb frame."""
    from mgeo_ros.ros.cloud import fill_organized

    rng = np.random.default_rng(0)
    points = rng.normal(size=(height, width, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = np.empty((height, width, 4), np.float32)
    fill_organized(out, points, rgb)
    times = []
    for _ in range(repeats):  # best of a few: the machine is shared
        start = time.perf_counter()
        fill_organized(out, points, rgb)
        times.append(time.perf_counter() - start)
    vectorized_ms = min(times) * 1e3
    start = time.perf_counter()
    reference = pack_points_per_point(points, rgb)
    per_point_ms = (time.perf_counter() - start) * 1e3
    assert reference == out.tobytes()
    return {'vectorized_ms': vectorized_ms, 'per_point_ms': per_point_ms, 'ratio': per_point_ms / vectorized_ms}


if __name__ == '__main__':
    result = benchmark()
    print(f"640x480 xyzrgb: vectorized {result['vectorized_ms']:.2f} ms, per-point {result['per_point_ms']:.0f} ms, "
          f"ratio {result['ratio']:.0f}x")
