"""rosbags round trips (sqlite3 and mcap) of Image, CameraInfo and PointCloud2 read back through rclpy, and
`mgeo replay` playing a bag into another process while recording the result."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from node_harness import stop_node
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from mgeo_ros.errors import BadInputError
from mgeo_ros.geometry import Intrinsics, unproject
from mgeo_ros.ros import cloud, convert
from mgeo_ros.ros.bag_player import message_class, parse_remaps

pytestmark = pytest.mark.ros_runtime  # torch-free: also runs in the Jazzy venv (make test-jazzy)

TS = get_typestore(Stores.ROS2_KILTED)
STORAGES = {'sqlite3': (StoragePlugin.SQLITE3, 8), 'mcap': (StoragePlugin.MCAP, 9)}
W, H = 64, 48
INTR = Intrinsics(fx=60.0, fy=61.0, cx=31.5, cy=23.0, width=W, height=H)
REPO = Path(__file__).resolve().parents[2]


def _frame(i: int):
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 4.0, (H, W)).astype(np.float32)
    depth[i % H, :] = np.nan
    return rgb, unproject(depth, INTR)


def _stamp_ns(i: int) -> int:
    return 1_700_000_000_000_000_000 + i * 50_000_000  # 20 Hz


def _ts_header(i: int):
    ns = _stamp_ns(i)
    time_cls, header_cls = TS.types['builtin_interfaces/msg/Time'], TS.types['std_msgs/msg/Header']
    return header_cls(stamp=time_cls(sec=ns // 10**9, nanosec=ns % 10**9), frame_id='cam')


def _typestore_messages(i: int) -> dict:
    """The three messages built with rosbags' own classes (no rclpy involved in writing)."""
    rgb, points = _frame(i)
    header = _ts_header(i)
    image = TS.types['sensor_msgs/msg/Image'](header=header, height=H, width=W, encoding='rgb8', is_bigendian=0,
                                              step=W * 3, data=rgb.reshape(-1))
    roi = TS.types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    info = TS.types['sensor_msgs/msg/CameraInfo'](
        header=header, height=H, width=W, distortion_model='plumb_bob', d=np.zeros(5), k=INTR.K.reshape(-1),
        r=np.eye(3).reshape(-1), p=np.hstack([INTR.K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0,
        roi=roi)
    field_cls = TS.types['sensor_msgs/msg/PointField']
    fields = [field_cls(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
              for f in cloud.cloud_fields(True)]
    packed = cloud.fill_organized(np.empty((H, W, 4), np.float32), points, rgb)
    points_msg = TS.types['sensor_msgs/msg/PointCloud2'](
        header=header, height=H, width=W, fields=fields, is_bigendian=False, point_step=16, row_step=16 * W,
        data=packed.reshape(-1).view(np.uint8), is_dense=False)
    return {'/cam/image': image, '/cam/camera_info': info, '/cam/points': points_msg}


def _check_rclpy_messages(i: int, messages: dict) -> None:
    rgb, points = _frame(i)
    for msg in messages.values():
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == _stamp_ns(i)
        assert msg.header.frame_id == 'cam'
    np.testing.assert_array_equal(convert.image_to_rgb8(messages['/cam/image']), rgb)
    assert convert.camera_info_to_intrinsics(messages['/cam/camera_info']) == INTR
    back, back_rgb = convert.pointcloud2_to_numpy(messages['/cam/points'])
    np.testing.assert_array_equal(back, points)
    np.testing.assert_array_equal(back_rgb, rgb)


def write_bag(path: Path, storage: str, frames: int) -> None:
    plugin, version = STORAGES[storage]
    with Writer(path, version=version, storage_plugin=plugin) as writer:
        connections = {topic: writer.add_connection(topic, msg.__msgtype__, typestore=TS)
                       for topic, msg in _typestore_messages(0).items()}
        for i in range(frames):
            for topic, msg in _typestore_messages(i).items():
                writer.write(connections[topic], _stamp_ns(i), TS.serialize_cdr(msg, msg.__msgtype__))


@pytest.mark.parametrize('storage', sorted(STORAGES))
def test_rosbags_written_bag_reads_back_in_rclpy(tmp_path, storage):
    bag = tmp_path / 'bag'
    write_bag(bag, storage, frames=3)
    seen = {}
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            '/cam/image': 'sensor_msgs/msg/Image', '/cam/camera_info': 'sensor_msgs/msg/CameraInfo',
            '/cam/points': 'sensor_msgs/msg/PointCloud2'}
        for connection, stamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), message_class(connection.msgtype))
            index = (stamp - _stamp_ns(0)) // 50_000_000
            seen.setdefault(index, {})[connection.topic] = msg
    assert sorted(seen) == [0, 1, 2]
    for i, messages in seen.items():
        assert len(messages) == 3
        _check_rclpy_messages(i, messages)


