"""mgeo_ros.export layer (see DESIGN.md)."""
