"""ament_python package for mgeo_ros. ROS names stay out of install_requires: they are not PyPI names."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'mgeo_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['models/*/*.json', 'models/*/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml') + glob('config/*.rviz')),
        ('share/' + PACKAGE + '/config/train', glob('config/train/*.yaml')),
        ('share/' + PACKAGE + '/models/default', glob('mgeo_ros/models/default/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='mgeo_ros developers',
    maintainer_email='dev@mgeo-ros.invalid',
    description='Monocular metric depth and point clouds (MoGe-2) for ROS 2',
    license='MIT',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'mgeo_depth_node = mgeo_ros.ros.node:main',
            'mgeo = mgeo_ros.cli:main',
        ],
    },
)
