"""A node in its own rclpy context, spun by a daemon thread, for code whose main thread is busy elsewhere (playing a
camera, waiting on results): the live bench and the test harnesses. A private context keeps it apart from any other
node in the process (a node under test, another harness)."""
from __future__ import annotations

import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor


class SpinThread:
    """`node` in a private context; `start()` spins it on a daemon thread, `close()` stops and tears it all down."""

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = False
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Spin from now on (create the publishers and subscriptions known up front first)."""
        self._running = True
        self._thread.start()

    def _loop(self) -> None:
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        """Stop spinning (waits up to 2 s for the thread), then destroy the node and shut the context down."""
        self._running = False
        if self._thread.is_alive():
            self._thread.join(2)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
