"""Training/evaluation data: the `Sample` type and datasets that yield it (folder, rosbag, procedural synthetic).

Every dataset is map-style (`len(ds)`, `ds[i] -> Sample`). Heavy modules import lazily.
"""
from mgeo_ros.train.data.sample import Sample

__all__ = ['Sample', 'FolderDataset', 'BagDataset', 'SyntheticDataset', 'render_scene', 'render_batch',
           'render_sequence', 'write_folder', 'read_sample', 'check_folder', 'write_bag']

_LAZY = {
    'FolderDataset': 'mgeo_ros.train.data.folder', 'write_folder': 'mgeo_ros.train.data.folder',
    'read_sample': 'mgeo_ros.train.data.folder', 'check_folder': 'mgeo_ros.train.data.validate',
    'BagDataset': 'mgeo_ros.train.data.bag', 'write_bag': 'mgeo_ros.train.data.bag_writer',
    'SyntheticDataset': 'mgeo_ros.train.data.synthetic', 'render_scene': 'mgeo_ros.train.data.synth',
    'render_batch': 'mgeo_ros.train.data.synth', 'render_sequence': 'mgeo_ros.train.data.synth',
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
