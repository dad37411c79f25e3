"""Spinning helper nodes. `SpinThread`: a node in its own rclpy context, spun by a daemon thread, for code whose main
thread is busy elsewhere (playing a camera, waiting on results): the live bench and the test harnesses; a private
context keeps it apart from any other node in the process. `spin_child`: the main loop of a helper child process
(the bench's sink, the tests' echo child). `interrupt`: end a node's process as a terminal's Ctrl-C does."""
from __future__ import annotations

import signal
import subprocess
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def interrupt(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGINT, as a terminal's Ctrl-C; killed if it has not ended within `timeout` seconds. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def spin_child(node) -> None:
    """Print `ready` (the parent waits for it), then spin `node` in the default context until Ctrl-C, SIGTERM or
    an rclpy shutdown from elsewhere; the context is shut down on the way out."""
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    print('ready', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


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
