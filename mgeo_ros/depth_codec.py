"""Depth as image_transport's `compressedDepth` writes it, and the mask as its `compressed` png, bytes <-> numpy.

The wire format of `compressed_depth_image_transport`, so that stock C++ subscribers and recorded bags read what this
module writes, and this module reads what they write:

- `format` is `"<encoding>; compressedDepth <png|rvl>"` (a bare `"...; compressedDepth"` or a format without `;`
  is png, as older bags have it);
- `data` is a 12-byte header (int32 0, float32 A, float32 B, little endian), then a 16-bit greyscale PNG, or RVL:
  uint32 cols, uint32 rows and the RVL stream (A. D. Wilson's run-length / variable-length code, 32-bit words with
  the first nibble in the top bits);
- 32FC1 depth d (metres) travels as the inverse-depth code v = trunc(A/d + B), A = q(q+1), B = 1 - A/depth_max,
  decoded as A/(v - B); 0 is invalid (NaN, inf, d <= 0, d >= depth_max). One code step is about d^2/A metres;
- 16UC1 depth travels as millimetres; values above depth_max are written as 0.

Pure numpy/OpenCV, no ROS: the node, the bag readers and the tests share it. The RVL coder is vectorized (no loop
per pixel). Malformed input raises `DepthCodecError` whose `reason` names the fault.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

from mgeo_ros.errors import BadInputError, DepthCodecError, ImageDecodeError
from mgeo_ros.image_codec import check_pixels, imdecode_checked
from mgeo_ros.image_header import read_header

FORMATS = ('png', 'rvl')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
RAW16_ENCODINGS = ('16UC1', 'mono16')         # read as 16-bit raw depth, like the plugin (bit depth 16)
DEFAULT_DEPTH_MAX = 10.0                      # m, the plugin's default
DEFAULT_QUANTIZATION = 100.0                  # depth (m) at which one code step is about 1 m
DEFAULT_PNG_LEVEL = 3
CONFIG_HEADER = struct.Struct('<iff')         # compressionFormat INV_DEPTH = 0, depthParam[0] = A, depthParam[1] = B
RVL_SIZE = struct.Struct('<II')               # cols, rows
MAX_RVL_PIXELS = 1 << 24                      # a run length fits 8 nibbles (24 bits)
_UINT16_TOP = np.float32(65535.0)


def quantization_params(depth_max: float, quantization: float) -> tuple[np.float32, np.float32]:
    """(A, B) of the inverse-depth code, in float32 as the plugin computes them."""
    z0, top = np.float32(quantization), np.float32(depth_max)
    a = np.float32(z0 * (z0 + np.float32(1.0)))
    return a, np.float32(np.float32(1.0) - a / top)


def depth_step(depth_m: float | np.ndarray, depth_max: float = DEFAULT_DEPTH_MAX,
               quantization: float = DEFAULT_QUANTIZATION) -> float | np.ndarray:
    """The size (m) of one inverse-depth code step at `depth_m`: d = A/(v - B) changes by ~d^2/A per step. Exact
    step of the code that holds d: A/(v-1-B) - A/(v-B)."""
    a, b = quantization_params(depth_max, quantization)
    v = np.floor(a / np.asarray(depth_m, np.float64) + b)
    return a / (v - 1 - b) - a / (v - b)


def metres_to_millimetres(depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float depth (m, NaN invalid) -> uint16 millimetres (REP 118: 0 invalid), rounded; outside 0..65.535 m -> 0.
    `out`: a uint16 array of the depth's shape to write into (the node's published buffer)."""
    mm = np.multiply(depth, 1000.0, dtype=np.float64)
    np.rint(mm, out=mm)
    with np.errstate(invalid='ignore'):
        kept = (mm >= 0) & (mm <= 65535)  # NaN and inf are not
    if out is None:
        out = np.empty(mm.shape, np.uint16)
    out.fill(0)
    np.copyto(out, mm, casting='unsafe', where=kept)
    return out


