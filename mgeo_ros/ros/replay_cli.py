"""`mgeo replay`: play a ROS 2 bag (sqlite3 or mcap) into the graph, optionally recording topics into a new bag."""
from __future__ import annotations

import argparse
import sys
import threading
import time

from mgeo_ros.cli_args import float_in, non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', help='bag directory (or .db3/.mcap file inside one) to play')
    parser.add_argument('--rate', type=float_in(0.0, unit='x real time'), default=1.0,
                        help='playback speed as a multiple of real time; 0 = as fast as possible (default 1.0)')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help='play only these bag topics (default: all)')
    parser.add_argument('--remap', action='append', default=[], metavar='/OLD:=/NEW',
                        help='publish bag topic /OLD on /NEW; repeatable')
    parser.add_argument('--qos', choices=('reliable', 'best_effort', 'sensor_data'), default='reliable',
                        help='reliability of the playback publishers (default reliable)')
    parser.add_argument('--qos-depth', type=positive_int, default=10,
                        help='keep-last depth of the publishers (default 10)')
    parser.add_argument('--wait-subscribers', type=non_negative_int, default=0, metavar='N',
                        help='start only once every played topic has N subscribers, this process\'s own --record not '
                             'counted (default 0: start at once)')
    parser.add_argument('--wait-timeout', type=float_in(0.0, unit='s'), default=10.0, metavar='S',
                        help='seconds to wait for subscribers (and recorded publishers) before giving up (default 10)')
    parser.add_argument('--record', default=None, metavar='OUT_BAG', help='record topics into this new bag')
    parser.add_argument('--record-topics', nargs='+', default=[], metavar='TOPIC[:TYPE]',
                        help='topics to record (type from the graph unless given as topic:pkg/msg/Type)')
    parser.add_argument('--record-storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='storage of the recorded bag (default mcap)')
    parser.add_argument('--linger', type=float_in(0.0, unit='s'), default=2.0, metavar='S',
                        help='seconds to keep recording after the last message is played (default 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tqdm import tqdm

    from mgeo_ros.ros.bag_player import BagPlayer, BagRecorder, parse_remaps, qos_from_name

    if args.record and not args.record_topics:
        print('mgeo replay: error: --record needs --record-topics (e.g. --record-topics /depth/image)',
              file=sys.stderr)
        return 2
    from mgeo_ros.bag_files import open_bag

    with open_bag(args.bag):  # a missing or damaged bag is named before ROS starts
        pass
    rclpy.init(args=[sys.argv[0]])  # our own flags (--remap ...) are not ROS arguments
    node = rclpy.create_node('mgeo_replay')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    player = recorder = None
    try:
        player = BagPlayer(node, args.bag, rate=args.rate, remap=parse_remaps(args.remap), topics=args.topics,
                           qos=qos_from_name(args.qos, args.qos_depth))
        for topic, why in player.skipped.items():
            print(f'mgeo replay: warning: not playing {topic}: {why}', file=sys.stderr)
        if args.record:
            played_types = {player.output_topic(c.topic): c.msgtype for c in player.connections}
            recorder = BagRecorder(node, args.record, args.record_topics, storage=args.record_storage,
                                   known_types=played_types)
        # a played topic this process also records has our own recorder among its subscribers: it does not count
        recorded = set(recorder.topics) if recorder is not None else set()
        own = {t: args.wait_subscribers + 1 for t in player.publishers if t in recorded}
        if args.wait_subscribers > 0 and not player.wait_for_subscribers(args.wait_subscribers, args.wait_timeout,
                                                                         own):
            counts = {t: p.get_subscription_count() for t, p in player.publishers.items()}
            print(f'mgeo replay: fewer than {args.wait_subscribers} subscriber(s) after {args.wait_timeout} s: '
                  f'{counts}', file=sys.stderr)
            return 1
        if recorder is not None and not recorder.wait_ready(args.wait_timeout):
            print(f'mgeo replay: warning: not every recorded topic has a publisher yet: {recorder.pending or "?"}',
                  file=sys.stderr)
        with tqdm(total=player.message_count, unit='msg', disable=args.no_progress, desc='replay') as bar:
            stats = player.play(progress=bar.update)
        if recorder is not None:
            time.sleep(max(args.linger, 0.0))
            recorder.close()
        for topic, count in sorted(stats.published.items()):
            print(f'played {count:6d}  {topic}')
        if recorder is not None:
            for topic in args.record_topics:
                name = topic.partition(':')[0]
                print(f'recorded {recorder.counts[name]:4d}  {name}')
        print(f'{sum(stats.published.values())} messages, {stats.bag_duration_s:.2f} s of bag in {stats.wall_s:.2f} s')
        return 0
    finally:
        if recorder is not None and not recorder.closed:
            recorder.close()
        if player is not None:
            player.close()
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