@pytest.mark.parametrize('storage', sorted(STORAGES))
def test_rclpy_messages_written_raw_read_back_identically(tmp_path, storage):
    """The other direction: convert.* builds rclpy messages, their CDR goes into the bag, rosbags and rclpy agree."""
    rgb, points = _frame(5)
    header = Header(frame_id='cam')
    header.stamp.sec, header.stamp.nanosec = divmod(_stamp_ns(5), 10**9)
    messages = {'/cam/image': convert.numpy_to_image(rgb, 'rgb8', header),
                '/cam/camera_info': convert.intrinsics_to_camera_info(INTR, header),
                '/cam/points': convert.points_to_pointcloud2(points, header, rgb=rgb)}
    plugin, version = STORAGES[storage]
    bag = tmp_path / 'bag'
    written = {}  # CDR alignment padding from rclpy is not zeroed, so keep the exact bytes that went in
    with Writer(bag, version=version, storage_plugin=plugin) as writer:
        for topic, msg in messages.items():
            type_name = type(msg).__module__.split('.')[0] + '/msg/' + type(msg).__name__
            connection = writer.add_connection(topic, type_name, typestore=TS)
            written[topic] = serialize_message(msg)
            writer.write(connection, _stamp_ns(5), written[topic])
    back = {}
    with Reader(bag) as reader:
        for connection, _, raw in reader.messages():
            assert bytes(raw) == written[connection.topic]
            decoded = TS.deserialize_cdr(raw, connection.msgtype)  # rosbags reads what rclpy wrote
            assert decoded.header.frame_id == 'cam' and decoded.width == W
            back[connection.topic] = deserialize_message(bytes(raw), message_class(connection.msgtype))
    _check_rclpy_messages(5, back)


def test_message_class_and_remaps():
    assert message_class('sensor_msgs/msg/Image') is Image
    assert message_class('sensor_msgs/CameraInfo') is CameraInfo
    assert message_class('sensor_msgs/msg/PointCloud2') is PointCloud2
    with pytest.raises(BadInputError, match='not importable'):
        message_class('no_such_pkg/msg/Thing')
    assert parse_remaps(['/a:=/b', '/cam/image:=/x/image']) == {'/a': '/b', '/cam/image': '/x/image'}
    with pytest.raises(BadInputError, match='remap'):
        parse_remaps(['/a=/b'])


@pytest.mark.ros
@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_mgeo_replay_plays_into_another_process_and_records_back(tmp_path, ros_env, storage):
    """`mgeo replay` (a process) plays a bag into the echo child (another process) with remapped topics, waits for it
    to subscribe, and records both the played and the echoed topics into a new mcap bag: counts, stamps and
    content must match the source bag; receive times are paced by the bag's 20 Hz at --rate 0.5."""
    frames = 8
    bag = tmp_path / 'source'
    write_bag(bag, storage, frames)
    prefix = f'/rp{os.getpid()}{storage}'
    echo = Path(__file__).resolve().parents[1] / 'ros_echo_child.py'
    child = subprocess.Popen([sys.executable, str(echo), '--prefix', prefix,
                              '--timeout', '60'], env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    out = tmp_path / 'recorded'
    try:
        assert child.stdout.readline().strip() == 'ready', child.stderr.read()
        command = [sys.executable, '-m', 'mgeo_ros.cli', 'replay', str(bag), '--rate', '0.5', '--no-progress',
                   '--remap', f'/cam/image:={prefix}/in/image', '--remap', f'/cam/camera_info:={prefix}/in/camera_info',
                   '--remap', f'/cam/points:={prefix}/in/points', '--wait-subscribers', '1', '--wait-timeout', '20',
                   '--record', str(out), '--record-topics', f'{prefix}/out/image', f'{prefix}/out/camera_info',
                   f'{prefix}/out/points', f'{prefix}/in/image', '--linger', '1.5']
        result = subprocess.run(command, env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stop_node(child)
    assert f'played      {frames}  {prefix}/in/image' in result.stdout
    recorded: dict[str, list] = {}
    with Reader(out) as reader:
        assert (out / 'metadata.yaml').is_file() and any(p.suffix == '.mcap' for p in out.iterdir())
        for connection, stamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), message_class(connection.msgtype))
            recorded.setdefault(connection.topic.rsplit('/', 2)[-2] + '/' + connection.topic.rsplit('/', 1)[-1],
                                []).append((stamp, msg))
    assert {k: len(v) for k, v in recorded.items()} == {'out/image': frames, 'out/camera_info': frames,
                                                         'out/points': frames, 'in/image': frames}
    by_frame: dict[int, dict] = {}
    for key, items in recorded.items():
        for _, msg in items:
            index = (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec - _stamp_ns(0)) // 50_000_000
            by_frame.setdefault(int(index), {})[key] = msg
    assert sorted(by_frame) == list(range(frames))
    for i, msgs in by_frame.items():
        _check_rclpy_messages(i, {'/cam/image': msgs['out/image'], '/cam/camera_info': msgs['out/camera_info'],
                                  '/cam/points': msgs['out/points']})
        np.testing.assert_array_equal(convert.image_to_rgb8(msgs['in/image']), _frame(i)[0])
    receive = [stamp for stamp, _ in recorded['in/image']]
    assert receive == sorted(receive)
    span_s = (receive[-1] - receive[0]) * 1e-9
    expected_s = (frames - 1) * 0.05 / 0.5
    # paced by --rate 0.5: never faster than half the bag's pace (the player sleeps until each message is due; a late
    # first arrival on a loaded machine shortens the span by at most one frame), and not grossly slower (the wide
    # upper bound only catches a rate applied twice, whatever the machine's load)
    assert (frames - 2) * 0.05 / 0.5 <= span_s < 2 * expected_s + 2.0, span_s


