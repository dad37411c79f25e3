"""mgeo_ros.eval layer (see DESIGN.md)."""
