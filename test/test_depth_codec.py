"""compressedDepth codec against an independent reading of the published format (test/depth_codec_reference.py:
plain loops written from the wire format, sharing none of the project's vectorized coder)."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from depth_codec_reference import ref_decode, ref_quantize, ref_rvl_decode, ref_rvl_encode

from mgeo_ros import depth_codec as dc
from mgeo_ros.errors import BadInputError, DepthCodecError, ImageTooLargeError

# --- fixtures ------------------------------------------------------------------------------------------------------

SHAPES = [(1, 1), (3, 5), (479, 641)]


def scene(shape, seed=0, depth_max=10.0) -> np.ndarray:
    """Metres with every kind of invalid value: NaN, 0, negative, +inf, at and beyond depth_max, too close."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.2, depth_max * 0.999, shape).astype(np.float32)
    flat = d.reshape(-1)
    specials = [np.nan, 0.0, -1.0, np.inf, depth_max, depth_max * 3, 0.01]
    for k, value in enumerate(specials[:flat.size - 1] if flat.size > 1 else []):
        flat[(k * 7 + 1) % flat.size] = value
    if d.size > 100:
        d[: d.shape[0] // 5, : d.shape[1] // 3] = np.nan     # a sky: one long invalid run per row
    return d


def codes_image(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 65536, shape).astype(np.uint16)
    img[rng.random(shape) < 0.3] = 0
    return img


# --- RVL both ways -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape', SHAPES + [(40, 30)])
@pytest.mark.parametrize('fill', ['random', 'zeros', 'full', 'smooth'])
def test_rvl_is_byte_identical_to_the_reference_both_ways(shape, fill):
    img = codes_image(shape)
    if fill == 'zeros':
        img[:] = 0
    elif fill == 'full':
        img[img == 0] = 1
    elif fill == 'smooth':
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        img = (3000 + 5 * xx + 3 * yy).astype(np.uint16)
    ours = dc.rvl_encode(img)
    reference = ref_rvl_encode(img)
    assert ours == reference                                   # the same bytes as the published coder writes
    assert np.array_equal(ref_rvl_decode(ours), img)
    assert np.array_equal(dc.rvl_decode(reference), img)


def test_rvl_long_runs_and_large_jumps():
    img = np.zeros((300, 300), np.uint16)                    # zero runs past 4096 and 32768 pixels: 5-6 nibbles
    img[150, 10] = 65535
    img[150, 11] = 1                                         # a delta of -65534
    img[299, 299] = 40000
    assert dc.rvl_encode(img) == ref_rvl_encode(img)
    assert np.array_equal(dc.rvl_decode(dc.rvl_encode(img)), img)


# --- 32FC1 and 16UC1, png and rvl ----------------------------------------------------------------------------------

@pytest.mark.parametrize('fmt', dc.FORMATS)
@pytest.mark.parametrize('shape', SHAPES)
def test_32fc1_matches_the_published_quantization_and_round_trips(fmt, shape):
    depth_max, q = 10.0, 100.0
    depth = scene(shape, depth_max=depth_max)
    format_, data = dc.encode_depth(depth, '32FC1', fmt, depth_max, q, png_level=1)
    assert format_ == f'32FC1; compressedDepth {fmt}'
    encoding, a, b, codes = ref_decode(format_, data)
    expected, ea, eb = ref_quantize(depth, depth_max, q)
    assert (encoding, a, b) == ('32FC1', ea, eb) and (a, b) == (10100.0, -1009.0)
    assert np.array_equal(codes, expected)
    back = dc.decode_depth(format_, data)
    assert back.dtype == np.float32 and back.shape == shape
    invalid = ~np.isfinite(depth) | (depth <= 0) | (depth >= depth_max)
    assert np.isnan(back[invalid]).all()                      # NaN, 0, negative, inf, beyond depth_max: NaN
    near = np.float32(a / (65535 - b))                        # the closest depth 16 bits hold
    inside = ~invalid & (depth >= near)
    step = dc.depth_step(depth[inside], depth_max, q)
    err = back[inside] - depth[inside]
    # truncation: the decoded depth lies within one code step, on the far side (float32 rounding: 1e-5 relative)
    assert np.all(err <= step * (1 + 1e-5)) and np.all(err >= -1e-5 * depth[inside])
    close = ~invalid & (depth < near)
    assert np.allclose(back[close], near, rtol=1e-5)          # too close for 16 bits: the closest code, not garbage


def test_quantization_step_bound_over_the_whole_range():
    """Every depth in [A/(65535-B), depth_max) comes back within one step d^2/A (+ its second-order term)."""
    d = np.geomspace(0.1521, 9.999, 20000).astype(np.float32)
    for fmt in dc.FORMATS:
        back = dc.decode_depth(*dc.encode_depth(d[None], '32FC1', fmt))[0]
        ok = np.isfinite(back)
        assert ok[:-1].all()                                  # only the last, within a step of depth_max, may go
        a = 10100.0
        bound = d[ok].astype(np.float64) ** 2 / a * 1.01 + 1e-6   # one step ~ d^2/A; 1% for the step's curvature
        assert np.all(np.abs(back[ok] - d[ok]) <= bound)


@pytest.mark.parametrize('fmt', dc.FORMATS)
@pytest.mark.parametrize('shape', SHAPES)
def test_16uc1_is_lossless_millimetres_with_depth_max(fmt, shape):
    mm = codes_image(shape, seed=5)
    format_, data = dc.encode_depth(mm, '16UC1', fmt, depth_max=30.0)
    assert format_ == f'16UC1; compressedDepth {fmt}'
    encoding, _, _, codes = ref_decode(format_, data)
    expected = np.where(mm > 30000, 0, mm)
    assert encoding == '16UC1' and np.array_equal(codes, expected)
    back = dc.decode_depth(format_, data)
    assert back.dtype == np.uint16 and np.array_equal(back, expected)
    metres = dc.decode_depth_metres(format_, data)
    assert np.array_equal(np.isnan(metres), expected == 0)
    assert np.allclose(metres[expected > 0], expected[expected > 0] / 1000.0, rtol=1e-6)


def test_16uc1_from_metres_rounds_to_millimetres():
    depth = np.array([[1.2344, 1.2346, np.nan, -2.0, 70.0, 0.0]], np.float32)
    back = dc.decode_depth(*dc.encode_depth(depth, '16UC1', 'rvl', depth_max=60.0))
    assert back.tolist() == [[1234, 1235, 0, 0, 0, 0]]


@pytest.mark.parametrize('fmt', dc.FORMATS)
def test_all_invalid_frame(fmt):
    depth = np.full((48, 64), np.nan, np.float32)
    format_, data = dc.encode_depth(depth, '32FC1', fmt)
    assert np.isnan(dc.decode_depth(format_, data)).all()
    assert not ref_decode(format_, data)[3].any()


def test_decoding_a_reference_encoded_message():
    """The other way round: a message assembled by the reference coder decodes with the codec."""
    depth = scene((37, 53), seed=3)
    codes, a, b = ref_quantize(depth, 10.0, 100.0)
    for fmt, payload in (('rvl', ref_rvl_encode(codes)), ('png', cv2.imencode('.png', codes)[1].tobytes())):
        data = struct.pack('<iff', 0, a, b) + payload
        back = dc.decode_depth(f'32FC1; compressedDepth {fmt}', data)
        expected = np.where(codes > 0, np.float32(a) / (codes.astype(np.float32) - np.float32(b)), np.nan)
        assert np.array_equal(back, expected, equal_nan=True)


@pytest.mark.parametrize('fmt,kind', [('32FC1; compressedDepth', 'png'), ('32FC1', 'png'),
                                      ('32FC1; compressedDepth png', 'png'), ('16UC1; compressedDepth rvl', 'rvl'),
                                      ('mono16; compressedDepth png', 'png')])
def test_format_strings_read_like_the_plugin(fmt, kind):
    assert dc.parse_format(fmt)[1] == kind


def test_bare_format_of_older_bags_decodes_as_png():
    depth = scene((12, 9), seed=2)
    _, data = dc.encode_depth(depth, '32FC1', 'png')
    exact = dc.decode_depth('32FC1; compressedDepth png', data)
    for bare in ('32FC1; compressedDepth', '32FC1'):
        assert np.array_equal(dc.decode_depth(bare, data), exact, equal_nan=True)


def test_encode_refuses_bad_parameters():
    d = np.ones((4, 4), np.float32)
    for kwargs in ({'encoding': 'mono8'}, {'fmt': 'jpeg'}, {'depth_max': 0.0}, {'quantization': -1.0},
                   {'png_level': 10}):
        with pytest.raises(BadInputError):
            dc.encode_depth(d, **kwargs)
    with pytest.raises(BadInputError, match='one H x W'):
        dc.encode_depth(np.ones((4, 4, 3), np.float32))


# --- malformed input: refused, with a reason -----------------------------------------------------------------------

def _msg(fmt='rvl', encoding='32FC1', shape=(6, 7)):
    return dc.encode_depth(scene(shape, seed=4), encoding, fmt)


def _malformed():
    f_rvl, rvl = _msg('rvl')
    f_png, png = _msg('png')
    head = rvl[:12]
    cols, rows = struct.unpack_from('<II', rvl, 12)
    stream = rvl[20:]
    rgb_png = cv2.imencode('.png', np.zeros((4, 4, 3), np.uint16))[1].tobytes()
    mono8_png = cv2.imencode('.png', np.zeros((4, 4), np.uint8))[1].tobytes()
    zero_value = ref_rvl_encode(np.array([[5, 5]], np.uint16))        # deltas 5, 0 -> rewrite the 2nd as -5
    words = bytearray(zero_value)
    nan_head = struct.pack('<iff', 0, float('nan'), 1.0)
    return [
        ('short_header', f_rvl, rvl[:12]),
        ('short_header', f_rvl, rvl[:5]),
        ('short_header', f_rvl, head + b'\x01\x00\x00'),                                  # no room for cols, rows
        ('unknown_format', '32FC1; compressedDepth jpeg', rvl),
        ('unknown_format', 'rgb8; compressedDepth png', png),
        ('unknown_format', '32FC1; png compressed ', png),
        ('rvl_underfill', f_rvl, head + struct.pack('<II', cols, rows + 3) + stream),     # stream too short
        ('rvl_overfill', f_rvl, head + struct.pack('<II', cols, rows - 2) + stream),      # stream too long
        ('size_mismatch', f_rvl, rvl + b'\0\0\0\0'),                                       # a word after the end
        ('size_mismatch', f_rvl, rvl + b'\0'),                                             # not whole words
        ('rvl_underfill', f_rvl, rvl[:-4]),                                                # last word cut off
        ('empty_frame', f_rvl, head + struct.pack('<II', 0, rows) + stream),
        ('rvl_corrupt', '16UC1; compressedDepth rvl', head + bytes(words[:8]) +
         struct.pack('<I', _patch_second_delta(words))),
        ('png_channels', f_png, png[:12] + rgb_png),
        ('png_bit_depth', f_png, png[:12] + mono8_png),
        ('png_decode', f_png, png[:12] + b'not a png at all'),
        ('png_decode', f_png, png[:-30]),                                                  # cut short
        ('bad_quantization', f_rvl, nan_head + rvl[12:]),
    ]


def _patch_second_delta(words: bytearray) -> int:
    """The RVL stream of [[5, 5]] is VLE(0) VLE(2) VLE(10) VLE(0): make the 2nd delta -5 (zigzag 9 = 0b1001:
    nibbles 0x9 0x1), so that the second pixel of a non-zero run decodes to 0."""
    nibbles = [0, 2, 0x8 | 2, 1, 0x8 | 1, 1, 0, 0]       # 0, 2, zigzag(5)=10, zigzag(-5)=9, pad
    word = 0
    for nib in nibbles:
        word = (word << 4) | nib
    return word


@pytest.mark.parametrize('reason,fmt,data', _malformed(), ids=lambda v: v if isinstance(v, str) else '')
def test_malformed_input_is_refused_with_its_reason(reason, fmt, data):
    with pytest.raises(DepthCodecError) as info:
        dc.decode_depth(fmt, data)
    assert info.value.reason == reason
    assert str(info.value)                                   # a message for people as well as the reason


def test_patched_stream_is_what_the_reference_reads_as_a_zero():
    """The rvl_corrupt case above really is a zero inside a non-zero run (not some other fault)."""
    payload = struct.pack('<II', 2, 1) + struct.pack('<I', _patch_second_delta(bytearray()))
    assert ref_rvl_decode(payload).tolist() == [[5, 0]]


def test_oversized_frames_are_refused_before_decoding():
    for fmt in dc.FORMATS:
        format_, data = _msg(fmt, shape=(40, 50))
        with pytest.raises(ImageTooLargeError):
            dc.decode_depth(format_, data, max_pixels=1000)
        assert dc.decode_depth(format_, data, max_pixels=2000).shape == (40, 50)


def test_mask_compressed_png():
    mask = np.zeros((31, 17), bool)
    mask[5:20, 3:9] = True
    fmt, data = dc.encode_mask_png(mask, png_level=1)
    assert fmt == 'mono8; png compressed '                   # as compressed_image_transport names a mono8 png
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.shape == mask.shape
    assert np.array_equal(back, mask.astype(np.uint8) * 255)


@pytest.mark.parametrize('pairs', [3, 255, 256, 257, 5000])
def test_rvl_with_many_runs_both_ways(pairs):
    """Frames with up to 256 run pairs are walked pair by pair, longer ones by pointer doubling: both read the
    reference's streams, and refuse a stream that under- or overfills the frame."""
    cols = 2 * pairs
    img = np.zeros((1, cols), np.uint16)
    img[0, 1::2] = np.arange(1, pairs + 1)                   # pairs of (one zero, one value)
    payload = ref_rvl_encode(img)
    assert np.array_equal(dc.rvl_decode(payload), img)
    stream = payload[8:]
    with pytest.raises(DepthCodecError) as info:
        dc.rvl_decode(struct.pack('<II', cols + 1, 1) + stream)
    assert info.value.reason == 'rvl_underfill'
    with pytest.raises(DepthCodecError) as info:
        dc.rvl_decode(struct.pack('<II', cols - 3, 1) + stream)
    assert info.value.reason == 'rvl_overfill'
    with pytest.raises(DepthCodecError) as info:
        dc.rvl_decode(struct.pack('<II', cols, 1) + stream[:len(stream) // 2 // 4 * 4])
    assert info.value.reason == 'rvl_underfill'
