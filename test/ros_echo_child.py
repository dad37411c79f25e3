"""Child process for the cross-process tests: decodes what arrives on <prefix>/in/* with mgeo_ros.ros.convert,
re-encodes it and publishes it on <prefix>/out/* (reliable, transient local), so both conversion directions cross a
process boundary. Run with the venv's python; it inherits ROS_DOMAIN_ID and the Fast DDS profile from the parent."""
import argparse
import sys

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from mgeo_ros.ros import convert
from mgeo_ros.ros.spin_thread import spin_child


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--prefix', default='/echo')
    parser.add_argument('--timeout', type=float, default=60.0)
    parser.add_argument('--best-effort-in', action='store_true', help='subscribe best effort (a camera stream)')
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node('mgeo_echo_child')
    inbound = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT if args.best_effort_in
                         else ReliabilityPolicy.RELIABLE)
    outbound = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    out_image = node.create_publisher(Image, f'{args.prefix}/out/image', outbound)
    out_info = node.create_publisher(CameraInfo, f'{args.prefix}/out/camera_info', outbound)
    out_points = node.create_publisher(PointCloud2, f'{args.prefix}/out/points', outbound)

    def on_image(msg):
        out_image.publish(convert.numpy_to_image(convert.image_to_numpy(msg), msg.encoding, msg.header))

    def on_info(msg):
        out_info.publish(convert.intrinsics_to_camera_info(convert.camera_info_to_intrinsics(msg), msg.header))

    def on_points(msg):
        points, rgb = convert.pointcloud2_to_numpy(msg)
        out_points.publish(convert.points_to_pointcloud2(points, msg.header, rgb=rgb))

    node.create_subscription(Image, f'{args.prefix}/in/image', on_image, inbound)
    node.create_subscription(CameraInfo, f'{args.prefix}/in/camera_info', on_info, inbound)
    node.create_subscription(PointCloud2, f'{args.prefix}/in/points', on_points, inbound)
    node.create_timer(args.timeout, lambda: rclpy.try_shutdown())  # never outlive a crashed parent for long
    spin_child(node)
    return 0


if __name__ == '__main__':
    sys.exit(main())
