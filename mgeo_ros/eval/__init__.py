"""mgeo_ros.eval layer (see docs/architecture.md)."""
