"""Benchmarks: the model on every backend (`backends`), the node's own cost per frame with the forward replayed
(`node`), the real node under a live stream (`live`), and the model presets' forward times (`presets`).

`mgeo bench` (`bench.cli`) runs them. Benchmarks may import every layer but train; nothing in the other layers
exists only for them.
"""
