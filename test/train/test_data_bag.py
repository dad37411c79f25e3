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


def _depth_bag(path, samples, depth_messages):
    """A bag of the samples' colour and camera_info, with the given depth messages (one per sample, or None) on
    /camera/depth/image_raw/compressedDepth."""
    from rosbags.rosbag2 import Writer

    from mgeo_ros.train.data.bag_writer import COMPRESSED, IMAGE, INFO, TYPESTORE, camera_info_msg, image_msg
    with Writer(path, version=8) as writer:
        c_img = writer.add_connection('/camera/image_raw', IMAGE, typestore=TYPESTORE)
        c_depth = writer.add_connection('/camera/depth/image_raw/compressedDepth', COMPRESSED, typestore=TYPESTORE)
        c_info = writer.add_connection('/camera/camera_info', INFO, typestore=TYPESTORE)
        for i, (s, depth) in enumerate(zip(samples, depth_messages)):
            stamp = 1_700_000_000_000_000_000 + i * 100_000_000
            writer.write(c_info, stamp, TYPESTORE.serialize_cdr(camera_info_msg(s.intrinsics, stamp, 'cam'), INFO))
            writer.write(c_img, stamp, TYPESTORE.serialize_cdr(image_msg(s.rgb, 'rgb8', stamp, 'cam'), IMAGE))
            if depth is not None:
                fmt, data = depth
                t = TYPESTORE.types
                header = t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](
                    sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id='cam')
                msg = t[COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, np.uint8))
                writer.write(c_depth, stamp, TYPESTORE.serialize_cdr(msg, COMPRESSED))
    return path


@pytest.mark.parametrize('encoding,fmt', [('32FC1', 'png'), ('32FC1', 'rvl'), ('16UC1', 'png'), ('16UC1', 'rvl'),
                                          ('32FC1', 'bare')])
def test_compressed_depth_ground_truth(tmp_path, encoding, fmt):
    from mgeo_ros.depth_codec import depth_step, encode_depth
    ss = _samples(3)
    messages = []
    for s in ss:
        f, data = encode_depth(s.depth, encoding, 'png' if fmt == 'bare' else fmt, depth_max=25.0)
        messages.append(('32FC1; compressedDepth' if fmt == 'bare' else f, data))
    ds = BagDataset(_depth_bag(tmp_path / 'bag', ss, messages))
    assert ds.depth_topic.endswith('/compressedDepth') and len(ds) == 3     # guessed, every frame read
    for s, ref in zip((ds[i] for i in range(3)), ss):
        assert np.array_equal(s.mask, ref.mask)                            # NaN stays NaN, nothing else does
        err = np.abs(s.depth - ref.depth)[ref.mask]
        # 16UC1: rounding to a millimetre; 32FC1: one inverse-depth step (float32: 1e-5 relative)
        bound = 0.0005 + 1e-6 if encoding == '16UC1' else depth_step(ref.depth[ref.mask], 25.0) * (1 + 1e-5)
        assert np.all(err <= bound)


def test_malformed_compressed_depth_is_refused_and_counted(tmp_path, capsys):
    from mgeo_ros.depth_codec import encode_depth
    ss = _samples(5)
    good = [encode_depth(s.depth, '32FC1', 'rvl', depth_max=25.0) for s in ss]
    messages = [good[0], (good[1][0], good[1][1][:-8]), (good[2][0], good[2][1][:9]), good[3],
                ('32FC1; compressedDepth zstd', good[4][1])]
    bag = _depth_bag(tmp_path / 'bag', ss, messages)
    ds = BagDataset(bag)
    assert len(ds) == 2 and ds.report.paired == 2
    assert ds.report.refused_depths == {'rvl_underfill': 1, 'short_header': 1, 'unknown_format': 1}
    assert 'refused' in str(ds.report) and any('refused as malformed' in n for n in ds.report.notes)
    assert np.array_equal(ds[1].mask, ss[3].mask)                          # the good frames keep their own depth
    assert mgeo_main(['data', 'extract', str(bag), '--out', str(tmp_path / 'out')]) == 0
    assert '3 depth frame(s) refused (rvl_underfill: 1, short_header: 1, unknown_format: 1)' in capsys.readouterr().out
    broken = _depth_bag(tmp_path / 'broken', ss[:2], [messages[1], messages[2]])
    with pytest.raises(BadInputError, match='every one of the 2 depth frame'):
        BagDataset(broken)
