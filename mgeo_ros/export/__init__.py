"""mgeo_ros.export layer (see docs/architecture.md)."""
