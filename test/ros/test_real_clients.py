"""What real cameras and image_transport send, apart from the node's own behaviour.

Real sensor_msgs messages (CompressedImage, Image, CameraInfo) as compressed_image_transport and camera drivers fill
them; real OpenCV codecs; the real `mgeo bench` command. The node's side is in test_node_real_clients.py.
"""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from png_files import huge_png_header, png_bytes
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mgeo_ros.errors import BadInputError, ImageDecodeError, ImageTooLargeError
from mgeo_ros.image_header import read_header
from mgeo_ros.native_stderr import claim_stderr
from mgeo_ros.ros import convert as C

pytestmark = pytest.mark.ros_runtime  # torch-free: also runs in the Jazzy venv (make test-jazzy)

W, H = 64, 48


def _rgb() -> np.ndarray:
    """An asymmetric colour picture: red left, blue right, so a channel swap cannot go unnoticed."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([255 - x * 255 // W, y * 255 // H, x * 255 // W], -1).astype(np.uint8)


# ---- compressed format strings (compressed_image_transport) ---------------------------------------------------------
def _compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


@pytest.mark.parametrize('fmt, stored', [
    ('rgb8; png compressed rgb8', 'rgb'),      # stored as it came: the decoded bytes are RGB
    ('rgb8; png compressed bgr8', 'bgr'),      # converted to BGR before encoding
    ('rgb8; jpeg compressed bgr8', 'bgr'),
    ('bgr8; jpeg compressed bgr8', 'bgr'),
    ('bgr8; png compressed rgb8', 'rgb'),      # the subscriber turns RGB bytes into bgr8: the bytes are RGB
    ('jpeg', 'bgr'),                           # old format string: an ordinary file
    ('', 'bgr'),
])
def test_compressed_colour_order_follows_the_format_string(fmt, stored):
    rgb = _rgb()
    ext = '.jpg' if 'jpeg' in fmt else '.png'
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if stored == 'bgr' else rgb  # what the publisher handed imencode
    out = C.compressed_to_rgb8(_compressed(fmt, cv2.imencode(ext, pixels, [cv2.IMWRITE_JPEG_QUALITY, 98])[1]))
    tolerance = 6 if ext == '.jpg' else 0
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= tolerance
    assert out[:, :8, 0].mean() > 200 and out[:, :8, 2].mean() < 40  # red stays on the left


def test_mono16_png_keeps_16_bits_and_is_scaled_like_raw_mono16():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 4096, (H, W)).astype(np.uint16)  # a 12-bit camera in a 16-bit container
    gray[0, 0] = 4095
    ok, png = cv2.imencode('.png', gray)
    assert ok
    from_png = C.compressed_to_rgb8(_compressed('mono16; png compressed ', png))
    from_raw = C.image_to_rgb8(C.numpy_to_image(gray, 'mono16'))
    np.testing.assert_array_equal(from_png, from_raw)
    assert len(np.unique(from_png[..., 0])) > 200  # the low byte matters: 12 bits of detail, not 16 levels


def test_16uc1_png_is_scaled_like_raw_16uc1():
    depth_mm = np.arange(W * H, dtype=np.uint16).reshape(H, W) * 3
    png = cv2.imencode('.png', depth_mm)[1]
    np.testing.assert_array_equal(C.compressed_to_rgb8(_compressed('16UC1; png compressed ', png)),
                                  C.image_to_rgb8(C.numpy_to_image(depth_mm, '16UC1')))


# ---- size limit before decoding --------------------------------------------------------------------------------------
def test_headers_give_the_size_of_real_files():
    for w, h in ((64, 48), (641, 17), (3, 1000)):
        img = np.zeros((h, w, 3), np.uint8)
        for ext, kind in (('.png', 'png'), ('.jpg', 'jpeg')):
            header = read_header(cv2.imencode(ext, img)[1].tobytes())
            assert (header.kind, header.width, header.height, header.problem) == (kind, w, h, '')
    assert read_header(b'GIF89a....') is None
    png = cv2.imencode('.png', np.zeros((48, 64), np.uint8))[1].tobytes()
    assert 'IEND' in read_header(png[:-12]).problem or 'cut short' in read_header(png[:-12]).problem
    jpeg = cv2.imencode('.jpg', np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    assert 'truncated' in read_header(jpeg[:-40]).problem


def test_oversized_images_are_refused_by_their_own_reason():
    msg = _compressed('rgb8; png compressed bgr8', huge_png_header())
    with pytest.raises(ImageTooLargeError, match='40000x40000') as caught:
        C.compressed_to_rgb8(msg, max_pixels=4096 * 2160)
    assert caught.value.reason == 'image_too_large'
    raw = Image(height=5000, width=5000, encoding='rgb8', step=15000)  # no data needed: refused from the fields
    with pytest.raises(ImageTooLargeError):
        C.image_to_rgb8(raw, max_pixels=4096 * 2160)
    small = _compressed('png', cv2.imencode('.png', _rgb())[1])
    assert C.compressed_to_rgb8(small, max_pixels=W * H).shape == (H, W, 3)


def test_a_61_kib_png_of_8000x8000_costs_no_memory():
    """Decoding it would take 8000 x 8000 x 3 bytes (192 MB) at least; refused from the header it costs nothing."""
    png = png_bytes(8000, 8000)
    assert len(png) < 70 * 1024 and read_header(png).width == 8000
    script = (
        'import resource, sys\n'
        'from sensor_msgs.msg import CompressedImage\n'
        'from mgeo_ros.image_codec import compressed_to_rgb8\n'
        'from mgeo_ros.errors import ImageTooLargeError\n'
        'data = sys.stdin.buffer.read()\n'
        'msg = CompressedImage(format="mono8; png compressed ", data=data)\n'
        'before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'try:\n'
        '    compressed_to_rgb8(msg, max_pixels=4096 * 2160)\n'
        '    print("decoded")\n'
        'except ImageTooLargeError as exc:\n'
        '    print(exc.reason)\n'
        'print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n')
    done = subprocess.run([sys.executable, '-c', script], input=png, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    outcome, grown_mib = done.stdout.decode().split()
    assert outcome == 'image_too_large'
    assert float(grown_mib) < 16, f'peak memory grew by {grown_mib} MiB'


# ---- decoder errors: one reason, nothing on stderr -------------------------------------------------------------------
def test_damaged_png_is_one_reason_and_libpng_stays_off_stderr(capfd):
    png = bytearray(cv2.imencode('.png', _rgb())[1].tobytes())
    png[len(png) // 2] ^= 0xFF  # a bit flip in the pixel data
    with pytest.raises(ImageDecodeError, match='libpng') as caught:  # carrying what libpng said
        C.compressed_to_rgb8(_compressed('rgb8; png compressed bgr8', bytes(png)))
    assert caught.value.reason == 'image_decode'
    truncated = cv2.imencode('.png', _rgb())[1].tobytes()[:300]
    with pytest.raises(ImageDecodeError):
        C.compressed_to_rgb8(_compressed('png', truncated))
    with pytest.raises(BadInputError):
        C.compressed_to_rgb8(_compressed('jpeg', b'not an image at all'))
    assert 'libpng' not in capfd.readouterr().err


def test_jpeg_decoder_warnings_go_to_the_caller_not_stderr(capfd):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3)).astype(np.uint8)
    jpeg = bytearray(cv2.imencode('.jpg', noise)[1].tobytes())
    jpeg[len(jpeg) // 2] ^= 0xFF  # damaged entropy-coded data: libjpeg warns and still decodes
    jpeg[len(jpeg) // 2 + 1] ^= 0xFF
    warnings: list[str] = []
    try:
        C.compressed_to_rgb8(_compressed('jpeg', bytes(jpeg)), warn=warnings.append)
    except ImageDecodeError as exc:  # some flips make the file undecodable: the reason carries libjpeg's words
        warnings.append(str(exc))
    assert warnings and 'JPEG' in warnings[0]
    assert 'JPEG' not in capfd.readouterr().err


def test_claimed_stderr_passes_other_lines_on(capfd):
    import os

    with claim_stderr(lambda line: line.startswith('libpng')) as claimed:
        os.write(2, b'libpng warning: iCCP: known incorrect sRGB profile\n')
        os.write(2, b'[WARN] another thread logging meanwhile\n')
    assert claimed == ['libpng warning: iCCP: known incorrect sRGB profile']
    err = capfd.readouterr().err
    assert 'another thread logging meanwhile' in err and 'libpng' not in err


def test_decoder_claims_codec_lines_but_not_another_threads_ros_log(capfd):
    """A decode claims what libpng, libjpeg and OpenCV print; a ROS log line written meanwhile by another thread (here
    another camera's decoder warning, which names JPEG) reaches stderr instead of being taken for this frame's."""
    import os

    from mgeo_ros.image_codec import _is_decoder_line

    ros_line = '[WARN] [1764574000.123456789] [mgeo_depth_node.cam_b]: decoder warnings for a jpeg frame\n'
    codec_lines = ['libpng warning: iCCP: known incorrect sRGB profile\n',
                   'Corrupt JPEG data: 12 extraneous bytes before marker 0xd9\n',
                   '[ WARN:0@0.123] global loadsave.cpp:1063 imdecode_ imdecode_(\'PNG\'): can\'t read data\n']
    with claim_stderr(_is_decoder_line) as claimed:
        for line in [ros_line] + codec_lines:
            os.write(2, line.encode())
    assert claimed == [line.strip() for line in codec_lines]
    assert capfd.readouterr().err == ros_line


def test_claim_without_a_sink_runs_the_block_and_keeps_no_descriptor(monkeypatch, capfd):
    """Out of file descriptors for the in-memory sink: the block still runs, its lines reach stderr unclaimed, and
    the duplicate of fd 2 taken before is closed again."""
    import os

    from mgeo_ros import native_stderr

    def no_sink() -> int:
        raise OSError(24, 'Too many open files')

    monkeypatch.setattr(native_stderr, '_memory_file', no_sink)
    before = set(os.listdir('/proc/self/fd'))
    ran = False
    with claim_stderr(lambda line: True) as claimed:
        os.write(2, b'libpng warning: written while unclaimed\n')
        ran = True
    assert ran and claimed == []
    assert set(os.listdir('/proc/self/fd')) == before
    assert 'written while unclaimed' in capfd.readouterr().err


# ---- CameraInfo: P for a rectified image, K otherwise; rectify -------------------------------------------------------
def _calibrated(d=(-0.28, 0.09, 0.0005, -0.0004, 0.0), p_focal=380.0) -> CameraInfo:
    """A calibrated camera as camera_calibration writes it: K and D of the raw image, P of the rectified one."""
    info = CameraInfo(width=320, height=240, distortion_model='plumb_bob')
    info.d = list(d)
    info.k = [420.0, 0.0, 161.0, 0.0, 418.0, 119.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [p_focal, 0.0, 158.0, 0.0, 0.0, p_focal - 2, 121.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_a_rectified_image_is_described_by_p_else_k():
    info = _calibrated()
    intr, source = C.camera_info_intrinsics(info)
    assert source == 'P' and (intr.fx, intr.fy, intr.cx, intr.cy) == (380.0, 378.0, 158.0, 121.0)
    assert C.camera_info_to_intrinsics(info) == intr
    info.p = [0.0] * 12  # a driver without calibration: only K
    intr, source = C.camera_info_intrinsics(info)
    assert source == 'K' and (intr.fx, intr.fy, intr.cx, intr.cy) == (420.0, 418.0, 161.0, 119.0)
    with pytest.raises(BadInputError, match='camera_info.p'):
        C.camera_info_intrinsics(info, 'P')


def test_unrectified_looking_camera_info():
    from mgeo_ros.ros.rectify import looks_unrectified

    assert not looks_unrectified(_calibrated())  # D != 0 with its own P: a proper calibration
    info = _calibrated()
    info.p = list(info.k[:3]) + [0.0] + list(info.k[3:6]) + [0.0] + list(info.k[6:]) + [0.0]
    assert looks_unrectified(info)  # D != 0 and P = K: image_raw described as if rectified
    info.d = [0.0] * 5
    assert not looks_unrectified(info)


def test_rectify_undoes_the_distortion_and_caches_its_maps():
    """Make a raw image by distorting a known rectified one with OpenCV's camera model, then rectify it back."""
    from mgeo_ros.ros.rectify import Rectifier

    info = _calibrated()
    k, d = np.reshape(info.k, (3, 3)), np.asarray(info.d)
    p = np.reshape(info.p, (3, 4))[:, :3]
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    truth = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 7), 128 + 60 * np.sin((x + y) / 13)],
                     -1).astype(np.uint8)
    # raw pixel (u, v) sees the ray that the rectified image shows at undistortPoints(u, v) projected by P
    raw_pixels = np.stack([x.ravel(), y.ravel()], -1).reshape(-1, 1, 2)
    rect = cv2.undistortPoints(raw_pixels, k, d, R=np.eye(3), P=p).reshape(240, 320, 2)
    raw = cv2.remap(truth, rect[..., 0], rect[..., 1], cv2.INTER_LINEAR)
    rectifier = Rectifier()
    back = rectifier(raw, info)
    inner = (slice(60, 180), slice(80, 240))
    err = np.abs(back[inner].astype(int) - truth[inner].astype(int)).mean()
    assert err < 6, err  # bilinear twice
    assert np.abs(raw[inner].astype(int) - truth[inner].astype(int)).mean() > 4 * err  # it was distorted
    rectifier(raw, info)
    assert rectifier.builds == 1
    half = rectifier(cv2.resize(raw, (160, 120)), info)  # a resized stream: maps for the CameraInfo rescaled
    assert half.shape == (120, 160, 3) and rectifier.builds == 2
    info.distortion_model = 'kannala_brandt_custom'
    with pytest.raises(BadInputError, match='distortion_model'):
        rectifier(raw, info)


# ---- mgeo bench on a model it cannot read ---------------------------------------------------------------------------
def test_bench_on_an_unreadable_model_fails_with_the_reason(tmp_path):
    bad = tmp_path / 'broken.onnx'
    bad.write_bytes(b'\x08\x07' + bytes(range(256)) * 8)
    done = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', 'bench', str(bad), '--backend', 'onnxruntime',
                           '--runs', '1', '--warmup', '0'], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stdout
    assert 'nothing measured' in done.stderr and 'onnxruntime' in done.stderr and 'broken.onnx' in done.stderr
