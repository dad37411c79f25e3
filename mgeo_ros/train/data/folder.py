"""The folder dataset format (read and write).

    ROOT/rgb/NAME.png|jpg|jpeg          colour image
    ROOT/depth/NAME.png                 16-bit depth in millimetres, 0 = invalid
    ROOT/depth/NAME.npy                 float32 depth in metres, NaN or 0 = invalid
    ROOT/depth/NAME.exr                 float32 metres (only where this OpenCV build has OpenEXR; see exr_supported)
    ROOT/intrinsics/NAME.json           {"fx", "fy", "cx", "cy", "width", "height"} in pixels, per frame, or
    ROOT/intrinsics.json                the same for every frame
    ROOT/splits/train|val|test.txt      optional: one NAME per line
    ROOT/meta.json                      optional: {"metric": true}; false when depth is only up to scale
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

os.environ.setdefault('OPENCV_IO_ENABLE_OPENEXR', '1')  # must be set before cv2 is first imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mgeo_ros.errors import BadInputError  # noqa: E402
from mgeo_ros.geometry.intrinsics import Intrinsics  # noqa: E402
from mgeo_ros.train.data.sample import Sample  # noqa: E402

RGB_EXTS = ('.png', '.jpg', '.jpeg')
DEPTH_EXTS = ('.png', '.npy', '.exr')
INTRINSICS_KEYS = ('fx', 'fy', 'cx', 'cy', 'width', 'height')
MM_MAX_M = 65.535  # largest depth a 16-bit millimetre png can hold


def exr_supported() -> bool:
    """Whether this OpenCV build can write and read OpenEXR (needs OPENCV_IO_ENABLE_OPENEXR before cv2 import)."""
    try:
        ok, buf = cv2.imencode('.exr', np.zeros((2, 2), np.float32))
        return bool(ok) and cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) is not None
    except cv2.error:
        return False


def find_file(folder: Path, name: str, exts: Iterable[str]) -> Path | None:
    """The first existing folder/NAME.ext for ext in exts."""
    for ext in exts:
        p = folder / f'{name}{ext}'
        if p.is_file():
            return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB from a png/jpg (8- or 16-bit, grey or colour, alpha dropped)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInputError(f'{path}: unreadable image')
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise BadInputError(f'{path}: image dtype {img.dtype} (expected 8 or 16 bit)')
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


def read_depth(path: Path) -> np.ndarray:
    """H×W float32 metres with NaN invalid, from png (uint16 mm), npy (float metres) or exr (float metres)."""
    ext = path.suffix.lower()
    if ext == '.npy':
        try:
            d = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise BadInputError(f'{path}: unreadable npy ({e})') from None
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
            raise BadInputError(f'{path}: npy depth must be a 2-D float array, got {d.dtype} {d.shape}')
        d = d.astype(np.float32)
    elif ext == '.png':
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise BadInputError(f'{path}: unreadable depth png')
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise BadInputError(f'{path}: depth png must be single-channel 16-bit millimetres, got {raw.dtype} '
                                f'with shape {raw.shape}')
        d = raw.astype(np.float32) * 1e-3
    elif ext == '.exr':
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if exr_supported() else None
        if raw is None:
            raise BadInputError(f'{path}: cannot read .exr here (this OpenCV has no OpenEXR); use .npy or .png')
        d = (raw[..., 0] if raw.ndim == 3 else raw).astype(np.float32)
    else:
        raise BadInputError(f'{path}: unknown depth extension {ext!r} (expected one of {DEPTH_EXTS})')
    d = d.copy()
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return d


def parse_intrinsics(path: Path) -> Intrinsics:
    """Intrinsics from a JSON file {fx, fy, cx, cy, width, height}; errors name the file and the field."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(data, dict):
        raise BadInputError(f'{path}: expected a JSON object with keys {INTRINSICS_KEYS}')
    missing = [k for k in INTRINSICS_KEYS if k not in data]
    if missing:
        raise BadInputError(f'{path}: missing key(s) {missing}')
    try:
        vals = {k: float(data[k]) for k in INTRINSICS_KEYS}
    except (TypeError, ValueError):
        raise BadInputError(f'{path}: every one of {INTRINSICS_KEYS} must be a number') from None
    if vals['width'] != int(vals['width']) or vals['height'] != int(vals['height']):
        raise BadInputError(f'{path}: width/height must be integers')
    try:
        return Intrinsics(vals['fx'], vals['fy'], vals['cx'], vals['cy'], int(vals['width']), int(vals['height']))
    except BadInputError as e:
        raise BadInputError(f'{path}: {e}') from None


def intrinsics_path(root: Path, name: str) -> Path | None:
    """Per-frame intrinsics if present, else the folder's intrinsics.json, else None."""
    for p in (root / 'intrinsics' / f'{name}.json', root / 'intrinsics.json'):
        if p.is_file():
            return p
    return None


def read_meta(root: Path) -> dict:
    """meta.json (or {} when absent)."""
    p = root / 'meta.json'
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f'{p}: not valid JSON ({e})') from None
    if not isinstance(data, dict) or not isinstance(data.get('metric', True), bool):
        raise BadInputError(f'{p}: expected an object like {{"metric": true}}')
    return data