def inverse_depth_codes(depth: np.ndarray, depth_max: float = DEFAULT_DEPTH_MAX,
                        quantization: float = DEFAULT_QUANTIZATION) -> np.ndarray:
    """float32 metres -> uint16 inverse-depth codes trunc(A/d + B); 0 for NaN, inf, d <= 0 and d >= depth_max.
    Depths too close for 16 bits (below A/(65535 - B), 0.15 m with the defaults) get the top code."""
    a, b = quantization_params(depth_max, quantization)
    d = np.asarray(depth, np.float32)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        v = np.divide(a, d, dtype=np.float32)
        v += b
    np.minimum(v, _UINT16_TOP, out=v)
    valid = (d > 0) & (d < np.float32(depth_max))
    return np.where(valid, v, np.float32(0.0)).astype(np.uint16)


def depth_from_codes(codes: np.ndarray, a: float, b: float) -> np.ndarray:
    """uint16 inverse-depth codes -> float32 metres A/(v - B), NaN where v is 0."""
    v = codes.astype(np.float32)
    with np.errstate(divide='ignore'):
        d = np.divide(np.float32(a), v - np.float32(b), dtype=np.float32)
    d[codes == 0] = np.nan
    return d


def _check_params(encoding: str, fmt: str, depth_max: float, quantization: float, png_level: int) -> None:
    if encoding not in DEPTH_ENCODINGS:
        raise BadInputError(f'depth encoding {encoding!r}: expected one of {DEPTH_ENCODINGS}')
    if fmt not in FORMATS:
        raise BadInputError(f'compressedDepth format {fmt!r}: expected one of {FORMATS}')
    if not (np.isfinite(depth_max) and depth_max > 0):
        raise BadInputError(f'compressed depth_max {depth_max} m: expected a positive depth (e.g. 10.0)')
    if not (np.isfinite(quantization) and quantization > 0):
        raise BadInputError(f'compressed depth quantization {quantization}: expected a positive value (e.g. 100)')
    if not 0 <= int(png_level) <= 9:
        raise BadInputError(f'png level {png_level}: expected 0..9')


