"""DDP with gloo on CPU: two ranks train a few steps and end with identical weights; rank 0 alone writes."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from mgeo_ros.train.batching import BatchStream
from mgeo_ros.train.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMALL = {
    'image_size': [64, 48], 'batch_size': 2, 'num_tokens': [16, 16], 'threads': 1, 'progress': False,
    'tensorboard': False, 'eval_count': 0, 'log_every': 1, 'warmup_steps': 1, 'ckpt_every': 0,
    'datasets.0.pool_size': 4, 'datasets.0.augment': False, 'loss.weights': {'local_4': 0.0, 'local_16': 0.0,
                                                                            'local_64': 0.0},
    'loss.global_resolution': 12, 'loss.max_anchors': 8, 'max_minutes': 100.0,  # exercises the synced stop check
}

SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from mgeo_ros.train.config import load_config
    from mgeo_ros.train.trainer import Trainer
    out, overrides = sys.argv[1], eval(sys.argv[2])
    cfg = load_config(os.path.join({root!r}, 'config/train/tiny.yaml'), dict(overrides, out=out, max_steps=3))
    trainer = Trainer(cfg)
    first = next(iter(trainer._stream()))['image']
    summary = trainer.run()
    rank = int(os.environ['RANK'])
    state = {{k: v.detach().clone() for k, v in trainer.model.state_dict().items()}}
    torch.save({{'state': state, 'first_image': first, 'world': summary['world_size']}},
               os.path.join(out, f'rank{{rank}}.pt'))
''')


def test_streams_differ_per_rank():
    cfg = load_config(os.path.join(ROOT, 'config/train/tiny.yaml'), SMALL)
    a = next(iter(BatchStream(cfg, rank=0, world_size=2)))
    b = next(iter(BatchStream(cfg, rank=1, world_size=2)))
    a2 = next(iter(BatchStream(cfg, rank=0, world_size=2)))
    assert not torch.equal(a['image'], b['image'])
    assert torch.equal(a['image'], a2['image'])         # deterministic per rank


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / 'ddp_job.py'
    script.write_text(SCRIPT.format(root=ROOT))
    out = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
           str(script), str(out), repr(SMALL)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(out / 'rank0.pt', weights_only=True)
    r1 = torch.load(out / 'rank1.pt', weights_only=True)
    assert r0['world'] == 2 and r1['world'] == 2
    assert not torch.equal(r0['first_image'], r1['first_image'])   # sharded stream: different data per rank
    for key, value in r0['state'].items():
        assert torch.equal(value, r1['state'][key]), key
    # training moved the weights (so equality is not trivial) and rank 0 alone wrote the checkpoint + logs
    init_cfg = load_config(os.path.join(ROOT, 'config/train/tiny.yaml'), SMALL)
    from mgeo_ros.train.trainer import build_training_model
    torch.manual_seed(init_cfg.seed)
    fresh = build_training_model(init_cfg).state_dict()
    moved = [k for k, v in fresh.items() if v.is_floating_point() and not torch.allclose(v, r0['state'][k])]
    assert len(moved) > 10
    assert (out / 'final' / 'model.safetensors').is_file() and (out / 'log.csv').is_file()
    rows = (out / 'log.csv').read_text().strip().splitlines()
    assert len(rows) == 1 + 3                                       # header + one row per step, written once
    steps = [int(float(r.split(',')[0])) for r in rows[1:]]
    assert steps == [1, 2, 3] and np.all(np.diff(steps) > 0)
