"""Several cameras on one shared model, driven from threads: the pictures and the loop the batching tests use.

Not a test module (no test_ prefix); imported by test/runtime/test_runtime_batching.py and test_export_dynamic.py.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from mgeo_ros.runtime.batching import SharedModel


def picture_frames(count: int, w: int = 96, h: int = 72) -> list[np.ndarray]:
    """`count` different w x h RGB pictures (smooth patterns plus noise, seeded)."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(count):  # different pictures, so a mixed-up batch order would show
        img = np.stack([np.sin(xx / (5.0 + i)), np.cos(yy / (4.0 + i)), np.sin((xx + yy) / (9.0 + 2 * i))], -1)
        out.append(np.clip(img * 100 + 128 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8))
    return out


def run_cameras(shared: SharedModel, frames: dict[str, np.ndarray], target: int) -> dict[str, list]:
    """One thread per camera, each predicting its frame as fast as the shared model lets it, until one camera has
    `target` results (or 60 s pass)."""
    results: dict[str, list] = {name: [] for name in frames}
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def camera(name: str) -> None:
        view = shared.view(name)
        while not stop.is_set() and time.monotonic() < deadline:
            results[name].append(view.predict(frames[name]))
            if len(results[name]) >= target:
                stop.set()

    threads = [threading.Thread(target=camera, args=(n,)) for n in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results