def encode_depth(depth: np.ndarray, encoding: str = '32FC1', fmt: str = 'png',
                 depth_max: float = DEFAULT_DEPTH_MAX, quantization: float = DEFAULT_QUANTIZATION,
                 png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, bytes]:
    """An H x W depth image -> (CompressedImage.format, CompressedImage.data) as compressed_depth_image_transport
    writes them.

    depth: float metres (NaN invalid) for either encoding, or uint16 millimetres for 16UC1. depth_max (m): depth at
    or beyond it is sent as invalid. quantization: the plugin's depth_quantization (32FC1 only). png_level: zlib
    level 0..9 (png only)."""
    _check_params(encoding, fmt, depth_max, quantization, png_level)
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise BadInputError(f'depth has shape {depth.shape}: expected one H x W channel')
    if encoding == '32FC1':
        a, b = quantization_params(depth_max, quantization)
        codes = inverse_depth_codes(depth, depth_max, quantization)
    else:
        a = b = np.float32(0.0)
        codes = depth if depth.dtype == np.uint16 else metres_to_millimetres(depth)
        top = min(int(depth_max * 1000.0), 65535)    # the plugin's (ushort)(depth_max * 1000)
        codes = np.where(codes > top, np.uint16(0), codes)
    if fmt == 'png':
        ok, buf = cv2.imencode('.png', np.ascontiguousarray(codes), [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
        if not ok:
            raise BadInputError(f'OpenCV could not write a {codes.shape} 16-bit PNG')
        payload = buf.tobytes()
    else:
        payload = rvl_encode(codes)
    return f'{encoding}; compressedDepth {fmt}', CONFIG_HEADER.pack(0, float(a), float(b)) + payload


def parse_format(fmt: str) -> tuple[str, str]:
    """CompressedImage.format -> (encoding, 'png' | 'rvl'), read as the plugin's subscriber reads it; an unknown
    compression or encoding raises DepthCodecError('unknown_format')."""
    encoding, sep, rest = (fmt or '').partition(';')
    encoding = encoding.strip()
    if not sep:
        kind = 'png'
    elif 'compressedDepth png' in rest:
        kind = 'png'
    elif 'compressedDepth rvl' in rest:
        kind = 'rvl'
    elif 'compressedDepth' in rest and 'compressedDepth ' not in rest:
        kind = 'png'                                 # bare "; compressedDepth" of older bags
    else:
        raise DepthCodecError('unknown_format', f'format {fmt!r} is not compressedDepth png or rvl (expected '
                                                '"32FC1; compressedDepth png", "16UC1; compressedDepth rvl", ...)')
    if encoding != '32FC1' and encoding not in RAW16_ENCODINGS:
        raise DepthCodecError('unknown_format', f'format {fmt!r}: depth encoding {encoding!r} is not 32FC1 or '
                                                '16UC1; compressedDepth carries only these')
    return encoding, kind


def decode_depth(fmt: str, data: bytes | memoryview | np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """(CompressedImage.format, data) -> float32 metres (NaN invalid) for 32FC1, uint16 millimetres (0 invalid)
    for 16UC1. Refuses (DepthCodecError with a `reason`) anything that is not exactly a frame: it never returns
    depth read from damaged or misdeclared bytes. max_pixels: refuse larger frames before decoding them."""
    encoding, kind = parse_format(fmt)
    buf = memoryview(np.frombuffer(data, np.uint8) if not isinstance(data, (bytes, bytearray)) else data).cast('B')
    if len(buf) <= CONFIG_HEADER.size:
        raise DepthCodecError('short_header', f'compressedDepth data has {len(buf)} bytes: expected the '
                                              f'{CONFIG_HEADER.size}-byte header and an image after it')
    _, a, b = CONFIG_HEADER.unpack_from(buf)
    payload = buf[CONFIG_HEADER.size:]
    codes = _decode_png(payload, max_pixels) if kind == 'png' else rvl_decode(payload, max_pixels)
    if encoding != '32FC1':
        return codes
    if not (np.isfinite(a) and np.isfinite(b) and a > 0):
        raise DepthCodecError('bad_quantization', f'32FC1 compressedDepth header has A={a}, B={b}: expected a '
                                                  'positive A and a finite B (the inverse-depth parameters)')
    return depth_from_codes(codes, a, b)


def decode_depth_metres(fmt: str, data: bytes | memoryview | np.ndarray,
                        max_pixels: int | None = None) -> np.ndarray:
    """`decode_depth` in float32 metres for either encoding (16UC1 millimetres scaled, 0 -> NaN)."""
    depth = decode_depth(fmt, data, max_pixels)
    if depth.dtype == np.uint16:
        metres = depth.astype(np.float32) * np.float32(1e-3)
        metres[depth == 0] = np.nan
        return metres
    return depth


def _decode_png(payload: memoryview, max_pixels: int | None) -> np.ndarray:
    header = read_header(payload)
    if header is None or header.kind != 'png':
        raise DepthCodecError('png_decode', f'compressedDepth png payload ({len(payload)} bytes) is not a PNG file')
    if header.problem:
        raise DepthCodecError('png_decode', f'compressedDepth png payload is damaged: {header.problem}')
    if header.channels != 1:
        raise DepthCodecError('png_channels', f'compressedDepth PNG has {header.channels} channels: expected one '
                                              '16-bit channel')
    if header.bit_depth != 16:
        raise DepthCodecError('png_bit_depth', f'compressedDepth PNG has {header.bit_depth} bits per sample: '
                                               'expected 16')
    check_pixels(header.width, header.height, max_pixels, 'the compressedDepth PNG')
    try:
        image = imdecode_checked(np.frombuffer(payload, np.uint8), 'a 16-bit depth PNG', None)
    except ImageDecodeError as exc:
        raise DepthCodecError('png_decode', str(exc)) from exc
    if image.ndim != 2 or image.dtype != np.uint16:
        raise DepthCodecError('png_channels', f'compressedDepth PNG decodes to {image.dtype} {image.shape}: '
                                              'expected one 16-bit channel')
    return image


def _vle_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every 12-bit value: its 3-bit groups spread one per nibble (lowest first), the same with the
    continuation bit 0x8 in every nibble but its last (its variable-length code), and that code's nibble count."""
    t = np.arange(4096, dtype=np.uint32)
    spread = np.zeros(4096, np.uint32)
    for group in range(4):
        spread |= ((t >> (3 * group)) & 7) << (4 * group)
    count = np.maximum(1, (np.frexp(t.astype(np.float64))[1] + 2) // 3).astype(np.uint32)
    continuation = (np.uint32(0x8888) & ((np.uint32(1) << (4 * (count - 1))) - 1)).astype(np.uint32)
    return spread, spread | continuation, count


_SPREAD12, _VLE12, _NIBBLES12 = _vle_tables()
_VLE12_AND_COUNT = _VLE12 | (_NIBBLES12 << 16)       # one gather gives both (a 12-bit code has <= 16 bits)


def _vle_codes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint32 values (< 2^24) -> (variable-length codes, first nibble lowest; their nibble counts)."""
    both = np.take(_VLE12_AND_COUNT, np.bitwise_and(tokens, 0xFFF, dtype=np.intp))   # an intp index: no cast
    codes, nibbles = both & 0xFFFF, both >> 16
    big = np.flatnonzero(tokens > 0xFFF)              # run lengths and large jumps: few
    if big.size:
        high = tokens[big] >> 12
        codes[big] = (_SPREAD12[tokens[big] & 0xFFF] | np.uint32(0x8888)) | (_VLE12[high] << 16)
        nibbles[big] = 4 + _NIBBLES12[high]
    return codes, nibbles


def rvl_encode(codes: np.ndarray) -> bytes:
    """uint16 H x W -> RVL payload (uint32 cols, uint32 rows, stream) exactly as the plugin's RvlCodec writes it.

    Vectorized: the zero / non-zero runs come from where the mask changes, every token's variable-length code (3
    bits per nibble, 0x8 = more follows) comes from 12-bit lookup tables at once, and the codes are OR-ed into
    32-bit words at their cumulative nibble offsets."""
    codes = np.ascontiguousarray(codes, np.uint16)
    rows, cols = codes.shape
    flat = codes.reshape(-1)
    n = flat.size
    if n >= MAX_RVL_PIXELS:
        raise BadInputError(f'depth of {cols}x{rows} = {n} pixels is too large for this RVL coder (under '
                            f'{MAX_RVL_PIXELS}); use png')
    nonzero = flat != 0
    change = np.flatnonzero(nonzero[1:] != nonzero[:-1]) + 1
    lengths = np.diff(np.concatenate(([0], change, [n])))
    if nonzero[0]:
        lengths = np.concatenate(([0], lengths))      # every pair starts with a zero run, maybe empty
    if lengths.size % 2:
        lengths = np.concatenate((lengths, [0]))      # ends in zeros: the last non-zero run is empty
    zero_runs, value_runs = lengths[0::2], lengths[1::2]
    pairs = zero_runs.size
    n_values = n - int(zero_runs.sum())
    tokens = np.empty(2 * pairs + n_values, np.uint32)
    head = 2 * np.arange(pairs) + np.concatenate(([0], np.cumsum(value_runs[:-1])))
    tokens[head] = zero_runs
    tokens[head + 1] = value_runs
    values = (flat if n_values == n else flat[nonzero]).astype(np.int32)
    zigzag = np.empty(n_values, np.int32)             # delta to the previous value (0 before the first), zigzagged
    zigzag[:1] = values[:1]
    np.subtract(values[1:], values[:-1], out=zigzag[1:])
    sign = zigzag >> 31
    zigzag <<= 1
    zigzag ^= sign
    if pairs == 1:                                    # no zeros after the first value: one slice, no mask
        tokens[2:] = zigzag
    else:
        is_value = np.ones(tokens.size, bool)
        is_value[head] = False
        is_value[head + 1] = False
        tokens[is_value] = zigzag
    vle, nibbles = _vle_codes(tokens)
    end = np.cumsum(nibbles, dtype=np.uint32)
    start = end - nibbles
    total = int(end[-1])
    count = (total + 7) // 8
    shift = (start & 7) << 2
    # each code lands in its word (bits shifted past 32 dropped), and only a word's last code can spill into the
    # next; pieces in one word are disjoint, so a word is the sum of its pieces: differences of a wrapping cumulative
    # sum at each word's last code, plus the spill of the previous word's last code
    low = vle << shift
    # a code has at most 8 nibbles, so every word but a final one that the last code spills into holds the start of
    # one: a word's last code is the one before the next word's first
    word = start >> 3
    last = np.concatenate((np.flatnonzero(word[1:] != word[:-1]), [word.size - 1] * (count - int(word[-1]))))
    words = np.diff(np.cumsum(low, dtype=np.uint32)[last], prepend=np.uint32(0))
    words[1:] += (vle[last] >> (32 - shift[last]))[:-1]   # numpy shifts by >= 32 bits give 0 (shift 0: no spill)
    # the words hold their first nibble lowest; the format wants it in the top bits of a little-endian int32
    swapped = ((words & 0x0F0F0F0F) << 4) | ((words >> 4) & 0x0F0F0F0F)
    return RVL_SIZE.pack(cols, rows) + swapped.astype('>u4').tobytes()


_LOOP_PAIRS = 256   # run pairs walked one by one before the rest of the chain is found by pointer doubling


def _underfill(covered: int, n: int, cols: int, rows: int) -> DepthCodecError:
    return DepthCodecError('rvl_underfill', f'RVL stream ends after {covered} of {n} pixels ({cols}x{rows})')


def _run_heads(tokens: np.ndarray, n: int, cols: int, rows: int) -> tuple[np.ndarray, int]:
    """Token indices of the (zero run, non-zero run) pairs that cover exactly n pixels, and the index after the
    last pair's values. Each pair's place follows from the one before (2 + its non-zero count further on): frames
    with few runs walk them; the rest of a long chain is marked by pointer doubling (log2 of its length passes)."""
    head, pos, covered, count = [], 0, 0, tokens.size
    while covered < n and len(head) < _LOOP_PAIRS:
        if pos + 1 >= count:
            raise _underfill(covered, n, cols, rows)
        zeros, values = int(tokens[pos]), int(tokens[pos + 1])
        covered += zeros + values
        if covered > n:
            raise DepthCodecError('rvl_overfill', f'RVL stream describes more than the {n} pixels of a '
                                                  f'{cols}x{rows} frame')
        if pos + 2 + values > count:
            raise _underfill(covered - values, n, cols, rows)
        head.append(pos)
        pos += 2 + values
    heads = np.asarray(head, np.int64)
    if covered == n:
        return heads, pos
    if pos + 1 >= count:
        raise _underfill(covered, n, cols, rows)
    jump = np.full(count + 1, count, np.int64)                 # index `count`: past the end, a fixed point
    jump[:count - 1] = np.minimum(np.arange(2, count + 1) + tokens[1:], count)
    on = np.zeros(count + 1, bool)
    on[pos] = True
    marked = np.array([pos], np.int64)
    while jump[pos] < count:        # marked: the chain's nodes fewer than 2^r steps from pos; jump: 2^r steps
        reached = jump[marked]
        marked = np.concatenate((marked, reached[reached < count]))
        jump = jump[jump]
    on[marked] = True
    chain = np.flatnonzero(on[:count - 1])                    # a head needs its non-zero count after it
    sums = np.cumsum(tokens[chain] + tokens[chain + 1])
    last = int(np.searchsorted(sums, n - covered))
    if last == chain.size:
        raise _underfill(covered + int(sums[-1]) if sums.size else covered, n, cols, rows)
    if int(sums[last]) != n - covered:
        raise DepthCodecError('rvl_overfill', f'RVL stream describes more than the {n} pixels of a '
                                              f'{cols}x{rows} frame')
    end = int(chain[last]) + 2 + int(tokens[chain[last] + 1])
    if end > count:
        raise _underfill(covered + int(sums[last - 1]) if last else covered, n, cols, rows)
    return np.concatenate((heads, chain[:last + 1])), end


def rvl_decode(payload: bytes | memoryview, max_pixels: int | None = None) -> np.ndarray:
    """RVL payload (uint32 cols, uint32 rows, stream) -> uint16 rows x cols. The stream must fill the frame
    exactly and end in its last word; anything else raises DepthCodecError ('rvl_underfill', 'rvl_overfill',
    'rvl_corrupt', 'size_mismatch', 'empty_frame')."""
    buf = memoryview(payload).cast('B')
    if len(buf) < RVL_SIZE.size:
        raise DepthCodecError('short_header', f'RVL payload has {len(buf)} bytes: expected at least '
                                              f'{RVL_SIZE.size} (cols, rows)')
    cols, rows = RVL_SIZE.unpack_from(buf)
    if cols == 0 or rows == 0:
        raise DepthCodecError('empty_frame', f'RVL frame is {cols}x{rows}: expected a non-empty size')
    n = cols * rows
    check_pixels(cols, rows, max_pixels, 'the RVL frame')
    stream = buf[RVL_SIZE.size:]
    if len(stream) % 4:
        raise DepthCodecError('size_mismatch', f'RVL stream has {len(stream)} bytes: expected whole 32-bit words')
    octets = np.frombuffer(stream, '<u4').astype('>u4').view(np.uint8)   # first nibble in the high half of octet 0
    nib = np.empty(octets.size * 2, np.uint8)
    nib[0::2] = octets >> 4
    nib[1::2] = octets & 0xF
    ends = np.flatnonzero(nib < 8)
    if ends.size == 0:
        raise DepthCodecError('rvl_underfill', f'RVL stream ({len(stream)} bytes) holds no complete value for a '
                                               f'{cols}x{rows} frame')
    starts = np.concatenate(([0], ends[:-1] + 1))
    widths = ends - starts + 1
    if int(widths.max()) > 11:
        raise DepthCodecError('rvl_corrupt', f'RVL stream has a {int(widths.max())}-nibble value: expected at '
                                             'most 11 (32 bits)')
    used = int(ends[-1]) + 1
    place = np.arange(used) - np.repeat(starts, widths)
    tokens = np.add.reduceat((nib[:used] & 7).astype(np.int64) << (3 * place), starts)
    heads, pos = _run_heads(tokens, n, cols, rows)
    last_nibble = int(ends[pos - 1]) + 1
    if (last_nibble + 7) // 8 != len(stream) // 4:
        raise DepthCodecError('size_mismatch', f'RVL stream has {len(stream) // 4} words but the {cols}x{rows} '
                                               f'frame ends in word {(last_nibble + 7) // 8}')
    is_value = np.ones(pos, bool)
    is_value[heads] = False
    is_value[heads + 1] = False
    z = tokens[:pos][is_value]
    pixels = np.cumsum((z >> 1) ^ -(z & 1))
    if pixels.size and (int(pixels.min()) < 1 or int(pixels.max()) > 65535):
        raise DepthCodecError('rvl_corrupt', 'RVL stream decodes a non-zero run to values outside 1..65535')
    runs = np.stack([tokens[heads], tokens[heads + 1]], 1).reshape(-1)
    filled = np.repeat(np.tile(np.array([False, True]), heads.size), runs)
    out = np.zeros(n, np.uint16)
    out[filled] = pixels
    return out.reshape(rows, cols)


def encode_mask_png(mask: np.ndarray, png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, bytes]:
    """A validity mask (bool or mono8, H x W) -> (format, data) of image_transport's `compressed` transport for a
    mono8 image in png: format "mono8; png compressed " (no colour conversion named for a grey image)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BadInputError(f'mask has shape {mask.shape}: expected H x W')
    if not 0 <= int(png_level) <= 9:
        raise BadInputError(f'png level {png_level}: expected 0..9')
    mono = mask.astype(np.uint8) * np.uint8(255) if mask.dtype == bool else np.ascontiguousarray(mask, np.uint8)
    ok, buf = cv2.imencode('.png', mono, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise BadInputError(f'OpenCV could not write a {mask.shape} mono8 PNG')
    return 'mono8; png compressed ', buf.tobytes()
