"""mgeo_ros.train layer (see DESIGN.md)."""
