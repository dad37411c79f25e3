"""sensor_msgs/Image and CompressedImage read straight from their serialized (CDR) bytes.

The node subscribes to images serialized (rclpy `raw=True`): a frame that the newest-frame slot replaces is never
deserialized, and the frame that runs is read here, its pixel data a view into the received bytes (no copy). The
result has the fields the decoders read (`image_codec.image_to_rgb8`, `compressed_to_rgb8`), so a frame passes the
same checks, with the same error reasons, as a deserialized message; bytes cut short inside a field raise
BadInputError naming the field.

Layout (OMG CDR, the ROS 2 RMWs' wire format): a 4-byte encapsulation header (representation id, big or little
endian; options), then the fields in order, each primitive aligned to its size counted from the end of that header.
A string is a uint32 length that counts its NUL terminator, then the bytes; a byte sequence is a uint32 length, then
the bytes. These two messages hold nothing wider than 4 bytes, so plain XCDR2 lays them out the same as XCDR1.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from std_msgs.msg import Header

from mgeo_ros.errors import BadInputError

# representation id -> byte order: CDR_BE, CDR_LE, PLAIN_CDR2_BE, PLAIN_CDR2_LE
_ENCAPSULATIONS = {0x0000: '>', 0x0001: '<', 0x0006: '>', 0x0007: '<'}
_HEADER_BYTES = 4


@dataclass
class SerializedImage:
    """The fields of one sensor_msgs/Image; `data` is a memoryview into the serialized bytes."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass
class SerializedCompressedImage:
    """The fields of one sensor_msgs/CompressedImage; `data` is a memoryview into the serialized bytes."""

    header: Header
    format: str
    data: memoryview


class _Reader:
    """Reads CDR fields in order from one serialized message."""

    def __init__(self, buffer: bytes | memoryview, what: str) -> None:
        self.view = memoryview(buffer).cast('B')
        self.what = what
        if len(self.view) < _HEADER_BYTES:
            raise BadInputError(f'serialized {what} is {len(self.view)} bytes, shorter than its 4-byte CDR header')
        representation = int.from_bytes(self.view[:2], 'big')
        order = _ENCAPSULATIONS.get(representation)
        if order is None:
            raise BadInputError(f'serialized {what} has CDR representation 0x{representation:04x}; expected plain '
                                'CDR (0x0000/0x0001) or plain XCDR2 (0x0006/0x0007)')
        self._u32 = struct.Struct(order + 'I')
        self._i32 = struct.Struct(order + 'i')
        self.pos = _HEADER_BYTES

    def _need(self, count: int, field: str) -> None:
        if self.pos + count > len(self.view):
            raise BadInputError(f'serialized {self.what} is {len(self.view)} bytes: cut short in {field} (needs '
                                f'{self.pos + count})')

    def _align4(self) -> None:
        self.pos += -(self.pos - _HEADER_BYTES) % 4

    def u32(self, field: str) -> int:
        self._align4()
        self._need(4, field)
        value = self._u32.unpack_from(self.view, self.pos)[0]
        self.pos += 4
        return value

    def i32(self, field: str) -> int:
        self._align4()
        self._need(4, field)
        value = self._i32.unpack_from(self.view, self.pos)[0]
        self.pos += 4
        return value

    def u8(self, field: str) -> int:
        self._need(1, field)
        value = self.view[self.pos]
        self.pos += 1
        return value

    def string(self, field: str) -> str:
        size = self.u32(field)
        self._need(size, field)
        raw = bytes(self.view[self.pos:self.pos + size])
        self.pos += size
        if size and raw[-1] == 0:
            raw = raw[:-1]
        try:
            return raw.decode('utf-8')
        except UnicodeDecodeError as exc:
            raise BadInputError(f'serialized {self.what}: {field} is not UTF-8 ({exc.reason})') from None

    def octets(self, field: str) -> memoryview:
        size = self.u32(field)
        self._need(size, field)
        data = self.view[self.pos:self.pos + size]
        self.pos += size
        return data

    def header(self) -> Header:
        header = Header()
        header.stamp.sec = self.i32('header.stamp.sec')
        header.stamp.nanosec = self.u32('header.stamp.nanosec')
        header.frame_id = self.string('header.frame_id')
        return header


def parse_image(buffer: bytes | memoryview) -> SerializedImage:
    """A serialized sensor_msgs/Image -> its fields, pixel data not copied."""
    r = _Reader(buffer, 'Image')
    header = r.header()
    height, width = r.u32('height'), r.u32('width')
    encoding = r.string('encoding')
    is_bigendian = r.u8('is_bigendian')
    step = r.u32('step')
    return SerializedImage(header, height, width, encoding, is_bigendian, step, r.octets('data'))


def parse_compressed_image(buffer: bytes | memoryview) -> SerializedCompressedImage:
    """A serialized sensor_msgs/CompressedImage -> its fields, data not copied."""
    r = _Reader(buffer, 'CompressedImage')
    header = r.header()
    return SerializedCompressedImage(header, r.string('format'), r.octets('data'))
