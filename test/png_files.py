"""Hand-built PNG files for the decoder tests: small files that claim huge sizes, without an encoder's help.

Not a test module (no test_ prefix); imported by test/ros/test_real_clients.py and test_node_real_clients.py.
"""
from __future__ import annotations

import struct
import zlib


def png_bytes(width: int, height: int, channels: int = 1, depth: int = 8, rows: bytes | None = None) -> bytes:
    """A valid PNG of `width` x `height` built by hand (zlib), all zero pixels unless `rows` is given: how a 61 KiB
    file can claim 8000 x 8000 pixels."""
    colour = {1: 0, 3: 2}[channels]
    row = bytes(1 + width * channels * depth // 8)
    raw = rows if rows is not None else row * height

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

    ihdr = struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b'')


def huge_png_header(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG whose header claims width x height (with a valid CRC) and whose pixel data is cut short."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    body = b'IHDR' + ihdr
    return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + body + struct.pack('>I', zlib.crc32(body))
            + struct.pack('>I', 64) + b'IDAT' + bytes(16))
