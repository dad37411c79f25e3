"""PointCloud2 layout, packing and unpacking in numpy and OpenCV (no rclpy here, so it tests and benchmarks anywhere).

Layout written by `fill_organized`: float32 fields x, y, z at offsets 0, 4, 8 and, with colour, `rgb` at 12: the
standard packed colour of PCL/RViz, a uint32 0x00RRGGBB whose bits are stored as a float32. point_step is 12 or 16,
little-endian. With normals (the node's `points_normals`), float32 `normal_x`, `normal_y`, `normal_z` follow (the
names PCL's PointNormal and RViz use), making point_step 24 or 28. Clouds are organized (height x width, NaN for
invalid points, is_dense false); a stride keeps every stride-th row and column and stays organized.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np

from mgeo_ros.errors import BadInputError

# sensor_msgs/PointField datatype codes.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPE_TO_DTYPE: dict[int, np.dtype] = {
    INT8: np.dtype('i1'), UINT8: np.dtype('u1'), INT16: np.dtype('<i2'), UINT16: np.dtype('<u2'),
    INT32: np.dtype('<i4'), UINT32: np.dtype('<u4'), FLOAT32: np.dtype('<f4'), FLOAT64: np.dtype('<f8'),
}


@dataclass(frozen=True)
class Field:
    """One PointField: name, byte offset in a point, datatype code, element count."""

    name: str
    offset: int
    datatype: int = FLOAT32
    count: int = 1


XYZ_FIELDS = (Field('x', 0), Field('y', 4), Field('z', 8))
XYZRGB_FIELDS = XYZ_FIELDS + (Field('rgb', 12),)
NORMAL_NAMES = ('normal_x', 'normal_y', 'normal_z')


def cloud_fields(with_rgb: bool, with_normals: bool = False) -> tuple[Field, ...]:
    """The fields written: x, y, z [, rgb] [, normal_x, normal_y, normal_z], all 4 bytes, packed in that order."""
    fields = XYZRGB_FIELDS if with_rgb else XYZ_FIELDS
    if with_normals:
        start = 4 * len(fields)
        fields += tuple(Field(name, start + 4 * i) for i, name in enumerate(NORMAL_NAMES))
    return fields


def point_step(with_rgb: bool, with_normals: bool = False) -> int:
    """Bytes per point: 12 for xyz, 16 for xyzrgb, 12 more with normals."""
    return (16 if with_rgb else 12) + (12 if with_normals else 0)


def normals_offset(with_rgb: bool) -> int:
    """Index (in float32 channels) of normal_x within a point."""
    return 4 if with_rgb else 3


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint32 [...] holding 0x00RRGGBB (view it as float32 for the `rgb` field). On a
    little-endian host OpenCV's RGB -> BGRA puts the bytes of 0xAARRGGBB in memory order and the alpha byte is
    cleared (10x faster than three strided byte copies); elsewhere the bits are assembled with shifts."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise BadInputError(f'rgb must be uint8 [..., 3], got {rgb.dtype} {rgb.shape}')
    if sys.byteorder == 'little' and rgb.ndim == 3 and rgb.size:
        packed = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA).view(np.uint32)[..., 0]
        return np.bitwise_and(packed, np.uint32(0x00FFFFFF), out=packed)
    wide = rgb.astype(np.uint32)
    return (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]


def fill_organized(out: np.ndarray, points, rgb: np.ndarray | None = None,
                   normals: np.ndarray | None = None) -> np.ndarray:
    """Write an organized cloud into `out` (float32 H x W x (3 | 4 with rgb) [+3 with normals], C-contiguous, e.g.
    a view on a message's bytes): the points' x, y, z (an H x W x 3 array, or a tuple of three H x W planes), the
    packed colour (`pack_rgb`'s bits), the normals, all interleaved by one `cv2.merge` pass (writing each field
    straight into the 16-byte points is a strided store per field, 2.5x slower at 1280x720)."""
    if isinstance(points, tuple):
        planes = [np.ascontiguousarray(p, dtype=np.float32) for p in points]
    else:
        planes = [np.ascontiguousarray(points, dtype=np.float32)]
    h, w = planes[0].shape[:2]
    if h * w == 0:
        return out
    if rgb is not None:
        planes.append(pack_rgb(rgb).view(np.float32))  # bits, not values: merge copies them
    if normals is not None:
        planes.append(np.ascontiguousarray(normals, dtype=np.float32))
    if not (out.flags.c_contiguous and out.dtype == np.float32 and out.shape == (h, w, sum(
            1 if p.ndim == 2 else p.shape[2] for p in planes))):
        raise BadInputError(f'out must be C-contiguous float32 {h} x {w} x fields, got {out.dtype} {out.shape}')
    merged = cv2.merge(planes, dst=out)
    if not np.shares_memory(merged, out):  # OpenCV made its own array instead of writing into out
        out[...] = merged
    return out


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """uint32 or float32 (bits of 0x00RRGGBB) [...] -> uint8 [..., 3]."""
    packed = np.asarray(packed)
    bits = packed.view(np.uint32) if packed.dtype.itemsize == 4 and packed.dtype.kind == 'f' else packed
    bits = bits.astype(np.uint32, copy=False)
    out = np.empty(bits.shape + (3,), np.uint8)
    out[..., 0] = bits >> 16
    out[..., 1] = bits >> 8
    out[..., 2] = bits
    return out


def _field_view(buffer: np.ndarray, height: int, width: int, row_step: int, step: int, field: Field,
                big_endian: bool) -> np.ndarray:
    """Zero-copy H x W view of one scalar field inside the raw cloud bytes."""
    if field.datatype not in DATATYPE_TO_DTYPE:
        raise BadInputError(f'fields[{field.name}].datatype {field.datatype} is not a PointField datatype')
    dtype = DATATYPE_TO_DTYPE[field.datatype]
    if big_endian:
        dtype = dtype.newbyteorder('>')
    if field.offset < 0 or field.offset + dtype.itemsize > step:
        raise BadInputError(f'fields[{field.name}].offset {field.offset} does not fit in point_step {step}')
    return np.ndarray((height, width), dtype, buffer=buffer, offset=field.offset, strides=(row_step, step))


def unpack_normals(data, height: int, width: int, point_step_bytes: int, row_step: int, fields, is_bigendian: bool,
                   ) -> np.ndarray | None:
    """The normal_x/y/z fields of raw cloud bytes as float32 H x W x 3, or None when the cloud has none."""
    by_name = {f.name: Field(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in fields}
    if not all(n in by_name for n in NORMAL_NAMES):
        return None
    height, width, step, row_step = int(height), int(width), int(point_step_bytes), int(row_step)
    buffer = np.frombuffer(data, np.uint8)
    need = 0 if height * width == 0 else row_step * (height - 1) + width * step
    if buffer.size < need:
        raise BadInputError(f'data has {buffer.size} bytes, needs {need} for {height} x {width} points')
    out = np.empty((height, width, 3), np.float32)
    if height * width:
        for i, name in enumerate(NORMAL_NAMES):
            out[..., i] = _field_view(buffer, height, width, row_step, step, by_name[name], bool(is_bigendian))
    return out


def unpack_points(data, height: int, width: int, point_step_bytes: int, row_step: int, fields, is_bigendian: bool,
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw cloud bytes -> (points float32 H x W x 3, rgb uint8 H x W x 3 or None).

    Reads any layout with x, y, z fields (float32 or float64) at any offsets and an optional `rgb`/`rgba` field, so
    clouds from other drivers (padded 32-byte PCL points, for example) load too. `fields` are `Field`s or objects with
    the same attributes (sensor_msgs/PointField).
    """
    height, width, step, row_step = int(height), int(width), int(point_step_bytes), int(row_step)
    if height < 0 or width < 0:
        raise BadInputError(f'height x width must not be negative, got {height} x {width}')
    if step <= 0:
        raise BadInputError(f'point_step must be positive, got {step}')
    if row_step < width * step:
        raise BadInputError(f'row_step {row_step} < width {width} x point_step {step}')
    buffer = np.frombuffer(data, np.uint8)
    need = 0 if height * width == 0 else row_step * (height - 1) + width * step
    if buffer.size < need:
        raise BadInputError(f'data has {buffer.size} bytes, needs {need} for {height} x {width} points')
    by_name = {f.name: Field(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in fields}
    missing = [n for n in 'xyz' if n not in by_name]
    if missing:
        raise BadInputError(f'fields lacks {missing}; has {sorted(by_name)}')
    points = np.empty((height, width, 3), np.float32)
    if height * width == 0:
        buffer = np.zeros(max(step, 1), np.uint8)  # the views below need a buffer; nothing is read from it
        row_step = 0
    for i, name in enumerate('xyz'):
        points[..., i] = _field_view(buffer, height, width, row_step, step, by_name[name], bool(is_bigendian))
    colour = by_name.get('rgb') or by_name.get('rgba')
    rgb = None
    if colour is not None:
        if colour.datatype not in (FLOAT32, UINT32, INT32):
            raise BadInputError(f'fields[{colour.name}].datatype {colour.datatype} is not a 4-byte packed colour')
        raw = _field_view(buffer, height, width, row_step, step, Field(colour.name, colour.offset, UINT32),
                          bool(is_bigendian))
        rgb = unpack_rgb(raw.astype(np.uint32))
    return points, rgb
