"""Image and CompressedImage read from their serialized bytes (ros/serialized.py) agree with rclpy's own
deserialization for every encoding, size and frame_id length (string lengths move every later field's alignment),
read the pixels without a copy, and refuse malformed bytes with the same errors as a deserialized message."""
from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from mgeo_ros.errors import BadInputError
from mgeo_ros.image_codec import ENCODINGS, bytes_per_pixel
from mgeo_ros.ros import convert
from mgeo_ros.ros.serialized import parse_compressed_image, parse_image

pytestmark = pytest.mark.ros_runtime


def _image(encoding: str, width: int, height: int, frame_id: str, pad: int = 0, big: int = 0,
           stamp=(12, 345)) -> Image:
    bpp = bytes_per_pixel(encoding) if encoding in ENCODINGS else 3
    step = width * bpp + pad
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=big, step=step)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.data = np.random.default_rng(width * 31 + height).integers(0, 256, step * height, np.uint8).tobytes()
    return msg


def _same_fields(parsed, msg: Image) -> None:
    assert (parsed.header.stamp.sec, parsed.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert parsed.header.frame_id == msg.header.frame_id
    assert (parsed.height, parsed.width, parsed.encoding, parsed.is_bigendian, parsed.step) == \
        (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    assert bytes(parsed.data) == bytes(msg.data)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('frame_id', ['', 'c', 'ca', 'cam', 'cam_', 'camera_optical', 'é/ü'])
def test_every_encoding_and_frame_id_length_reads_like_rclpy(encoding, frame_id):
    width = 4 if encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv') else 5
    for height, pad, big in ((3, 0, 0), (2, 3, 0), (1, 1, 1)):
        msg = _image(encoding, width, height, frame_id, pad, big)
        buffer = serialize_message(msg)
        parsed = parse_image(buffer)
        _same_fields(parsed, msg)
        np.testing.assert_array_equal(convert.image_to_numpy(parsed), convert.image_to_numpy(msg))
        np.testing.assert_array_equal(convert.image_to_rgb8(parsed), convert.image_to_rgb8(msg))


@pytest.mark.parametrize('width,height', [(1, 1), (7, 5), (160, 120), (641, 3)])
def test_sizes_stamps_and_the_pixels_are_not_copied(width, height):
    msg = _image('rgb8', width, height, 'x' * (width % 5), stamp=(-3, 999_999_999))
    buffer = serialize_message(msg)
    parsed = parse_image(buffer)
    _same_fields(parsed, msg)
    rgb = convert.image_to_rgb8(parsed)
    assert np.shares_memory(rgb, np.frombuffer(buffer, np.uint8))  # unpadded rgb8: a view into the received bytes


def _cdr(order: str, representation: int, fields: list) -> bytes:
    """Hand-built CDR for the byte-order test: ('u32'|'i32', v), ('str', s), ('u8', v), ('seq', bytes)."""
    out = bytearray(struct.pack('>H', representation) + b'\0\0')

    def align():
        out.extend(b'\0' * (-(len(out) - 4) % 4))
    for kind, value in fields:
        if kind in ('u32', 'i32'):
            align()
            out += struct.pack(order + ('I' if kind == 'u32' else 'i'), value)
        elif kind == 'u8':
            out.append(value)
        else:
            raw = value.encode() + b'\0' if kind == 'str' else value
            align()
            out += struct.pack(order + 'I', len(raw)) + raw
    return bytes(out)


def test_big_endian_cdr_and_xcdr2_read_the_same():
    pixels = bytes(range(2 * 3 * 3))
    fields = [('i32', 7), ('u32', 8), ('str', 'odd'), ('u32', 2), ('u32', 3), ('str', 'rgb8'), ('u8', 0),
              ('u32', 9), ('seq', pixels)]
    for order, representation in (('>', 0x0000), ('<', 0x0001), ('>', 0x0006), ('<', 0x0007)):
        parsed = parse_image(_cdr(order, representation, fields))
        assert (parsed.header.stamp.sec, parsed.header.stamp.nanosec, parsed.header.frame_id) == (7, 8, 'odd')
        assert (parsed.height, parsed.width, parsed.encoding, parsed.step) == (2, 3, 'rgb8', 9)
        assert bytes(parsed.data) == pixels
    with pytest.raises(BadInputError, match='representation 0x0002'):
        parse_image(_cdr('>', 0x0002, fields))


def test_bytes_cut_short_anywhere_are_refused_naming_the_field():
    msg = _image('rgb8', 3, 2, 'cam')
    buffer = serialize_message(msg)
    fields = set()
    for cut in range(len(buffer)):
        with pytest.raises(BadInputError) as err:
            parse_image(buffer[:cut])
        text = str(err.value)
        fields.add(text.split('cut short in ')[1].split(' ')[0] if 'cut short in' in text else 'cdr header')
    assert {'cdr header', 'header.stamp.sec', 'header.frame_id', 'height', 'width', 'encoding', 'is_bigendian',
            'step', 'data'} <= fields, fields


def test_a_frame_id_that_is_not_utf8_is_refused():
    fields = [('i32', 1), ('u32', 2), ('seq', b'\xff\xfe\0'), ('u32', 1), ('u32', 1), ('str', 'mono8'), ('u8', 0),
              ('u32', 1), ('seq', b'\x07')]
    with pytest.raises(BadInputError, match='header.frame_id is not UTF-8'):
        parse_image(_cdr('<', 0x0001, fields))


@pytest.mark.parametrize('encoding,step,nbytes,field', [
    ('bayer_rggb8', 15, 30, 'encoding'),
    ('', 15, 30, 'encoding'),
    ('rgb8', 14, 28, 'step'),
    ('rgb8', 15, 29, 'data'),
    ('rgb8', 15, 0, 'data'),
])
def test_malformed_images_fail_as_the_deserialized_message_does(encoding, step, nbytes, field):
    msg = Image(height=2, width=5, encoding=encoding, step=step, data=bytes(nbytes))
    parsed = parse_image(serialize_message(msg))
    with pytest.raises(BadInputError, match=field) as from_bytes:
        convert.image_to_rgb8(parsed)
    with pytest.raises(BadInputError) as from_message:
        convert.image_to_rgb8(msg)
    assert str(from_bytes.value) == str(from_message.value)


@pytest.mark.parametrize('fmt', ['png', 'jpeg', 'rgb8; png compressed rgb8', 'bgr8; jpeg compressed bgr8'])
@pytest.mark.parametrize('frame_id', ['', 'ab', 'cam_optical'])
def test_compressed_images_read_like_rclpy(fmt, frame_id):
    from std_msgs.msg import Header

    rgb = np.random.default_rng(3).integers(0, 256, (12, 17, 3), np.uint8)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = 5, 6
    msg = convert.rgb8_to_compressed(rgb, header, fmt='png' if 'png' in fmt else 'jpeg')
    msg.format = fmt
    buffer = serialize_message(msg)
    parsed = parse_compressed_image(buffer)
    assert (parsed.header.stamp.sec, parsed.header.stamp.nanosec, parsed.header.frame_id) == (5, 6, frame_id)
    assert parsed.format == fmt and bytes(parsed.data) == bytes(msg.data)
    np.testing.assert_array_equal(convert.compressed_to_rgb8(parsed), convert.compressed_to_rgb8(msg))
    with pytest.raises(BadInputError, match='cut short in data'):
        parse_compressed_image(buffer[:-1])


def test_a_damaged_compressed_image_fails_as_the_deserialized_message_does():
    msg = CompressedImage(format='png', data=b'\x89PNG\r\n\x1a\n' + bytes(10))
    with pytest.raises(BadInputError) as from_bytes:
        convert.compressed_to_rgb8(parse_compressed_image(serialize_message(msg)))
    with pytest.raises(BadInputError) as from_message:
        convert.compressed_to_rgb8(msg)
    # the decoder's own log line carries its clock ('[ERROR:0@32.561]'): the same words, not the same instant
    def words(exc):
        return re.sub(r'@\d+\.\d+\]', '@]', str(exc.value))

    assert words(from_bytes) == words(from_message)
    assert getattr(from_bytes.value, 'reason', 'image') == getattr(from_message.value, 'reason', 'image')
