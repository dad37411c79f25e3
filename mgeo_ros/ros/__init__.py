"""mgeo_ros.ros layer (see DESIGN.md)."""
