"""The "evaluate and fine-tune on your own bag" recipe of docs/recipes.md, run end to end as the document writes it:
its commands are read from the document and run in order in a scratch directory holding two tiny bags recorded on the
recipe's topics (so a command that lacks its topic flags fails here as it would for a reader) and a tiny model at
`models/moge2_vits`. Only the sizes are shrunk so that it runs in seconds on a CPU: `--set` overrides for training,
`--num-tokens 16` and a 64x48 export; the shipped config itself is what is loaded. The engine build runs on the
TensorRT-RTX builder ahead of time for SM89 (no GPU needed)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from doc_commands import commands, section

REPO = Path(__file__).resolve().parents[1]
RECIPE = section((REPO / 'docs' / 'recipes.md').read_text(), 'Evaluate and fine-tune on your own bag')
TOPICS = {'image_topic': '/camera/color/image_raw', 'depth_topic': '/camera/aligned_depth_to_color/image_raw',
          'info_topic': '/camera/color/camera_info'}
SMALL = ['image_size=[64,48]', 'image_size_max=null', 'num_tokens=[16,16]', 'batch_size=2', 'eval_count=2',
         'eval_every=0', 'threads=1', 'loss.global_resolution=16', 'loss.local_patches={4: 4}',
         'loss.local_resolution={4: 8}', 'loss.max_anchors=16', 'tensorboard=false', 'progress=false']
RTX = 'tensorrt_rtx_bindings'


def shrunk(argv: list[str]) -> list[str]:
    """The documented command with the sizes of a CPU test: a few steps, 16 tokens, a 64x48 export."""
    argv = list(argv)
    if argv[0] == 'train':
        argv[1] = str(REPO / argv[1])                      # the shipped config, whatever the current directory
        return argv + ['--max-steps', '3'] + [x for s in SMALL for x in ('--set', s)]
    if '--num-tokens' in argv:
        argv[argv.index('--num-tokens') + 1] = '16'
    if argv[0] == 'export':
        argv[argv.index('--size') + 1] = '64x48'
    if argv[0] in ('eval', 'refine') and '--num-tokens' not in argv:
        argv += ['--num-tokens', '16']
    if argv[0] == 'eval':
        argv += ['--report-frames', '1', '--quiet']
    if argv[0] == 'build-engine':
        argv += ['--trt-module', RTX, '--compute-capability', 'SM89', '--quiet']
    return argv


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """The reader's directory: two bags on the recipe's topics and the imported model the recipe starts from."""
    import torch

    from mgeo_ros.model import build_model, preset, save_checkpoint
    from mgeo_ros.train.data import SyntheticDataset, write_bag

    root = tmp_path_factory.mktemp('recipe')
    samples = [SyntheticDataset(count=6, seed=7, size=(64, 48))[i] for i in range(6)]
    write_bag(samples[:4], root / 'my_bag', **TOPICS)
    write_bag(samples[4:], root / 'my_holdout_bag', **TOPICS)
    torch.manual_seed(0)
    save_checkpoint(build_model(preset('tiny')), str(root / 'models' / 'moge2_vits'))
    return root


def test_the_recipe_uses_the_extracted_frames_and_gives_every_extract_its_topics():
    documented = [c for c in commands(RECIPE) if c[0] == 'mgeo']
    extracts = [c for c in documented if c[1:3] == ['data', 'extract']]
    assert len(extracts) == 2
    for cmd in extracts:
        assert all(f'--{k.replace("_", "-")}' in cmd and v in cmd for k, v in TOPICS.items()), cmd
    outs = {c[c.index('--out') + 1] for c in extracts}
    for cmd in (c for c in documented if c[1] == 'eval'):
        assert cmd[cmd.index('--data') + 1] in outs, f'{cmd}: evaluates something the recipe did not extract'
    assert documented[-1][1] == 'build-engine', 'the recipe ends with the engine build'


def test_the_bag_recipe_runs_from_bag_to_engine(scratch, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from mgeo_ros.cli import main

    monkeypatch.chdir(scratch)
    documented = [c[1:] for c in commands(RECIPE) if c[0] == 'mgeo']
    engine_build = [c for c in documented if c[0] == 'build-engine']
    for argv in (c for c in documented if c[0] != 'build-engine'):
        assert main(shrunk(argv)) == 0, argv

    assert len(list(Path('runs/my_bag/frames/rgb').iterdir())) == 4
    assert json.loads(Path('runs/my_bag/refined/refine_report.json').read_text())
    before = load_file('models/moge2_vits/model.safetensors')
    after = load_file('runs/finetune/best/model.safetensors')
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), 'fine-tuning left every weight unchanged'
    for name in ('eval_before', 'eval_after'):
        metrics = json.loads(Path(f'runs/{name}/metrics.json').read_text())
        abs_rel = [run['mean']['depth_metric/abs_rel'] for run in metrics['runs'].values()]
        assert abs_rel and all(np.isfinite(a) and a >= 0 for a in abs_rel)
    onnx = Path('finetuned_640x480.onnx')
    assert onnx.is_file() and onnx.with_suffix('.probe.npz').is_file()

    if importlib.util.find_spec(RTX) is None:
        pytest.skip(f'{RTX} (the TensorRT-RTX builder, requirements-test.txt) is not installed: the engine build '
                    'of the recipe cannot run here')
    for argv in engine_build:
        assert main(shrunk(argv)) == 0, argv
    assert Path('finetuned_640x480.engine').is_file()
