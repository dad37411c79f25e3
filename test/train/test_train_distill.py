"""`mgeo distill`: a tiny teacher pseudo-labels images, a tiny student trains a few steps on them."""
import json
import os

import cv2
import numpy as np
import torch

from mgeo_ros.model import build_model, load_checkpoint, save_checkpoint
from mgeo_ros.model.configs import preset
from mgeo_ros.train.data import SyntheticDataset
from mgeo_ros.train.data.folder import read_sample
from mgeo_ros.train.distill_cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'config', 'train', 'tiny.yaml')


def test_distill_pseudo_labels_then_trains_a_student(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(build_model(preset('tiny')), tmp_path / 'teacher')
    images = tmp_path / 'images'
    images.mkdir()
    ds = SyntheticDataset(count=3, seed=11, size=(64, 48))
    for i in range(3):
        cv2.imwrite(str(images / f'img{i}.png'), ds[i].rgb[..., ::-1])
    labelled = tmp_path / 'labelled'
    from mgeo_ros.train.data import write_folder
    write_folder([ds[0]], labelled)
    rc = main([CONFIG, '--teacher', str(tmp_path / 'teacher'), '--images', str(images),
               '--out', str(tmp_path / 'out'), '--labelled', str(labelled), '--num-tokens', '16',
               '--max-steps', '2', '--set', 'batch_size=2', '--set', 'image_size=[64, 48]',
               '--set', 'num_tokens=[16, 16]', '--set', 'eval_count=0', '--set', 'progress=false',
               '--set', 'tensorboard=false', '--set', 'loss.max_anchors=8', '--set', 'loss.global_resolution=12'])
    assert rc == 0
    pseudo = tmp_path / 'out' / 'pseudo'
    names = sorted(p.stem for p in (pseudo / 'rgb').iterdir())
    assert names == ['img0', 'img1', 'img2']
    label = read_sample(pseudo, 'img0')
    assert label.depth.shape == (48, 64) and label.mask.any()
    assert np.all(label.depth[label.mask] > 0)
    student = tmp_path / 'out' / 'student'
    summary = json.loads((student / 'summary.json').read_text())
    assert summary['steps'] == 2
    model = load_checkpoint(str(student / 'final'))
    assert isinstance(model, torch.nn.Module) and (student / 'final' / 'config.json').is_file()
    # the student trained on the pseudo labels and the labelled set (both in its resolved config)
    resolved = (student / 'config.yaml').read_text()
    assert str(pseudo) in resolved and str(labelled) in resolved


def test_bag_images_yield_frames_with_camera_info(tmp_path):
    from mgeo_ros.train.data import write_bag
    from mgeo_ros.train.distill_cli import bag_images

    samples = [SyntheticDataset(count=3, seed=21, size=(64, 48))[i] for i in range(3)]
    bag = write_bag(samples, tmp_path / 'bag', depth_topic=None)
    frames = list(bag_images(str(bag), None, None, every=2))
    assert len(frames) == 2                                    # frames 0 and 2
    name, rgb, intr = frames[0]
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert intr is not None and abs(intr.fx - samples[0].intrinsics.fx) < 1e-6
    assert np.abs(rgb.astype(int) - samples[0].rgb.astype(int)).max() <= 1
    assert frames[0][0] < frames[1][0]                         # names are zero-padded stamps, sortable
