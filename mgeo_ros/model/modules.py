"""Convolutional building blocks of the MoGe-2 neck and heads, named like the official state dict.

`ConvStack` is a 5-level upsampling pyramid: per level a 1x1 input conv (added to the upsampled state), residual
blocks, an optional 1x1 output conv, then a x2 resampler to the next level. All 3x3 convs pad by replicating edges.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_ACTIVATIONS = {
    'relu': lambda: nn.ReLU(),
    'leaky_relu': lambda: nn.LeakyReLU(0.2),
    'silu': lambda: nn.SiLU(),
    'elu': lambda: nn.ELU(),
}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f'unknown activation {name!r} (known: {sorted(_ACTIVATIONS)})')
    return _ACTIVATIONS[name]()


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == 'none':
        return nn.Identity()
    if kind == 'group_norm':
        return nn.GroupNorm(channels // 32, channels)
    if kind == 'layer_norm':
        return nn.GroupNorm(1, channels)
    if kind == 'instance_norm':
        return nn.InstanceNorm2d(channels)
    raise ValueError(f'unknown norm {kind!r} (none, group_norm, layer_norm, instance_norm)')


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, padding_mode='replicate')


class ResidualConvBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))), `layers` indices 0..5."""

    def __init__(self, channels: int, hidden: int, activation: str = 'relu', in_norm: str = 'none',
                 hidden_norm: str = 'none'):
        super().__init__()
        self.layers = nn.Sequential(
            _norm(in_norm, channels), _activation(activation), conv3x3(channels, hidden),
            _norm(hidden_norm, hidden), _activation(activation), conv3x3(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class Resampler(nn.Sequential):
    """x2 upsampler followed by a 3x3 conv. `conv_transpose` starts as nearest-neighbour upsampling."""

    def __init__(self, cin: int, cout: int, kind: str):
        if kind == 'conv_transpose':
            up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
            with torch.no_grad():  # all four taps equal -> nearest upsampling of a 1x1 projection at init
                up.weight.copy_(up.weight[:, :, :1, :1].expand_as(up.weight).clone())
            super().__init__(up, conv3x3(cout, cout))
        elif kind in ('bilinear', 'nearest'):
            up = nn.Upsample(scale_factor=2, mode=kind, align_corners=False if kind == 'bilinear' else None)
            super().__init__(up, conv3x3(cin, cout))
        else:
            raise ValueError(f'unknown resampler {kind!r} (conv_transpose, bilinear, nearest)')


class MLP(nn.Sequential):
    """Linear layers with ReLU between them (indices 0, 2, 4, ... are the Linears)."""

    def __init__(self, dims: Sequence[int]):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def _per_level(value: Any, levels: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f'expected {levels} per-level values, got {len(value)}')
        return list(value)
    return [value] * levels


class ConvStack(nn.Module):
    """Upsampling pyramid over `len(dim_res_blocks)` levels; returns the per-level outputs."""

    def __init__(self, dim_in: Sequence[int | None] | int | None, dim_res_blocks: Sequence[int],
                 dim_out: Sequence[int | None] | int | None, resamplers: Sequence[str] | str,
                 dim_times_res_block_hidden: int = 1, num_res_blocks: Sequence[int] | int = 1,
                 res_block_in_norm: str = 'layer_norm', res_block_hidden_norm: str = 'group_norm',
                 activation: str = 'relu'):
        super().__init__()
        dims = list(dim_res_blocks)
        levels = len(dims)
        ins, outs = _per_level(dim_in, levels), _per_level(dim_out, levels)
        kinds, counts = _per_level(resamplers, levels - 1), _per_level(num_res_blocks, levels)
        self.input_blocks = nn.ModuleList(
            nn.Conv2d(i, d, kernel_size=1) if i is not None else nn.Identity() for i, d in zip(ins, dims))
        self.resamplers = nn.ModuleList(Resampler(a, b, k) for a, b, k in zip(dims[:-1], dims[1:], kinds))
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(ResidualConvBlock(d, dim_times_res_block_hidden * d, activation, res_block_in_norm,
                                              res_block_hidden_norm) for _ in range(n)))
            for d, n in zip(dims, counts))
        self.output_blocks = nn.ModuleList(
            nn.Conv2d(d, o, kernel_size=1) if o is not None else nn.Identity() for o, d in zip(outs, dims))

    def forward(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        outputs = []
        x = None
        last = len(self.res_blocks) - 1
        for level, (inp, res, out) in enumerate(zip(self.input_blocks, self.res_blocks, self.output_blocks)):
            feature = inp(inputs[level]) if inputs[level] is not None else None
            if x is None:
                x = feature
            elif feature is not None:
                x = x + feature
            x = res(x)
            outputs.append(out(x))
            if level < last:
                x = self.resamplers[level](x)
        return outputs
