"""mgeo_ros.train layer (see docs/architecture.md)."""
