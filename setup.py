"""ament_python package for mgeo_ros.

`pip install .` brings only what the node needs on ONNX Runtime (never torch); training, export and the TensorRT path
are extras. ROS packages stay out: they are not PyPI names (apt or the ros-<distro>-* wheels bring them). The pinned
versions for the venvs the Makefile makes are in requirements-<use>.txt; test/test_package.py keeps the two in step.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'mgeo_ros'
RUNTIME = ['numpy>=1.24', 'opencv-python-headless>=4.8', 'onnxruntime>=1.17', 'rosbags>=0.10', 'tqdm>=4.60']
EXTRAS = {
    'train': ['torch>=2.4', 'scipy>=1.11', 'safetensors>=0.4', 'PyYAML>=6.0', 'tensorboard>=2.15', 'matplotlib>=3.7',
              'mcap>=1.1', 'mcap-ros2-support>=0.5'],
    'export': ['torch>=2.4', 'safetensors>=0.4', 'onnx>=1.16', 'onnxscript>=0.1', 'onnx-ir>=0.1'],
    'tensorrt': ['cuda-python>=12.6', 'onnx>=1.16'],
    'test': ['pytest'],
}

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
    install_requires=RUNTIME,
    zip_safe=True,
    maintainer='mgeo_ros developers',
    maintainer_email='dev@mgeo-ros.invalid',
    description='Monocular metric depth and point clouds (MoGe-2) for ROS 2',
    license='MIT',
    extras_require=EXTRAS,
    entry_points={
        'console_scripts': [
            'mgeo_depth_node = mgeo_ros.ros.node:main',
            'mgeo = mgeo_ros.cli:main',
        ],
    },
)
