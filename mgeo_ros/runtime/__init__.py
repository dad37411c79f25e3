"""mgeo_ros.runtime layer (see DESIGN.md)."""
