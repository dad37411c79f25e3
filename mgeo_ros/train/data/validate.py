"""Check a folder dataset: every bad or missing file is reported by name; checking never stops at the first."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mgeo_ros.errors import BadInputError
from mgeo_ros.train.data.folder import (
    DEPTH_EXTS,
    RGB_EXTS,
    intrinsics_path,
    parse_intrinsics,
    read_depth,
    read_meta,
    read_rgb,
)


def check_folder(root) -> tuple[list[str], int]:
    """Return (problems, frames checked). Each problem is one line that starts with the offending path."""
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        return [f'{root}: not a directory'], 0
    rgb_dir, depth_dir = root / 'rgb', root / 'depth'
    for d in (rgb_dir, depth_dir):
        if not d.is_dir():
            problems.append(f'{d}: missing folder')
    try:
        read_meta(root)
    except BadInputError as e:
        problems.append(str(e))
    rgb_files = _by_stem(rgb_dir, RGB_EXTS, problems)
    depth_files = _by_stem(depth_dir, DEPTH_EXTS, problems)
    if rgb_dir.is_dir() and not rgb_files:
        problems.append(f'{rgb_dir}: no images (.png/.jpg)')
    folder_intr = None
    if (root / 'intrinsics.json').is_file():
        try:
            folder_intr = parse_intrinsics(root / 'intrinsics.json')
        except BadInputError as e:
            problems.append(str(e))
    for name in sorted(set(depth_files) - set(rgb_files)):
        problems.append(f'{depth_files[name]}: depth without a matching image in rgb/')
    if (root / 'intrinsics').is_dir():
        for p in sorted((root / 'intrinsics').glob('*.json')):
            if p.stem not in rgb_files:
                problems.append(f'{p}: intrinsics without a matching image in rgb/')
    for name in sorted(rgb_files):
        _check_frame(root, name, rgb_files[name], depth_files.get(name), folder_intr, problems)
    splits = root / 'splits'
    if splits.is_dir():
        for p in sorted(splits.glob('*.txt')):
            names = [line.strip() for line in p.read_text(errors='replace').splitlines() if line.strip()]
            for n in names:
                if n not in rgb_files:
                    problems.append(f'{p}: names {n!r}, which has no image in rgb/')
    return problems, len(rgb_files)


def _by_stem(folder: Path, exts, problems: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in exts:
            problems.append(f'{p}: unexpected file (expected one of {", ".join(exts)})')
            continue
        if p.stem in out:
            problems.append(f'{p}: duplicate of {out[p.stem].name}')
            continue
        out[p.stem] = p
    return out


def _check_frame(root: Path, name: str, rgb_path: Path, depth_path: Path | None, folder_intr, problems) -> None:
    size = None
    try:
        rgb = read_rgb(rgb_path)
        size = (rgb.shape[1], rgb.shape[0])
    except BadInputError as e:
        problems.append(str(e))
    if depth_path is None:
        problems.append(f'{root / "depth" / name}.*: missing depth for {rgb_path.name}')
    else:
        try:
            depth = read_depth(depth_path)
            if size is not None and (depth.shape[1], depth.shape[0]) != size:
                problems.append(f'{depth_path}: size {depth.shape[1]}x{depth.shape[0]} does not match the image '
                                f'{size[0]}x{size[1]}')
            if not np.isfinite(depth).any():
                problems.append(f'{depth_path}: no valid depth pixel')
        except BadInputError as e:
            problems.append(str(e))
    ip = intrinsics_path(root, name)
    if ip is None:
        problems.append(f'{root / "intrinsics" / name}.json: missing intrinsics (and no intrinsics.json)')
        return
    if ip.name == 'intrinsics.json':
        intr = folder_intr   # already parsed (and reported) once
    else:
        try:
            intr = parse_intrinsics(ip)
        except BadInputError as e:
            problems.append(str(e))
            return
    if intr is not None and size is not None and (intr.width, intr.height) != size:
        problems.append(f'{ip}: intrinsics are for {intr.width}x{intr.height} but {rgb_path.name} is '
                        f'{size[0]}x{size[1]}')
