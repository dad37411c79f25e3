"""MoGe-2: ViT encoder + UV-conditioned conv neck + point/mask/normal heads + CLS-token metric-scale MLP.

`forward` is the network (what ONNX/TensorRT run); `infer` adds the reference post-processing (focal/shift recovery,
metric scale, mask) for the PyTorch path. `onnx_compatible_mode` trades the two non-exportable resizes (antialiased
input downscale, scale-factor positional-embedding resize) for exportable ones.

MoGe-3 checkpoints share this network (same encoder, neck, heads, scale MLP and state-dict keys; the points head
predicts (x/z, y/z, log z), i.e. the `exp` remap) and add a sparse 3-D refiner that needs FlexGEMM/Triton and cannot
be exported. A MoGe-3 `model_config` is recognised by `refiner` / `refiner_depth_resolution`, or by the absence of
`remap_output` (MoGe-2 files always name theirs); it runs here as its base path (refine steps 0).
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgeo_ros.geometry.uv import normalized_view_plane_uv_torch
from mgeo_ros.model.encoder import DINOv2Encoder
from mgeo_ros.model.modules import MLP, ConvStack
from mgeo_ros.model.vit import grid_from_tokens

HEADS = ('points_head', 'normal_head', 'mask_head')
CONFIG_KEYS = {'encoder', 'neck', 'points_head', 'mask_head', 'normal_head', 'scale_head', 'remap_output',
               'num_tokens_range'}
MOGE3_KEYS = ('refiner', 'refiner_depth_resolution')
REFINER_PREFIX = 'refiner.'
REFINER_UNAVAILABLE = ('the sparse 3-D refiner needs FlexGEMM/Triton kernels and cannot run or be exported here, so '
                       'MoGe-3 runs its base path (refine_steps 0)')
log = logging.getLogger('mgeo_ros.model')


def model_family(config: dict[str, Any]) -> str:
    """'moge-3' for a MoGe-3 model_config (refiner keys, or no `remap_output`), else 'moge-2'."""
    if any(k in config for k in MOGE3_KEYS) or 'remap_output' not in config:
        return 'moge-3'
    return 'moge-2'


class MoGeModel(nn.Module):
    """Built from a `model_config` dict (official layout); a head exists only if its key is in the config."""

    def __init__(self, encoder: dict, neck: dict, points_head: dict | None = None, mask_head: dict | None = None,
                 normal_head: dict | None = None, scale_head: dict | None = None, remap_output: str | None = 'linear',
                 num_tokens_range: list[int] | tuple[int, int] = (1200, 3600), refiner: dict | None = None,
                 refiner_depth_resolution: float | None = None, **ignored: Any):
        """remap_output None (or a `refiner` / `refiner_depth_resolution` key) makes a MoGe-3 model: `exp` remap,
        refiner settings kept in the config but not built (see the module docstring)."""
        super().__init__()
        if ignored:
            warnings.warn(f'model_config: ignoring unknown keys {sorted(ignored)}', stacklevel=2)
        extra = {k: v for k, v in (('refiner', refiner), ('refiner_depth_resolution', refiner_depth_resolution))
                 if v is not None}
        self.family = 'moge-3' if extra or remap_output is None else 'moge-2'
        if self.family == 'moge-3':
            remap_output = 'exp'  # MoGe-3's points head predicts (x/z, y/z, log z)
        if remap_output not in ('linear', 'exp', 'sinh', 'sinh_exp'):
            raise ValueError(f'model_config.remap_output: unknown value {remap_output!r}')
        fields = dict(encoder=encoder, neck=neck, points_head=points_head, mask_head=mask_head,
                      normal_head=normal_head, scale_head=scale_head,
                      remap_output=None if self.family == 'moge-3' else remap_output,
                      num_tokens_range=list(num_tokens_range), **extra)
        self.config: dict[str, Any] = copy.deepcopy({k: v for k, v in fields.items() if v is not None})
        self.remap_output = remap_output
        self._refiner_skip_logged = False
        self.refiner_tensors_set_aside = 0  # how many `refiner.*` tensors the loaded file had (not run here)
        self.num_tokens_range = list(num_tokens_range)
        self.encoder = DINOv2Encoder(**encoder)
        self.neck = ConvStack(**neck)
        for name, cfg in (('points_head', points_head), ('mask_head', mask_head), ('normal_head', normal_head)):
            if cfg is not None:
                setattr(self, name, ConvStack(**cfg))
        if scale_head is not None:
            self.scale_head = MLP(**scale_head)
        self._onnx_compatible_mode = False

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def onnx_compatible_mode(self) -> bool:
        return self._onnx_compatible_mode

    @onnx_compatible_mode.setter
    def onnx_compatible_mode(self, value: bool) -> None:
        self._onnx_compatible_mode = bool(value)
        self.encoder.onnx_compatible_mode = bool(value)

    # -- network ----------------------------------------------------------------------------------------------
    def _remap_points(self, p: torch.Tensor) -> torch.Tensor:
        if self.remap_output == 'exp':
            xy, z = p.split([2, 1], dim=-1)
            z = torch.exp(z)
            return torch.cat([xy * z, z], dim=-1)
        if self.remap_output == 'sinh':
            return torch.sinh(p)
        if self.remap_output == 'sinh_exp':
            xy, z = p.split([2, 1], dim=-1)
            return torch.cat([torch.sinh(xy), torch.exp(z)], dim=-1)
        return p

    def note_refine_steps(self, refine_steps: int) -> None:
        """The base path runs whatever `refine_steps` asks; the first request for refinement is logged once."""
        if refine_steps and refine_steps > 0 and not self._refiner_skip_logged:
            self._refiner_skip_logged = True
            why = REFINER_UNAVAILABLE if self.family == 'moge-3' else 'a MoGe-2 model has no refiner'
            log.warning('refine_steps=%d asked for: refiner skipped (%s)', refine_steps, why)

    def forward(self, image: torch.Tensor, num_tokens: int | torch.Tensor = 1200,
                refine_steps: int = 0) -> dict[str, torch.Tensor]:
        """image [B,3,H,W] RGB in [0,1] -> points [B,H,W,3], mask [B,H,W] (probability), normal [B,H,W,3]
        (unit; if the head exists), metric_scale [B]. `refine_steps` > 0 (MoGe-3's refiner) runs the base path and
        says so once in the log."""
        self.note_refine_steps(refine_steps)
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f'image: expected [B,3,H,W], got {tuple(image.shape)}')
        b, _, h, w = image.shape
        aspect = w / h
        rows, cols = grid_from_tokens(h, w, num_tokens)
        features, cls_token = self.encoder(image, rows, cols)

        levels: list[torch.Tensor] = []
        for level in range(len(self.neck.res_blocks)):
            s = 2 ** level
            if isinstance(num_tokens, torch.Tensor):  # dynamic graph: every size is a tensor
                uv = _uv_grid_traced(cols * s, rows * s, image)
            else:
                uv = normalized_view_plane_uv_torch(cols * s, rows * s, aspect_ratio=aspect, dtype=image.dtype,
                                                    device=image.device)
            uv = uv.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)
            levels.append(torch.cat([features, uv.to(features.dtype)], dim=1) if level == 0 else uv)
        neck = self.neck(levels)

        out: dict[str, torch.Tensor] = {}
        for name in HEADS:
            if hasattr(self, name):
                y = getattr(self, name)(neck)[-1]
                out[name] = F.interpolate(y, (h, w), mode='bilinear', align_corners=False)
        result: dict[str, torch.Tensor] = {}
        if 'points_head' in out:
            result['points'] = self._remap_points(out['points_head'].permute(0, 2, 3, 1))
        if 'normal_head' in out:
            result['normal'] = F.normalize(out['normal_head'].permute(0, 2, 3, 1), dim=-1)
        if 'mask_head' in out:
            result['mask'] = out['mask_head'].squeeze(1).sigmoid()
        if hasattr(self, 'scale_head'):
            result['metric_scale'] = self.scale_head(cls_token).squeeze(1).exp()
        return result

    # -- reference post-processing ------------------------------------------------------------------------------
    @torch.inference_mode()
    def infer(self, image: torch.Tensor, num_tokens: int | None = 1200, resolution_level: int = 9,
              force_projection: bool = True, apply_mask: bool = True, fov_x: float | torch.Tensor | None = None,
              use_fp16: bool = False, refine_steps: int = 0) -> dict[str, torch.Tensor]:
        """image [3,H,W] or [B,3,H,W] in [0,1] -> metric `points` [H,W,3] (m), `depth` [H,W] (m, z), `mask` bool,
        `intrinsics` [3,3] normalised (fx, fy relative to width/height, centre 0.5), `normal` [H,W,3].

        `fov_x` is the known horizontal field of view in DEGREES (as in the reference); None recovers the focal.
        `num_tokens=None` uses `resolution_level` (0..9) within `num_tokens_range`. Outside the mask points and
        depth are +inf and normals 0. `refine_steps` as in `forward`.
        """
        from mgeo_ros.geometry import recover_focal_shift

        squeeze = image.dim() == 3
        if squeeze:
            image = image.unsqueeze(0)
        image = image.to(dtype=self.dtype, device=self.device)
        h, w = image.shape[-2:]
        aspect = w / h
        if num_tokens is None:
            lo, hi = self.num_tokens_range
            num_tokens = int(lo + resolution_level / 9 * (hi - lo))

        with torch.autocast(device_type=self.device.type, dtype=torch.float16,
                            enabled=use_fp16 and self.dtype != torch.float16):
            self.note_refine_steps(refine_steps)  # the base path runs either way
            raw = self.forward(image, num_tokens=num_tokens)
        raw = {k: v.float() for k, v in raw.items()}
        points, normal, mask, scale = (raw.get(k) for k in ('points', 'normal', 'mask', 'metric_scale'))
        valid = mask > 0.5 if mask is not None else None

        result: dict[str, torch.Tensor] = {}
        depth = None
        if points is not None:
            if fov_x is None:
                focal, shift = recover_focal_shift(points, valid)
            else:
                fov = torch.as_tensor(fov_x, dtype=points.dtype, device=points.device)
                focal = aspect / math.sqrt(1 + aspect ** 2) / torch.tan(torch.deg2rad(fov) / 2)
                if focal.ndim == 0:
                    focal = focal[None].expand(points.shape[0])
                _, shift = recover_focal_shift(points, valid, focal=focal)
            focal = torch.as_tensor(focal, dtype=points.dtype, device=points.device).reshape(-1)
            shift = torch.as_tensor(shift, dtype=points.dtype, device=points.device).reshape(-1)
            fx = focal / 2 * math.sqrt(1 + aspect ** 2) / aspect
            fy = focal / 2 * math.sqrt(1 + aspect ** 2)
            intrinsics = normalized_intrinsics(fx, fy)
            points = points.clone()
            points[..., 2] += shift[:, None, None]
            if valid is not None:
                valid = valid & (points[..., 2] > 0)
            depth = points[..., 2].clone()
            if force_projection:
                points = points_from_depth(depth, fx, fy)
            result['intrinsics'] = intrinsics
        if scale is not None:
            if points is not None:
                points = points * scale[:, None, None, None]
            if depth is not None:
                depth = depth * scale[:, None, None]
        if apply_mask and valid is not None:
            if points is not None:
                points = torch.where(valid[..., None], points, torch.inf)
            if depth is not None:
                depth = torch.where(valid, depth, torch.inf)
            if normal is not None:
                normal = torch.where(valid[..., None], normal, torch.zeros_like(normal))
        for key, value in (('points', points), ('depth', depth), ('mask', valid), ('normal', normal)):
            if value is not None:
                result[key] = value
        if squeeze:
            result = {k: v.squeeze(0) for k, v in result.items()}
        return result


def _uv_grid_traced(width: torch.Tensor, height: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """`normalized_view_plane_uv_torch` for an exported dynamic graph: the grid size and the image aspect ratio are
    tensors (no Python floats or square roots, which neither ONNX exporter can trace through a dynamic size)."""
    # the image width and height as float tensors, by counting (a reduction both exporters trace through)
    aspect = torch.ones_like(image[0, 0, 0, :]).sum() / torch.ones_like(image[0, 0, :, 0]).sum()
    diagonal = (1.0 + aspect * aspect).sqrt()
    u = ((torch.arange(width, device=image.device).to(image.dtype) * 2 + 1) / width.to(image.dtype) - 1)
    v = ((torch.arange(height, device=image.device).to(image.dtype) * 2 + 1) / height.to(image.dtype) - 1)
    vv, uu = torch.meshgrid(v / diagonal, u * (aspect / diagonal), indexing='ij')
    return torch.stack([uu, vv], dim=-1)


def normalized_intrinsics(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """[B,3,3] MoGe-normalised K (focals relative to width/height, principal point at the centre 0.5, 0.5)."""
    k = torch.zeros(fx.shape[0], 3, 3, dtype=fx.dtype, device=fx.device)
    k[:, 0, 0], k[:, 1, 1] = fx, fy
    k[:, 0, 2] = k[:, 1, 2] = 0.5
    k[:, 2, 2] = 1.0
    return k


def points_from_depth(depth: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Unproject [B,H,W] z-depth with normalised focals; pixel centres at ((j+0.5)/W, (i+0.5)/H)."""
    _, h, w = depth.shape
    u = (torch.arange(w, dtype=depth.dtype, device=depth.device) + 0.5) / w - 0.5
    v = (torch.arange(h, dtype=depth.dtype, device=depth.device) + 0.5) / h - 0.5
    x = depth * (u[None, None, :] / fx[:, None, None])
    y = depth * (v[None, :, None] / fy[:, None, None])
    return torch.stack([x, y, depth], dim=-1)
