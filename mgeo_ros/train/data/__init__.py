"""mgeo_ros.train.data layer (see DESIGN.md)."""
