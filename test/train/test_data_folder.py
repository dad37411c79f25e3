"""Folder dataset: round trips (png mm, npy, exr where OpenCV has it) and the validator reporting every problem."""
import json

import cv2
import numpy as np
import pytest

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data import FolderDataset, Sample, write_folder
from mgeo_ros.train.data.folder import exr_supported, read_depth, write_sample
from mgeo_ros.train.data.validate import check_folder


def _sample(seed, w=40, h=30, metric=True):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 60.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = np.nan
    intr = Intrinsics(rng.uniform(30, 60), rng.uniform(30, 60), w / 2 + rng.uniform(-2, 2), h / 2, w, h)
    return Sample(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth, intr, np.isfinite(depth), metric,
                  f's{seed}')


@pytest.mark.parametrize('fmt', ['npy', 'png'])
def test_round_trip(tmp_path, fmt):
    samples = [_sample(i) for i in range(3)]
    names = write_folder(samples, tmp_path, depth_format=fmt)
    ds = FolderDataset(tmp_path)
    assert len(ds) == 3 and ds.names == names
    for s, r in zip(samples, ds):
        assert np.array_equal(r.rgb, s.rgb)
        assert r.intrinsics == s.intrinsics
        assert np.array_equal(r.mask, s.mask) and np.array_equal(np.isnan(r.depth), ~s.mask)
        tol = 0.0005 + 1e-6 if fmt == 'png' else 0.0
        assert np.nanmax(np.abs(r.depth - s.depth)) <= tol
        assert r.metric


def test_exr_round_trip_or_clear_refusal(tmp_path):
    s = _sample(7)
    if exr_supported():
        write_sample(s, tmp_path, 'a', 'exr')
        d = read_depth(tmp_path / 'depth' / 'a.exr')
        assert np.array_equal(d, s.depth, equal_nan=True)
    else:
        with pytest.raises(BadInputError, match='exr'):
            write_sample(s, tmp_path, 'a', 'exr')
        (tmp_path / 'b.exr').write_bytes(b'v/1\x01junk')
        with pytest.raises(BadInputError, match='exr'):
            read_depth(tmp_path / 'b.exr')


def test_splits_folder_intrinsics_and_meta(tmp_path):
    samples = [_sample(i) for i in range(4)]
    write_folder([Sample(s.rgb, s.depth, samples[0].intrinsics, s.mask, False) for s in samples], tmp_path)
    for p in (tmp_path / 'intrinsics').iterdir():
        p.unlink()
    (tmp_path / 'intrinsics').rmdir()
    i0 = samples[0].intrinsics
    (tmp_path / 'intrinsics.json').write_text(json.dumps(dict(fx=i0.fx, fy=i0.fy, cx=i0.cx, cy=i0.cy, width=40,
                                                              height=30)))
    (tmp_path / 'splits').mkdir()
    (tmp_path / 'splits' / 'val.txt').write_text('000001\n000003\n')
    assert json.loads((tmp_path / 'meta.json').read_text()) == {'metric': False}
    ds = FolderDataset(tmp_path, split='val')
    assert ds.names == ['000001', '000003'] and not ds[0].metric and ds[1].intrinsics == i0
    assert check_folder(tmp_path) == ([], 4)


def test_validator_reports_every_problem(tmp_path, capsys):
    write_folder([_sample(i) for i in range(10)], tmp_path, depth_format='png')
    (tmp_path / 'depth' / '000000.png').unlink()                                            # missing depth
    (tmp_path / 'rgb' / '000001.png').write_bytes(b'not a png at all')                     # unreadable image
    cv2.imwrite(str(tmp_path / 'depth' / '000002.png'), np.ones((20, 40), np.uint16))     # size mismatch
    (tmp_path / 'intrinsics' / '000003.json').write_text('{"fx": 1,')                      # bad json
    (tmp_path / 'intrinsics' / '000004.json').write_text('{"fx": 10, "fy": 10, "cx": 5}')  # missing keys
    (tmp_path / 'intrinsics' / '000005.json').write_text(
        '{"fx": -3, "fy": 10, "cx": 5, "cy": 5, "width": 40, "height": 30}')               # bad focal
    cv2.imwrite(str(tmp_path / 'depth' / '000006.png'), np.ones((30, 40), np.uint8))      # 8-bit depth
    (tmp_path / 'intrinsics' / '000007.json').unlink()                                      # missing intrinsics
    (tmp_path / 'intrinsics' / '000008.json').write_text(
        '{"fx": 30, "fy": 30, "cx": 5, "cy": 5, "width": 64, "height": 48}')               # wrong size
    cv2.imwrite(str(tmp_path / 'depth' / '000009.png'), np.zeros((30, 40), np.uint16))    # nothing valid
    cv2.imwrite(str(tmp_path / 'depth' / 'orphan.png'), np.ones((30, 40), np.uint16))     # depth without image
    (tmp_path / 'splits').mkdir()
    (tmp_path / 'splits' / 'train.txt').write_text('000002\nghost\n')                       # unknown name
    problems, frames = check_folder(tmp_path)
    assert frames == 10
    expect = {'000000': 'missing depth', '000001.png': 'unreadable', '000002.png': 'does not match',
              '000003.json': 'JSON', '000004.json': 'missing key', '000005.json': 'fx', '000006.png': '16-bit',
              '000007.json': 'missing intrinsics', '000008.json': '64x48', '000009.png': 'no valid',
              'orphan.png': 'without a matching image', 'train.txt': 'ghost'}
    for name, words in expect.items():
        assert any(name in p and words in p for p in problems), (name, problems)
    assert len(problems) == len(expect), problems
    assert mgeo_main(['data', 'check', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert all(name in out for name in expect)


def test_cli_check_clean_folder(tmp_path):
    write_folder([_sample(0)], tmp_path)
    assert mgeo_main(['data', 'check', str(tmp_path)]) == 0
    assert mgeo_main(['data', 'check', str(tmp_path / 'nope')]) == 1
