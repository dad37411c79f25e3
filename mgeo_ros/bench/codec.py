"""`mgeo bench --codec`: what compressedDepth costs and saves on the demo's depth.

Per frame size, for 32FC1 (inverse-depth codes) and 16UC1 (millimetres), png at zlib levels 1 and 3 and rvl: bytes
per frame against the raw Image's data, and the median encode and decode time of `mgeo_ros.depth_codec` (one
thread, the process's CPU). The depth is a synthetic indoor scene from the renderer the demo uses, with the
image_transport plugin's defaults (depth_max 10 m, quantization 100), so the numbers compare with a C++ publisher's.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from mgeo_ros.depth_codec import DEFAULT_DEPTH_MAX, DEFAULT_QUANTIZATION, decode_depth_metres, encode_depth

# (encoding, format, png level) rows measured at each size
VARIANTS = (('32FC1', 'png', 1), ('32FC1', 'png', 3), ('32FC1', 'rvl', None),
            ('16UC1', 'png', 1), ('16UC1', 'png', 3), ('16UC1', 'rvl', None))
RAW_BYTES_PER_PIXEL = {'32FC1': 4, '16UC1': 2}


def demo_depth(width: int, height: int, seed: int = 0) -> np.ndarray:
    """float32 metres (NaN invalid) of one synthetic indoor frame, the kind of scene `mgeo demo` streams."""
    from mgeo_ros.train.data import SyntheticDataset

    sample = SyntheticDataset(1, seed=seed, size=(width, height), kinds=('indoor',))[0]
    return np.where(sample.mask, sample.depth, np.nan).astype(np.float32)


def _median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_codec_bench(sizes: Sequence[tuple[int, int]], runs: int, warmup: int, seed: int = 0) -> dict:
    """Rows of {size, encoding, format, png_level, bytes, raw_bytes, ratio (raw / bytes), encode_ms, decode_ms,
    max_error_m (largest |decoded - depth| where the depth survives the trip)}."""
    rows = []
    for width, height in sizes:
        depth = demo_depth(width, height, seed)
        for encoding, fmt, level in VARIANTS:
            encode = partial(encode_depth, depth, encoding, fmt, DEFAULT_DEPTH_MAX, DEFAULT_QUANTIZATION,
                             level if level is not None else 3)

            format_, data = encode()
            back = decode_depth_metres(format_, data)
            kept = np.isfinite(back) & np.isfinite(depth)
            raw = width * height * RAW_BYTES_PER_PIXEL[encoding]
            rows.append({
                'size': f'{width}x{height}', 'encoding': encoding, 'format': fmt, 'png_level': level,
                'bytes': len(data), 'raw_bytes': raw, 'ratio': raw / len(data),
                'encode_ms': _median_ms(encode, runs, warmup),
                'decode_ms': _median_ms(partial(decode_depth_metres, format_, data), runs, warmup),
                'max_error_m': float(np.abs(back[kept] - depth[kept]).max()) if kept.any() else 0.0,
                'valid_kept': float(kept.sum() / max(int(np.isfinite(depth).sum()), 1)),
            })
    return {'rows': rows, 'meta': {'runs': runs, 'warmup': warmup, 'depth_max_m': DEFAULT_DEPTH_MAX,
                                   'quantization': DEFAULT_QUANTIZATION, 'scene': f'synthetic indoor, seed {seed}'}}


def format_codec_table(report: dict) -> str:
    """One line per size, encoding and format: bytes, ratio to raw, encode and decode ms, worst error."""
    head = (f'{"size":>9} {"encoding":>8} {"format":>7} {"bytes":>9} {"raw":>9} {"ratio":>6} {"enc ms":>7} '
            f'{"dec ms":>7} {"max err m":>9} {"kept":>5}')
    lines = [head]
    for r in report['rows']:
        fmt = r['format'] + (f'/{r["png_level"]}' if r['png_level'] is not None else '')
        lines.append(f'{r["size"]:>9} {r["encoding"]:>8} {fmt:>7} {r["bytes"]:>9} {r["raw_bytes"]:>9} '
                     f'{r["ratio"]:>6.2f} {r["encode_ms"]:>7.2f} {r["decode_ms"]:>7.2f} {r["max_error_m"]:>9.4f} '
                     f'{r["valid_kept"]:>5.2f}')
    meta = report['meta']
    lines.append(f'medians of {meta["runs"]} run(s) after {meta["warmup"]} warm-up; {meta["scene"]}; depth_max '
                 f'{meta["depth_max_m"]} m, quantization {meta["quantization"]} (png/N = zlib level N; kept = share '
                 'of valid pixels that survive the trip)')
    return '\n'.join(lines)
