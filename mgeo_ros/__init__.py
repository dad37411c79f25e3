"""mgeo_ros: monocular metric geometry (MoGe-2) for robots.

Layers (imports only flow downwards): geometry <- model <- runtime <- export; train, eval; ros (the only rclpy user).
"""

__version__ = '0.1.0'
