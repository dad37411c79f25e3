"""What a PNG or JPEG file says about itself before anything is decoded: its size, and whether it is whole.

The node refuses an oversized or truncated compressed frame from these few bytes instead of handing it to the
decoder: a 61 KiB PNG can decode to 8000 x 8000 pixels (hundreds of MB). Pure Python (struct): no OpenCV, no rclpy.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers carry the size: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: no length field


@dataclass(frozen=True)
class ImageHeader:
    """Size and layout read from a compressed image's header; `problem` says why the file is not whole (or '')."""

    kind: str  # 'png' | 'jpeg'
    width: int
    height: int
    bit_depth: int
    channels: int
    problem: str = ''


def read_header(data: bytes | memoryview, check: bool = True) -> ImageHeader | None:
    """The header of a PNG or JPEG byte string, or None when it is neither (or too short to tell).

    check: also walk the file's structure and report in `problem` a file cut short (a PNG chunk longer than the
    data, no IEND; a JPEG without its end marker). Microseconds: chunk lengths only, no CRC (the decoder checks
    those, and its complaint is caught as it decodes)."""
    data = memoryview(data).cast('B')
    if bytes(data[:8]) == PNG_SIGNATURE:
        return _png(data, check)
    if bytes(data[:2]) == b'\xff\xd8':
        return _jpeg(data, check)
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels after decoding (palette -> RGB)


def _png(data: memoryview, check: bool) -> ImageHeader | None:
    if len(data) < 33 or bytes(data[12:16]) != b'IHDR':
        return None
    width, height, depth, colour = struct.unpack('>IIBB', data[16:26])
    header = ImageHeader('png', width, height, depth, _PNG_CHANNELS.get(colour, 0))
    if not check:
        return header
    return ImageHeader('png', width, height, depth, header.channels, _png_problem(data))


def _png_problem(data: memoryview) -> str:
    """'' when every chunk is complete and IEND ends the stream; else what is wrong."""
    pos, size = 8, len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        end = pos + 12 + length
        name = kind.decode('latin-1')
        if end > size:
            return f'PNG chunk {name} is cut short ({size - pos - 12} of {length} bytes)'
        if kind == b'IEND':
            return ''
        pos = end
    return 'PNG ends without its IEND chunk (truncated)'


def _jpeg(data: memoryview, check: bool) -> ImageHeader | None:
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack('>H', data[pos + 2:pos + 4])
        if marker in _SOF:
            if pos + 10 > size:
                return None
            depth, height, width, channels = struct.unpack('>BHHB', data[pos + 4:pos + 10])
            problem = ''
            if check and bytes(data[-2:]) != b'\xff\xd9':
                problem = 'JPEG ends without its end-of-image marker (truncated)'
            return ImageHeader('jpeg', width, height, depth, channels, problem)
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can size
            return None
        pos += 2 + length
    return None
