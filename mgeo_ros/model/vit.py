"""DINOv2-style Vision Transformer with the parameter names of the official DINOv2 / MoGe-2 state dict.

Pre-norm blocks with LayerScale, SDPA attention, a CLS token, optional register tokens, and a positional-embedding
table resized (bicubic) to any token grid. `get_intermediate_layers` returns LayerNorm-ed outputs of chosen blocks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution: [B,3,H,W] -> [B,(H/p)(W/p),D]."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self attention through `scaled_dot_product_attention` (exports to plain ONNX ops)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.permute(0, 2, 1, 3).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """ViT-g feed-forward: silu(x W1) * (x W2) -> W3, hidden width rounded like the hub (2/3, multiple of 8)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel residual gain (`gamma`)."""

    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x += ls1(attn(norm1 x)); x += ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn: str, layer_scale: bool):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        if ffn == 'mlp':
            self.mlp = Mlp(dim, hidden)
        elif ffn == 'swiglu':
            self.mlp = SwiGLU(dim, hidden)
        else:
            raise ValueError(f'encoder.backbone.ffn: unknown feed-forward type {ffn!r}')
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """The DINOv2 backbone. `onnx_compatible_mode` switches the positional-embedding resize to an explicit size."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, patch_size: int = 14,
                 num_register_tokens: int = 0, pos_grid: int = 37, ffn: str = 'mlp',
                 interpolate_antialias: bool = False, interpolate_offset: float = 0.1, layer_scale: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset
        self.onnx_compatible_mode = False

        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed_dim))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        else:
            self.register_tokens = None
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, ffn, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused; kept so official weights load strictly
        self.reset_parameters()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VisionTransformer:
        return cls(**spec)

    def reset_parameters(self) -> None:
        """Random init in the timm/DINOv2 style (truncated normal 0.02 linears, tiny cls/register tokens)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """[1, 1 + grid_h*grid_w, D]: the CLS entry followed by the patch table resized (bicubic) to the grid."""
        m = self.pos_grid
        if not self.onnx_compatible_mode and grid_h == m and grid_w == m:
            return self.pos_embed
        table = self.pos_embed.float()
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        patch_pos = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)
        if not self.onnx_compatible_mode and self.interpolate_offset > 0:
            # DINO's historical scale factor (grid + 0.1) / 37; default mode keeps it to match released weights' use.
            scale = ((grid_h + self.interpolate_offset) / m, (grid_w + self.interpolate_offset) / m)
            patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode='bicubic',
                                      antialias=self.interpolate_antialias)
        else:
            patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode='bicubic',
                                      antialias=self.interpolate_antialias)
        patch_pos = patch_pos.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1).to(self.pos_embed.dtype)

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Embed patches, prepend CLS, add positions, then insert registers after CLS: [B, 1+R+N, D]."""
        b, _, h, w = image.shape
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.positional_embedding(h // self.patch_size, w // self.patch_size).to(x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        return x

    def get_intermediate_layers(self, image: torch.Tensor, layers: int | Sequence[int]
                                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(patch tokens [B,N,D], cls [B,D]) after the final LayerNorm, for each chosen block (or the last n)."""
        depth = len(self.blocks)
        wanted = list(range(depth - layers, depth)) if isinstance(layers, int) else [int(i) for i in layers]
        if not wanted or min(wanted) < 0 or max(wanted) >= depth:
            raise ValueError(f'encoder.intermediate_layers {wanted} out of range for depth {depth}')
        x = self.tokens(image)
        taken: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks[:max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                taken[i] = x
        out = []
        for i in sorted(set(wanted)):
            y = self.norm(taken[i])
            out.append((y[:, 1 + self.num_register_tokens:], y[:, 0]))
        return out


def grid_from_tokens(height: int, width: int, num_tokens: int | torch.Tensor) -> tuple[Any, Any]:
    """Token grid (rows, cols) for an image, as the reference does it: round(sqrt(N / a)), round(sqrt(N * a))."""
    if isinstance(num_tokens, torch.Tensor):  # a graph input (dynamic ONNX): tensor arithmetic only, no Python floats
        n = num_tokens.to(torch.float32)
        return (n * height / width).sqrt().round().long(), (n * width / height).sqrt().round().long()
    aspect = width / height
    return round((num_tokens / aspect) ** 0.5), round((num_tokens * aspect) ** 0.5)

