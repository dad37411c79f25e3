"""Replay a bag into a running node while recording its outputs, in one rclpy process (used by `mgeo demo`)."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

OUTPUT_TOPICS = ('/mgeo/depth/image', '/mgeo/depth/camera_info', '/mgeo/points', '/mgeo/depth/mask', '/diagnostics')


def replay_and_record(bag: Path, record_path: Path, rate: float, frames: int, node: subprocess.Popen,
                      timeout_s: float, play_topics: list[str], image_topic: str,
                      output_topics=OUTPUT_TOPICS) -> dict:
    """Play the bag into the node and record its outputs (and the input image, for latency) in this process.

    rate: playback speed factor (1 = the bag's own timing).
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from mgeo_ros.ros.bag_player import BagPlayer, BagRecorder

    rclpy.init()
    host = rclpy.create_node('mgeo_demo')
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(host)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    stats: dict = {}
    try:
        # publishers exist from construction on, so the recorder can subscribe to the image (for latency)
        player = BagPlayer(host, bag, rate=rate, topics=play_topics)
        recorder = BagRecorder(host, record_path, list(output_topics) + [image_topic])
        deadline = time.monotonic() + timeout_s
        while not recorder.wait_ready(1.0):
            if node.poll() is not None:
                raise RuntimeError(f'mgeo_depth_node exited with code {node.returncode} before publishing')
            if time.monotonic() > deadline:
                raise TimeoutError('the node did not advertise its outputs in time')
        # the recorder subscribes to the image too: wait for the node's subscription on top of it
        if not player.wait_for_subscribers(1, max(1.0, deadline - time.monotonic()), at_least={image_topic: 2}):
            raise TimeoutError('the node did not subscribe to the camera topics in time')
        time.sleep(0.5)  # let the remaining endpoints match
        t_play = time.perf_counter()
        play_stats = player.play()
        stats['play_s'] = time.perf_counter() - t_play
        # drain: wait until the last frame's depth is back or nothing new arrives for a while
        last, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < 5.0:
            n = recorder.counts[output_topics[0]]
            if n != last:
                last, last_change = n, time.monotonic()
            if n >= frames:
                break
            time.sleep(0.2)
        time.sleep(1.2)  # one more diagnostics period
        stats['published'] = dict(play_stats.published)
        player.close()
        recorder.close()
    finally:
        executor.shutdown()
        host.destroy_node()
        rclpy.shutdown()
    return stats
