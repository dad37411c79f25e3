"""mgeo_ros.model layer (see DESIGN.md)."""
