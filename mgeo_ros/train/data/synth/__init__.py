"""Procedural synthetic scenes at realistic metric scale, ray-cast in torch (CPU or GPU), deterministic by seed.

`render_batch(seeds, size)` streams a batch for training without touching disk; `render_scene(seed)` gives one
`Sample`; `render_sequence(seed, n_frames)` moves a camera smoothly through one scene (demo bags, temporal metrics).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgeo_ros.train.data.sample import Sample
from mgeo_ros.train.data.synth.render import SynthBatch, render_frames
from mgeo_ros.train.data.synth.scene import CameraMount, Pose, Scene, sample_setup

KINDS = ('indoor', 'outdoor')

__all__ = ['KINDS', 'CameraMount', 'Pose', 'Scene', 'SynthBatch', 'render_batch', 'render_scene', 'render_sequence',
           'sample_setup']


def render_batch(seeds: Sequence[int], size: tuple[int, int] = (160, 120), kinds: Sequence[str] = KINDS,
                 device='cpu', shadow_samples: int = 1) -> SynthBatch:
    """Render one frame per seed (scene `seed` is the same whatever batch it is rendered in). size = (W, H)."""
    _check(size, kinds)
    w, h = size
    setups = [sample_setup(int(s), w, h, tuple(kinds)) for s in seeds]
    frames = [(scene, poses[0], intr) for scene, poses, intr in setups]
    rgb, depth, mask = render_frames(frames, device, shadow_samples, noise_seeds=[int(s) for s in seeds])
    return _batch(rgb, depth, mask, frames, [f'synth:{s}' for s in seeds], device)


def render_scene(seed: int, size: tuple[int, int] = (160, 120), kinds: Sequence[str] = KINDS, device='cpu',
                 shadow_samples: int = 1) -> Sample:
    """One synthetic `Sample` (metric depth, exact intrinsics)."""
    return render_batch([seed], size, kinds, device, shadow_samples).samples()[0]


def render_sequence(seed: int, n_frames: int, size: tuple[int, int] = (160, 120), kinds: Sequence[str] = KINDS,
                    device='cpu', step_m: float = 0.05, shadow_samples: int = 1,
                    batch_size: int = 8, mount: CameraMount | None = None) -> list[Sample]:
    """n_frames of one scene while the camera moves smoothly (about step_m metres per frame indoors, 3x outdoors,
    turning gently). With a `mount` the camera is a robot's: fixed height, pitch and roll, the floor in view (the
    scene is the same one). The returned Samples' `source` is 'synth:SEED:FRAME'."""
    _check(size, kinds)
    scene, poses, intr = sample_setup(int(seed), size[0], size[1], tuple(kinds), n_frames=n_frames, step_m=step_m,
                                      mount=mount)
    out: list[Sample] = []
    for s in range(0, n_frames, batch_size):
        frames = [(scene, pose, intr) for pose in poses[s:s + batch_size]]
        ids = list(range(s, s + len(frames)))
        rgb, depth, mask = render_frames(frames, device, shadow_samples, noise_seeds=[seed * 1009 + i for i in ids])
        out += _batch(rgb, depth, mask, frames, [f'synth:{seed}:{i}' for i in ids], device).samples()
    return out


def _check(size, kinds):
    if len(size) != 2 or min(size) < 2:
        raise ValueError(f'size must be (W, H) with both >= 2, got {size!r}')
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f'kinds must be a non-empty subset of {KINDS}, got {tuple(kinds)!r}')


def _batch(rgb, depth, mask, frames, sources, device) -> SynthBatch:
    import torch

    intr = [f[2] for f in frames]
    K = torch.as_tensor(np.array([i.K for i in intr]), dtype=torch.float32, device=device)
    return SynthBatch(rgb, depth, mask, K, intr, sources, [f[0].kind for f in frames])
