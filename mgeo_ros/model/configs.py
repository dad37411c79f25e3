"""Model configs in the official MoGe-2 `model_config` layout, plus the ViT shapes behind backbone names.

A config is a plain JSON-able dict with keys `encoder`, `neck`, `points_head`, `mask_head`, `normal_head`
(optional), `scale_head`, `remap_output`, `num_tokens_range`. Every structural choice lives in it, so official
checkpoints of any size and our own small models go through the same code.
"""
from __future__ import annotations

import copy
from typing import Any

# Shapes of the DINOv2 hub backbones (patch 14, 37x37 positional grid at 518 px). `_reg` adds 4 registers, and those
# variants resize the positional table with antialias and no scale-factor offset (the hub's choice for them).
_DINOV2_SHAPES: dict[str, dict[str, Any]] = {
    'dinov2_vits14': dict(embed_dim=384, depth=12, num_heads=6, ffn='mlp'),
    'dinov2_vitb14': dict(embed_dim=768, depth=12, num_heads=12, ffn='mlp'),
    'dinov2_vitl14': dict(embed_dim=1024, depth=24, num_heads=16, ffn='mlp'),
    'dinov2_vitg14': dict(embed_dim=1536, depth=40, num_heads=24, ffn='swiglu'),
}

_VIT_DEFAULTS: dict[str, Any] = dict(
    mlp_ratio=4.0, patch_size=14, num_register_tokens=0, pos_grid=37, ffn='mlp',
    interpolate_antialias=False, interpolate_offset=0.1, layer_scale=True,
)

_VIT_KEYS = {'embed_dim', 'depth', 'num_heads'} | set(_VIT_DEFAULTS)

UPSAMPLERS_4 = ['conv_transpose', 'conv_transpose', 'conv_transpose', 'bilinear']


def vit_spec(backbone: str | dict) -> dict[str, Any]:
    """Resolve `encoder.backbone` (a DINOv2 hub name or an explicit dict) into a complete ViT description."""
    if isinstance(backbone, str):
        name = backbone
        registers = name.endswith('_reg')
        base = name[:-4] if registers else name
        if base not in _DINOV2_SHAPES:
            raise ValueError(f'encoder.backbone: unknown backbone name {backbone!r} '
                             f'(known: {sorted(_DINOV2_SHAPES)} with optional _reg suffix, or a dict)')
        spec = {**_VIT_DEFAULTS, **_DINOV2_SHAPES[base]}
        if registers:
            spec.update(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)
        return spec
    if isinstance(backbone, dict):
        unknown = set(backbone) - _VIT_KEYS
        if unknown:
            raise ValueError(f'encoder.backbone: unknown keys {sorted(unknown)}')
        missing = {'embed_dim', 'depth', 'num_heads'} - set(backbone)
        if missing:
            raise ValueError(f'encoder.backbone: missing keys {sorted(missing)}')
        spec = {**_VIT_DEFAULTS, **backbone}
        if spec['embed_dim'] % spec['num_heads']:
            raise ValueError('encoder.backbone: embed_dim must be divisible by num_heads')
        return spec
    raise ValueError(f'encoder.backbone must be a name or a dict, got {type(backbone).__name__}')


def _conv_stack(dim_in: list, dims: list[int], dim_out: list, blocks: list[int]) -> dict[str, Any]:
    return dict(dim_in=list(dim_in), dim_out=list(dim_out), dim_res_blocks=list(dims), num_res_blocks=list(blocks),
                res_block_in_norm='none', res_block_hidden_norm='none', resamplers=list(UPSAMPLERS_4))


def moge2_config(backbone: str | dict, intermediate_layers: list[int], dims: list[int],
                 neck_blocks: list[int], head_blocks: list[int], normal_head: bool = True,
                 num_tokens_range: tuple[int, int] = (1200, 3600)) -> dict[str, Any]:
    """A MoGe-2 model_config: `dims` are the 5 neck/head channel widths, dims[0] is also the projection width."""
    width = dims[0]
    head_in = list(dims)
    out = [None] * (len(dims) - 1)
    config: dict[str, Any] = {
        'encoder': {'backbone': copy.deepcopy(backbone), 'intermediate_layers': list(intermediate_layers),
                    'dim_out': width},
        'neck': _conv_stack([width + 2] + [2] * (len(dims) - 1), dims, [None] * len(dims), neck_blocks),
        'points_head': _conv_stack(head_in, dims, out + [3], head_blocks),
        'mask_head': _conv_stack(head_in, dims, out + [1], head_blocks),
        'scale_head': {'dims': [vit_spec(backbone)['embed_dim'], width, width, 1]},
        'remap_output': 'exp',
        'num_tokens_range': list(num_tokens_range),
    }
    if normal_head:
        config['normal_head'] = _conv_stack(head_in, dims, out + [3], head_blocks)
    return config


def _official(width: int, backbone: str, layers: list[int], neck_blocks: list[int], normal: bool) -> dict:
    return moge2_config(backbone, layers, [width, 256, 128, 64, 32], neck_blocks, [0, 1, 1, 1, 0], normal)


def preset(name: str) -> dict[str, Any]:
    """model_config for a named variant.

    - `vits`, `vitb`: reconstructions of `Ruicheng/moge-2-vit{s,b}-normal` (the repo publishes no config; the two
      tapped layers [5, 11] are a guess, an official checkpoint's own config always wins).
    - `vitl`: `configs/train/v2.json` of the reference (with the normal head, like `moge-2-vitl-normal`).
    - `tiny`: a few hundred k parameters, for tests.
    - `small`: the embedded default model (trainable and fast on a 2-core CPU). Use about 300 tokens at 320x240
      (the head then predicts at the input resolution; the head output is 16x the token grid).
    """
    if name == 'vits':
        return _official(384, 'dinov2_vits14', [5, 11], [0, 1, 1, 1, 0], True)
    if name == 'vitb':
        return _official(768, 'dinov2_vitb14', [5, 11], [0, 1, 1, 1, 0], True)
    if name == 'vitl':
        return _official(1024, 'dinov2_vitl14', [5, 11, 17, 23], [0, 2, 2, 2, 0], True)
    if name == 'tiny':
        vit = dict(embed_dim=64, depth=3, num_heads=2, mlp_ratio=4.0, patch_size=14, num_register_tokens=0,
                   pos_grid=37)
        return moge2_config(vit, [1, 2], [64, 32, 16, 16, 8], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0], True,
                            num_tokens_range=(300, 1200))
    if name == 'small':
        vit = dict(embed_dim=256, depth=8, num_heads=4, mlp_ratio=4.0, patch_size=14, num_register_tokens=0,
                   pos_grid=37)
        # Narrow decoder: every 3x3 conv costs channels^2 x pixels, so halving the widths quarters the neck/head cost.
        # 7.8M parameters; 7.5 GFLOP at 320x240 / 300 tokens.
        return moge2_config(vit, [3, 7], [128, 64, 32, 16, 8], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], True,
                            num_tokens_range=(300, 1200))
    raise ValueError(f'unknown preset {name!r}; choose one of {PRESETS}')


PRESETS = ('tiny', 'small', 'vits', 'vitb', 'vitl')