def list_names(root: Path, split: str | None = None) -> list[str]:
    """Frame names: the split file's lines, or every image stem under rgb/ (sorted)."""
    root = Path(root)
    if split is not None:
        p = root / 'splits' / f'{split}.txt'
        if not p.is_file():
            have = sorted(q.stem for q in (root / 'splits').glob('*.txt'))
            raise BadInputError(f'{p}: split {split!r} not found (splits here: {have or "none"}); give one of them '
                                'or leave the split out for every frame')
        return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    rgb = root / 'rgb'
    if not root.exists():
        raise BadInputError(f'dataset {root} does not exist (expected a folder dataset with rgb/ and depth/; make one '
                            'with `mgeo synth` or `mgeo data extract`)')
    if not rgb.is_dir():
        raise BadInputError(f'{rgb}: missing rgb/ folder (expected a folder dataset with rgb/ and depth/, as written '
                            'by `mgeo synth` or `mgeo data extract`)')
    return sorted({p.stem for p in rgb.iterdir() if p.suffix.lower() in RGB_EXTS})


def read_sample(root: Path, name: str, metric: bool = True) -> Sample:
    """One frame of a folder dataset; raises BadInputError naming the bad or missing file."""
    root = Path(root)
    rgb_path = find_file(root / 'rgb', name, RGB_EXTS)
    if rgb_path is None:
        raise BadInputError(f'{root / "rgb" / name}.*: missing image')
    depth_path = find_file(root / 'depth', name, DEPTH_EXTS)
    if depth_path is None:
        raise BadInputError(f'{root / "depth" / name}.*: missing depth')
    intr_path = intrinsics_path(root, name)
    if intr_path is None:
        raise BadInputError(f'{root}: no intrinsics/{name}.json and no intrinsics.json')
    rgb, depth, intr = read_rgb(rgb_path), read_depth(depth_path), parse_intrinsics(intr_path)
    h, w = rgb.shape[:2]
    if depth.shape != (h, w):
        raise BadInputError(f'{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is {w}x{h}')
    if (intr.width, intr.height) != (w, h):
        raise BadInputError(f'{intr_path}: intrinsics are for {intr.width}x{intr.height} but the image is {w}x{h}')
    return Sample(rgb, depth, intr, np.isfinite(depth), metric, f'{root.name}/{name}')


class FolderDataset:
    """Map-style dataset over a folder in the format above (optionally one split)."""

    def __init__(self, root, split: str | None = None) -> None:
        self.root = Path(root)
        self.names = list_names(self.root, split)
        self.metric = bool(read_meta(self.root).get('metric', True))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        return read_sample(self.root, self.names[index], self.metric)


def intrinsics_dict(intr: Intrinsics) -> dict:
    return {'fx': intr.fx, 'fy': intr.fy, 'cx': intr.cx, 'cy': intr.cy, 'width': intr.width, 'height': intr.height}


def write_sample(sample: Sample, root: Path, name: str, depth_format: str = 'npy') -> None:
    """Write one Sample as rgb/NAME.png, depth/NAME.<depth_format>, intrinsics/NAME.json."""
    root = Path(root)
    for sub in ('rgb', 'depth', 'intrinsics'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(root / 'rgb' / f'{name}.png'), np.ascontiguousarray(sample.rgb[..., ::-1])):
        raise OSError(f'could not write {root / "rgb" / name}.png')
    depth = np.where(sample.mask & np.isfinite(sample.depth), sample.depth, np.nan).astype(np.float32)
    if depth_format == 'npy':
        np.save(root / 'depth' / f'{name}.npy', depth)
    elif depth_format == 'png':
        mm = np.round(np.nan_to_num(depth, nan=0.0) * 1000.0)
        mm[(mm > 65535) | (mm < 0)] = 0   # beyond MM_MAX_M cannot be stored: invalid
        cv2.imwrite(str(root / 'depth' / f'{name}.png'), mm.astype(np.uint16))
    elif depth_format == 'exr':
        if not exr_supported():
            raise BadInputError('depth_format: this OpenCV build cannot write .exr; use npy or png')
        cv2.imwrite(str(root / 'depth' / f'{name}.exr'), depth)
    else:
        raise BadInputError(f'depth_format must be npy, png or exr, got {depth_format!r}')
    (root / 'intrinsics' / f'{name}.json').write_text(json.dumps(intrinsics_dict(sample.intrinsics)))


def write_folder(samples: Iterable[Sample], out_dir, depth_format: str = 'npy', names: Iterable[str] | None = None,
                 progress: bool = False) -> list[str]:
    """Write Samples in the folder format (names default to 000000, 000001, ...); meta.json records whether every
    sample is metric. Returns the names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, metric = [], True
    name_iter = iter(names) if names is not None else None
    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, desc='write', unit='frame')
    for i, s in enumerate(samples):
        name = next(name_iter) if name_iter is not None else f'{i:06d}'
        write_sample(s, out, name, depth_format)
        written.append(name)
        metric = metric and bool(s.metric)
    (out / 'meta.json').write_text(json.dumps({'metric': metric}))
    return written
