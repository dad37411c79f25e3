"""QoS profiles from the node's `*_qos` parameter strings (the Isaac ROS pattern, with fewer surprises)."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from mgeo_ros.node_params import QOS_CHOICES


def make_qos(kind: str, depth: int) -> QoSProfile:
    """'sensor_data' (best effort, volatile), 'reliable' or 'best_effort', keep-last `depth`.

    A reliable publisher still reaches best-effort subscribers, so reliable outputs connect to everything; a
    best-effort subscription still receives from reliable publishers, so best-effort inputs accept every camera.
    """
    if kind not in QOS_CHOICES:
        raise ValueError(f'QoS must be one of {", ".join(QOS_CHOICES)}; got {kind!r}')
    if kind == 'sensor_data':
        profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in ('reliability', 'durability')},
                             history=HistoryPolicy.KEEP_LAST, depth=int(depth))
        return profile
    reliability = ReliabilityPolicy.RELIABLE if kind == 'reliable' else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(reliability=reliability, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST, depth=int(depth))