@pytest.mark.ros
def test_mgeo_replay_times_out_without_subscribers(tmp_path, ros_env):
    bag = tmp_path / 'bag'
    write_bag(bag, 'mcap', frames=1)
    command = [sys.executable, '-m', 'mgeo_ros.cli', 'replay', str(bag), '--no-progress', '--remap',
               f'/cam/image:=/nobody{os.getpid()}/image', '--wait-subscribers', '1', '--wait-timeout', '0.5']
    result = subprocess.run(command, env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and 'subscriber' in result.stderr
    missing = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', 'replay', str(tmp_path / 'nothing')],
                             env=ros_env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and 'does not exist' in missing.stderr and 'Traceback' not in missing.stderr


@pytest.mark.ros
def test_bag_player_library_skips_uninstalled_types_and_plays_the_rest(tmp_path):
    import rclpy

    from mgeo_ros.ros.bag_player import BagPlayer

    bag = tmp_path / 'bag'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection('/cam/image', 'sensor_msgs/msg/Image', typestore=TS)
        odom = writer.add_connection('/odom', 'nav_msgs/msg/Odometry', typestore=TS)  # nav_msgs is not installed
        for i in range(4):
            msg = _typestore_messages(i)['/cam/image']
            writer.write(image, _stamp_ns(i), TS.serialize_cdr(msg, msg.__msgtype__))
            writer.write(odom, _stamp_ns(i), b'\0\1\0\0')
    rclpy.init()
    try:
        node = rclpy.create_node(f'bag_player_test_{os.getpid()}')
        player = BagPlayer(node, bag, rate=0, remap={'/cam/image': '/played/image'})
        assert set(player.skipped) == {'/odom'} and player.message_count == 4
        assert set(player.publishers) == {'/played/image'}
        # a local listener alone must not satisfy a wait that asks for two (the demo's recorder + the node)
        listeners = [node.create_subscription(Image, '/played/image', lambda _: None, 10)]
        assert player.wait_for_subscribers(1, 5.0)
        assert not player.wait_for_subscribers(1, 0.3, at_least={'/played/image': 2})
        listeners.append(node.create_subscription(Image, '/played/image', lambda _: None, 10))
        assert player.wait_for_subscribers(1, 5.0, at_least={'/played/image': 2})
        with pytest.raises(ValueError, match='not played'):         # the bag's name, not the remapped one
            player.wait_for_subscribers(1, 0.1, at_least={'/cam/image': 2})
        waits = []
        real_sleep = time.sleep
        time.sleep = lambda s: (waits.append(s), real_sleep(s))  # what the player waits, not how long it took
        try:
            stats = player.play()
        finally:
            time.sleep = real_sleep
        assert dict(stats.published) == {'/played/image': 4}
        assert stats.bag_duration_s == pytest.approx(0.15)
        assert waits == []  # rate 0: no pacing
        player.close()
        with pytest.raises(BadInputError, match='not importable'):
            BagPlayer(node, bag, topics=['/odom'])
        with pytest.raises(BadInputError, match='rate'):
            BagPlayer(node, bag, rate=-1)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


@pytest.mark.parametrize('encoding', sorted(convert.ENCODINGS))
def test_bag_reader_decodes_images_exactly_as_the_node(encoding):
    """Training on a bag must see the pixels the node sees: a 12-bit mono16 frame, padded rows and big-endian data
    go through rclpy's CDR into rosbags and decode to the same RGB in `train.data.bag` and `ros.convert`."""
    from mgeo_ros.train.data.bag import image_to_rgb

    dtype, channels = convert.ENCODINGS[encoding]
    rng = np.random.default_rng(len(encoding))
    shape = (H, W) if channels == 1 else (H, W, channels)
    if dtype.kind == 'f':
        arr = rng.uniform(0.2, 9.0, shape).astype(dtype)
    elif dtype.itemsize == 2:
        arr = rng.integers(0, 4096, shape).astype(dtype)  # a 12-bit camera in a 16-bit container
    else:
        arr = rng.integers(0, 256, shape).astype(dtype)
    msg = convert.numpy_to_image(arr, encoding, step=W * convert.bytes_per_pixel(encoding) + 6,
                                 is_bigendian=dtype.itemsize > 1)
    from_bag = TS.deserialize_cdr(serialize_message(msg), 'sensor_msgs/msg/Image')
    node_rgb = convert.image_to_rgb8(msg)
    assert node_rgb.shape == (H, W, 3) and node_rgb.std() > 0
    np.testing.assert_array_equal(image_to_rgb(from_bag), node_rgb)
