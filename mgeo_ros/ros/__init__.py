"""mgeo_ros.ros layer (see docs/architecture.md)."""
