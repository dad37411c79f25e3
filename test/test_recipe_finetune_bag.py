"""The "evaluate and fine-tune on your own bag" recipe of docs/recipes.md, run end to end on a tiny bag made here:
bag -> frames (`mgeo data extract`) -> refine -> `mgeo train config/train/finetune_bag.yaml --init` -> `mgeo eval`
on a held-out bag -> `mgeo export`. Sizes are shrunk with --set so that it runs in seconds on a CPU; the shipped
config itself is what is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'config' / 'train' / 'finetune_bag.yaml'
SMALL = ['image_size=[64,48]', 'image_size_max=null', 'num_tokens=[16,16]', 'batch_size=2', 'eval_count=2',
         'eval_every=0', 'threads=1', 'loss.global_resolution=16', 'loss.local_patches={4: 4}',
         'loss.local_resolution={4: 8}', 'loss.max_anchors=16', 'tensorboard=false', 'progress=false']


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    from mgeo_ros.train.data import SyntheticDataset, write_bag

    root = tmp_path_factory.mktemp('recipe')
    samples = [SyntheticDataset(count=6, seed=7, size=(64, 48))[i] for i in range(6)]
    write_bag(samples[:4], root / 'my_bag')
    write_bag(samples[4:], root / 'my_holdout_bag')
    return root


def test_the_bag_recipe_runs_from_bag_to_onnx(bags):
    import torch
    from safetensors.torch import load_file

    from mgeo_ros.cli import main
    from mgeo_ros.model import build_model, preset, save_checkpoint

    root = bags
    torch.manual_seed(0)
    teacher = root / 'teacher'
    save_checkpoint(build_model(preset('tiny')), str(teacher))

    assert main(['data', 'extract', str(root / 'my_bag'), '--out', str(root / 'frames')]) == 0
    assert main(['data', 'extract', str(root / 'my_holdout_bag'), '--out', str(root / 'holdout')]) == 0
    assert len(list((root / 'frames' / 'rgb').iterdir())) == 4

    assert main(['refine', str(root / 'frames'), '--teacher', str(teacher), '--out', str(root / 'refined'),
                 '--num-tokens', '16']) == 0
    report = json.loads((root / 'refined' / 'refine_report.json').read_text())
    assert report and (root / 'refined' / 'rgb').is_dir()

    sets = [f'datasets.0.root={root / "refined"}', f'eval_root={root / "holdout"}', *SMALL]
    args = ['train', str(CONFIG), '--init', str(teacher), '--out', str(root / 'run'), '--max-steps', '3']
    assert main(args + [x for s in sets for x in ('--set', s)]) == 0
    final = root / 'run' / 'final' / 'model.safetensors'
    before, after = load_file(str(teacher / 'model.safetensors')), load_file(str(final))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), 'fine-tuning left every weight unchanged'

    assert main(['eval', str(root / 'run' / 'final'), '--data', str(root / 'my_holdout_bag'), '--num-tokens', '16',
                 '--out', str(root / 'eval'), '--report-frames', '1', '--quiet']) == 0
    metrics = json.loads((root / 'eval' / 'metrics.json').read_text())
    abs_rel = [run['mean']['depth_metric/abs_rel'] for run in metrics['runs'].values()]
    assert abs_rel and all(np.isfinite(a) and a >= 0 for a in abs_rel)

    onnx = root / 'finetuned_64x48.onnx'
    assert main(['export', str(root / 'run' / 'final'), '--output', str(onnx), '--size', '64x48',
                 '--num-tokens', '16', '--target', 'onnxruntime']) == 0
    assert onnx.is_file() and onnx.with_suffix('.probe.npz').is_file()
