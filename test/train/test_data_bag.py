"""Rosbag dataset: 16UC1 and 32FC1 depth, raw and compressed colour, sqlite3 and mcap; pairing and extraction."""
import numpy as np
import pytest

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data import BagDataset, FolderDataset, Sample, write_bag
from mgeo_ros.train.data.bag import pair_stamps
from mgeo_ros.train.data.validate import check_folder


def _samples(n=6, w=32, h=24):
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        depth = rng.uniform(0.5, 20.0, (h, w)).astype(np.float32)
        depth[0, i] = np.nan
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * i)], -1).astype(np.uint8)  # jpeg-friendly
        out.append(Sample(rgb, depth,
                          Intrinsics(30.0 + i, 30.0 + i, 15.5, 11.5, w, h), np.isfinite(depth), True, str(i)))
    return out


@pytest.mark.parametrize('storage,encoding,compressed', [('sqlite3', '16UC1', False), ('mcap', '32FC1', False),
                                                         ('sqlite3', '32FC1', True), ('mcap', '16UC1', True)])
def test_pairing_decoding_and_unpaired_counts(tmp_path, storage, encoding, compressed):
    ss = _samples()
    bag = write_bag(ss, tmp_path / 'bag', storage=storage, depth_encoding=encoding, compressed=compressed,
                    skip_depth=[1], skip_image=[4], depth_offset_ns=5_000_000)
    ds = BagDataset(bag, tolerance_s=0.02)
    assert ds.image_topic.endswith('/compressed') == compressed
    assert (ds.report.paired, ds.report.unpaired_images, ds.report.unpaired_depths) == (4, 1, 1)
    kept = [0, 2, 3, 5]
    for k, i in enumerate(kept):
        s, ref = ds[k], ss[i]
        assert s.intrinsics == ref.intrinsics            # the camera_info of that frame, not another one
        assert np.array_equal(s.mask, ref.mask)
        tol = 0.0005 + 1e-6 if encoding == '16UC1' else 0.0
        assert np.nanmax(np.abs(s.depth - ref.depth)) <= tol
        if compressed:
            assert np.abs(s.rgb.astype(int) - ref.rgb).mean() < 4   # jpeg: lossy but this frame, not another
        else:
            assert np.array_equal(s.rgb, ref.rgb)


def test_tolerance_excludes_far_stamps(tmp_path):
    bag = write_bag(_samples(4), tmp_path / 'bag', depth_offset_ns=30_000_000)
    with pytest.raises(BadInputError, match=r'no colour/depth pairs within 0.02 s \(4 image'):
        BagDataset(bag, tolerance_s=0.02)                       # an empty dataset is an error that says why
    ds = BagDataset(bag, tolerance_s=0.04)
    assert len(ds) == 4 and ds.report.unpaired_images == 0


def test_pair_stamps_is_one_to_one_and_closest():
    pairs = pair_stamps([0, 10, 20, 100], [9, 12, 200], tolerance_ns=5)
    assert pairs == [(1, 0)]
    assert pair_stamps([0, 10], [11, 12], 5) == [(1, 0)]
    assert pair_stamps([10, 11], [11], 5) == [(1, 0)]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_extract_writes_folder(tmp_path, storage, capsys):
    ss = _samples()
    bag = write_bag(ss, tmp_path / 'bag', storage=storage, depth_encoding='16UC1', skip_depth=[2])
    out = tmp_path / 'out'
    rc = mgeo_main(['data', 'extract', str(bag), '--out', str(out), '--image-topic', '/camera/image_raw',
                    '--depth-topic', '/camera/depth/image_raw', '--info-topic', '/camera/camera_info'])
    assert rc == 0
    text = capsys.readouterr().out
    assert '5 paired' in text and '1 image(s)' in text and '0 depth frame(s) unpaired' in text
    assert check_folder(out) == ([], 5)
    ds = FolderDataset(out)
    assert len(ds) == 5 and ds[2].intrinsics == ss[3].intrinsics
    assert np.nanmax(np.abs(ds[2].depth - ss[3].depth)) <= 0.0005 + 1e-6
    # topics guessed when not given
    assert mgeo_main(['data', 'extract', str(bag), '--out', str(tmp_path / 'out2')]) == 0
    assert len(FolderDataset(tmp_path / 'out2')) == 5


def test_distortion_is_reported(tmp_path):
    clean = BagDataset(write_bag(_samples(2), tmp_path / 'a'))
    assert clean.report.notes == []
    bent = BagDataset(write_bag(_samples(2), tmp_path / 'b', distortion=(0.1, -0.02, 0.0, 0.0, 0.0)))
    assert len(bent) == 2 and any('distortion' in n for n in bent.report.notes)
