"""MoGe-2 training losses (moge2_reference.md §6), batched over [B, H, W, ...] torch tensors.

Every loss returns a per-instance tensor of shape [B] (so per-dataset weights can be applied per sample) plus,
where useful, side outputs. Points are in the camera optical frame (x right, y down, z forward); the prediction is
affine-invariant (unknown scale and z-shift), the ground truth is in metres (or up to scale for non-metric data).
Alignment uses the exact truncated-L1 (ROE) solvers of `mgeo_ros.geometry.alignment`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    'AlignmentSettings', 'LABEL_TYPE_WEIGHTS', 'LossOutput', 'affine_invariant_global_loss',
    'affine_invariant_local_loss', 'edge_loss', 'gt_normals', 'loss_weights_for', 'mask_bce_loss',
    'metric_scale_loss', 'moge_losses', 'normal_angle_loss', 'smooth_l1',
]

# Per label type (MoGe-2 v2 recipe, §6): A = synthetic dense, B = dense real, C = real or sparse.
LABEL_TYPE_WEIGHTS: dict[str, dict[str, float]] = {
    'A': {'global': 1.0, 'local_4': 1.0, 'local_16': 1.0, 'local_64': 1.0, 'edge': 1.0, 'normal': 0.1,
          'metric_scale': 0.1, 'mask': 0.1},
    'B': {'global': 1.0, 'local_4': 1.0, 'local_16': 1.0, 'edge': 1.0, 'normal': 0.1, 'metric_scale': 0.1,
          'mask': 0.1},
    'C': {'global': 1.0, 'local_4': 1.0, 'metric_scale': 0.1, 'mask': 0.1},
}


def loss_weights_for(label_type: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The term -> weight table for a dataset of `label_type` ('A'|'B'|'C'), with `overrides` applied on top."""
    if label_type not in LABEL_TYPE_WEIGHTS:
        raise ValueError(f'label_type must be one of {sorted(LABEL_TYPE_WEIGHTS)}, got {label_type!r}')
    weights = dict(LABEL_TYPE_WEIGHTS[label_type])
    weights.update(overrides or {})
    return weights


def smooth_l1(err: torch.Tensor, beta: float) -> torch.Tensor:
    """Huber-like penalty of a non-negative error e: 0.5·e²/β when e < β, else e − 0.5·β (β = 0 → plain e)."""
    if beta <= 0:
        return err
    return torch.where(err < beta, 0.5 * err.square() / beta, err - 0.5 * beta)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(dim=dims) / m.sum(dim=dims).clamp_min(1.0)


def _angle_between(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle (rad) between vectors along the last dim; atan2(|a×b|, a·b) is accurate near 0 and π, unlike acos."""
    cross = torch.linalg.cross(a, b, dim=-1).norm(dim=-1)
    dot = (a * b).sum(dim=-1)
    return torch.atan2(cross + eps, dot)


def affine_invariant_global_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
                                 align_resolution: int = 48, trunc: float = 1.0, weight_clamp: float = 10.0,
                                 max_anchors: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global affine-invariant point loss.

    1. Masked nearest-resize pred and gt to align_resolution² samples.
    2. (s, t_z) = argmin Σ_i Σ_c min(trunc, w_i·|s·p_ic + t_c − g_ic|), t = (0, 0, t_z), w_i = 1/max(g_z,i, 1e-2)
       (exact ROE, truncation per component as in MoGe).
    3. pred' = s·pred + (0, 0, t_z); per-pixel weight w = 1/g_z clamped to ≤ weight_clamp·mean_mask(w).
    4. loss_b = mean over valid pixels of Σ_xyz |pred' − gt|·w.

    pred, gt: [B,H,W,3]; mask: [B,H,W] bool (valid gt). max_anchors: None = exact ROE (every sample tried as the
    shift anchor, O(N² log N)); an int tries an even subset (cheap on CPU, near-exact).
    Returns (loss [B], scale s [B] (with gradient), valid [B] bool = the ROE found a positive scale). Where it did
    not, s = Σw·g_z / Σw·p_z and t_z = 0 (a fallback that keeps an untrained model learning); an instance without
    valid pixels has loss 0.
    """
    from mgeo_ros.geometry.alignment import align_points_scale_z_shift, masked_nearest_resize

    mask = mask & torch.isfinite(gt).all(dim=-1) & (gt[..., 2] > 0)
    gt = torch.where(mask[..., None], gt, torch.ones_like(gt))
    size = (align_resolution, align_resolution)
    (pred_small, gt_small), mask_small = masked_nearest_resize((pred, gt), mask, size)
    b = pred.shape[0]
    p = pred_small.reshape(b, -1, 3)
    g = gt_small.reshape(b, -1, 3)
    m = mask_small.reshape(b, -1)
    w_align = torch.where(m, 1.0 / g[..., 2].clamp_min(1e-2), torch.zeros_like(g[..., 2]))
    scale, shift_z = align_points_scale_z_shift(p.float(), g.float(), w_align.float(), trunc,
                                                max_anchors=max_anchors)
    valid = (scale > 0) & torch.isfinite(scale) & (m.sum(dim=-1) >= 2)
    # Fallback where the ROE optimum is not a positive scale (typical for an untrained model whose points carry no
    # structure yet): the ratio of weighted mean depths, no shift, so the instance still yields a gradient.
    ratio = (w_align * g[..., 2]).sum(-1) / (w_align * p[..., 2].float()).sum(-1).clamp_min(1e-12)
    ratio = torch.where(torch.isfinite(ratio) & (ratio > 0), ratio, torch.ones_like(ratio))
    scale = torch.where(valid, scale, ratio.to(scale.dtype))
    shift_z = torch.where(valid, shift_z, torch.zeros_like(shift_z))

    zeros = torch.zeros_like(shift_z)
    shift = torch.stack([zeros, zeros, shift_z], dim=-1).view(b, 1, 1, 3).to(pred.dtype)
    aligned = scale.view(b, 1, 1, 1).to(pred.dtype) * pred + shift
    w = 1.0 / gt[..., 2].clamp_min(1e-6)
    w_mean = _masked_mean(w, mask, (1, 2))
    w = torch.minimum(w, weight_clamp * w_mean.view(b, 1, 1))
    err = ((aligned - gt).abs().sum(dim=-1) * w)
    loss = _masked_mean(err, mask, (1, 2))
    loss = torch.where(mask.flatten(1).any(dim=1), loss, torch.zeros_like(loss))
    return loss, scale, valid


@dataclass
class _Patches:
    index: torch.Tensor      # [B, P, K] flat pixel index of each patch sample
    inside: torch.Tensor     # [B, P, K] bool: sample within the image window
    anchor: torch.Tensor     # [B, P] flat pixel index of the anchor


def _sample_patches(mask: torch.Tensor, num_patches: int, radius_px: int, samples_per_side: int,
                    generator: torch.Generator | None) -> _Patches:
    """Anchors drawn uniformly among valid pixels; each patch is a samples_per_side² grid over the (2r+1)² window."""
    b, h, w = mask.shape
    device = mask.device
    probs = mask.flatten(1).float()
    has_any = probs.sum(dim=1) > 0
    probs = torch.where(has_any[:, None], probs, torch.ones_like(probs))
    anchor = torch.multinomial(probs.cpu(), num_patches, replacement=True, generator=generator).to(device)
    ay, ax = anchor // w, anchor % w
    offs = torch.linspace(-radius_px, radius_px, samples_per_side, device=device).round().long()
    oy, ox = torch.meshgrid(offs, offs, indexing='ij')
    py = ay[..., None] + oy.reshape(1, 1, -1)
    px = ax[..., None] + ox.reshape(1, 1, -1)
    inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    index = py.clamp(0, h - 1) * w + px.clamp(0, w - 1)
    return _Patches(index=index, inside=inside, anchor=anchor)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, C] gathered at index [B, P, K] -> [B, P, K, C]."""
    b, p, k = index.shape
    flat = index.reshape(b, p * k, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, flat).reshape(b, p, k, x.shape[-1])


def affine_invariant_local_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, focal: torch.Tensor,
                                global_scale: torch.Tensor, level: int, num_patches: int | None = None,
                                align_resolution: int | None = None, min_points: int = 32, trunc: float = 1.0,
                                generator: torch.Generator | None = None,
                                max_anchors: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ("spherical patch") affine-invariant loss at one level.

    Anchor a is drawn among valid pixels; its patch = pixels within the 2-D window of radius ⌈0.5/level·diag_px⌉
    (sampled on an align_resolution² grid = nearest resize) AND within 3-D distance r = 0.5/level/focal·z_a of the
    gt anchor, focal = 1/√(1/fx² + 1/fy²) with fx, fy normalized by width/height. A patch with ≥ min_points samples
    (relaxed to 30% of the window's samples on coarse grids) is aligned by ROE with a scale and an xyz shift,
    weights 1/r and truncation per component: (s, t) = argmin Σ_i Σ_c min(trunc, |s·p_ic + t_c − g_ic|/r);
    it is kept only if 0.1 < s/s_global < 10. Patch loss = mean_i Σ_xyz |s·p_i + t − g_i| / max(g_z,i, 0.1·H(g_z)),
    H = harmonic mean of the patch's gt depth; loss_b = Σ_patches loss / num_patches.

    Levels/patch counts of MoGe-2: 4/16/64 with 16/256/4096 patches and align resolution 24/12/6. On a small image
    the window can be under 5×5 pixels; then the level contributes 0, and patches with too few valid samples are
    dropped (fewer patches are accepted; the sum is still divided by num_patches).
    focal: [B]; global_scale: [B] (from the global loss, detached here); max_anchors as in the global loss.
    Returns (loss [B], kept patches [B]).
    """
    from mgeo_ros.geometry.alignment import align_points_scale_xyz_shift

    defaults = {4: (16, 24), 16: (256, 12), 64: (4096, 6)}
    d_patches, d_res = defaults.get(level, (level * level, max(4, 96 // level)))
    num_patches = d_patches if num_patches is None else num_patches
    align_resolution = d_res if align_resolution is None else align_resolution

    b, h, w, _ = pred.shape
    mask = mask & torch.isfinite(gt).all(dim=-1) & (gt[..., 2] > 0)
    gt = torch.where(mask[..., None], gt, torch.ones_like(gt))
    radius_px = max(1, math.ceil(0.5 / level * math.hypot(h, w)))
    per_side = min(align_resolution, 2 * radius_px + 1)
    zero = pred.sum(dim=(1, 2, 3)) * 0.0
    # The ball inside the square window holds ~π/4 of its samples, so on coarse grids the minimum is relaxed to 30%
    # of the window; windows under 5×5 samples are too small to align (the level is skipped on small images).
    min_points = min(min_points, math.ceil(0.3 * per_side * per_side))
    if per_side < 5 or num_patches <= 0:
        return zero, torch.zeros(b, dtype=torch.long, device=pred.device)

    patches = _sample_patches(mask, num_patches, radius_px, per_side, generator)
    p = _gather(pred.reshape(b, h * w, 3), patches.index)
    g = _gather(gt.reshape(b, h * w, 3), patches.index)
    m = _gather(mask.reshape(b, h * w, 1), patches.index)[..., 0] & patches.inside
    g_anchor = torch.gather(gt.reshape(b, h * w, 3), 1, patches.anchor[..., None].expand(-1, -1, 3))
    anchor_ok = torch.gather(mask.reshape(b, h * w), 1, patches.anchor)
    r3 = (0.5 / level / focal.view(b, 1).to(gt.dtype)) * g_anchor[..., 2]           # [B, P]
    m = m & ((g - g_anchor[:, :, None, :]).norm(dim=-1) <= r3[..., None])
    enough = (m.sum(dim=-1) >= min_points) & anchor_ok

    w_align = torch.where(m, 1.0 / r3[..., None].clamp_min(1e-9), torch.zeros_like(r3[..., None]))
    s, t = align_points_scale_xyz_shift(p.float(), g.float(), w_align.float(), trunc, max_anchors=max_anchors)
    ratio = s / global_scale.detach().view(b, 1).clamp_min(1e-12)
    keep = enough & (s > 0) & (ratio > 0.1) & (ratio < 10) & torch.isfinite(s)
    s = torch.where(keep, s, torch.zeros_like(s))
    t = torch.where(keep[..., None], t, torch.zeros_like(t))
    aligned = s[..., None, None].to(p.dtype) * p + t[:, :, None, :].to(p.dtype)
    gz = g[..., 2]
    harmonic = m.sum(dim=-1).clamp_min(1) / torch.where(m, 1.0 / gz, torch.zeros_like(gz)).sum(dim=-1).clamp_min(1e-12)
    denom = torch.maximum(gz, 0.1 * harmonic[..., None])
    err = (aligned - g).abs().sum(dim=-1) / denom
    patch_loss = _masked_mean(err, m, (2,))
    patch_loss = torch.where(keep, patch_loss, torch.zeros_like(patch_loss))
    return patch_loss.sum(dim=1) / num_patches + zero, keep.sum(dim=1)


def edge_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, beta_deg: float = 3.0,
              clamp_deg: tuple[float, float] = (0.1, 90.0)) -> torch.Tensor:
    """Edge/angle term: the angle between predicted and gt finite-difference vectors along rows and columns.

    θ = ∠(p[i+1]−p[i], g[i+1]−g[i]) for horizontal and vertical neighbours where both gt pixels are valid;
    θ clamped to [0.1°, 90°], penalty smooth_l1(θ, β = 3°) (rad); loss_b = ½(mean_horizontal + mean_vertical).
    Angles are invariant to the unknown scale and shift, so no alignment is needed. Returns [B].
    """
    lo, hi = math.radians(clamp_deg[0]), math.radians(clamp_deg[1])
    beta = math.radians(beta_deg)
    terms = []
    for dim in (1, 2):
        n = pred.shape[dim] - 1
        dp = pred.narrow(dim, 1, n) - pred.narrow(dim, 0, n)
        dg = gt.narrow(dim, 1, n) - gt.narrow(dim, 0, n)
        valid = mask.narrow(dim, 1, n) & mask.narrow(dim, 0, n)
        dg = torch.where(valid[..., None], dg, torch.ones_like(dg))
        theta = _angle_between(dp.float(), dg.float()).clamp(lo, hi)
        terms.append(_masked_mean(smooth_l1(theta, beta), valid, (1, 2)))
    return 0.5 * (terms[0] + terms[1])


def normal_angle_loss(pred_normal: torch.Tensor, gt_normal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normal-map loss: mean over valid pixels of ∠(n̂, n)² (rad²). pred/gt [B,H,W,3], mask [B,H,W]. Returns [B]."""
    valid = mask & torch.isfinite(gt_normal).all(dim=-1)
    gt_normal = torch.where(valid[..., None], gt_normal, torch.ones_like(gt_normal))
    theta = _angle_between(pred_normal.float(), gt_normal.float())
    return _masked_mean(theta.square(), valid, (1, 2))


def mask_bce_loss(pred_prob: torch.Tensor, gt_valid: torch.Tensor, counted: torch.Tensor | None = None,
                  eps: float = 1e-6) -> torch.Tensor:
    """Mask BCE: mean over counted pixels of −[y·log p + (1−y)·log(1−p)], y = gt valid, p = predicted probability.

    `counted` restricts the loss to pixels whose validity is known (finite gt or known-infinite sky); default all.
    Computed in float32 with p clamped to [eps, 1−eps]. Returns [B].
    """
    p = pred_prob.float().clamp(eps, 1.0 - eps)
    y = gt_valid.float()
    bce = -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p))
    if counted is None:
        counted = torch.ones_like(gt_valid, dtype=torch.bool)
    return _masked_mean(bce, counted, (1, 2))


def metric_scale_loss(pred_scale: torch.Tensor, aligned_scale: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Metric-scale loss: (log ŝ − log s_aligned)², s_aligned detached, so the scale head is trained decoupled from
    the geometry (no gradient flows into the point head from it). Zero where `valid` is False (alignment failed or
    non-metric data). Returns [B]."""
    target = aligned_scale.detach().float().clamp_min(1e-12)
    err = (torch.log(pred_scale.float().clamp_min(1e-12)) - torch.log(target)).square()
    return torch.where(valid, err, torch.zeros_like(err))


def gt_normals(gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals from a gt point map by central differences (pointing toward the camera, n_z < 0 for a wall).

    n = normalize((P[i, j+1] − P[i, j−1]) × (P[i−1, j] − P[i+1, j])); valid where the 4 neighbours are valid.
    Returns (normals [B,H,W,3], valid [B,H,W]); border pixels are invalid.
    """
    b, h, w, _ = gt.shape
    normals = torch.zeros_like(gt)
    valid = torch.zeros_like(mask)
    if h < 3 or w < 3:
        return normals, valid
    dx = gt[:, 1:-1, 2:] - gt[:, 1:-1, :-2]
    dy = gt[:, :-2, 1:-1] - gt[:, 2:, 1:-1]
    n = torch.linalg.cross(dx, dy, dim=-1)
    v = mask[:, 1:-1, 2:] & mask[:, 1:-1, :-2] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1] & mask[:, 1:-1, 1:-1]
    norm = n.norm(dim=-1, keepdim=True)
    v = v & (norm[..., 0] > 0) & torch.isfinite(norm[..., 0])
    normals[:, 1:-1, 1:-1] = torch.where(v[..., None], n / norm.clamp_min(1e-12), torch.zeros_like(n))
    valid[:, 1:-1, 1:-1] = v
    return normals, valid


@dataclass
class LossOutput:
    """total: scalar to back-propagate; terms: per-term batch means (unweighted, detached, for logs);
    scale: the global alignment scale [B] (metric-scale target, detached)."""

    total: torch.Tensor
    terms: dict[str, float]
    scale: torch.Tensor


@dataclass
class AlignmentSettings:
    """Cost knobs of the ROE alignments. MoGe-2 exact: global 48, local 24/12/6, max_anchors None (GPU)."""

    global_resolution: int = 48
    local_resolution: dict[int, int] | None = None     # level -> samples per patch side (default 24/12/6)
    local_patches: dict[int, int] | None = None        # level -> patches (default 16/256/4096)
    max_anchors: int | None = None


def moge_losses(output: dict[str, torch.Tensor], gt_points: torch.Tensor, gt_mask: torch.Tensor, focal: torch.Tensor,
                weights: list[dict[str, float]], metric: torch.Tensor, settings: AlignmentSettings | None = None,
                generator: torch.Generator | None = None) -> LossOutput:
    """All MoGe-2 terms for one batch; `weights[b]` is the per-instance term table (see `loss_weights_for`).

    output: the model's dict ('points' [B,H,W,3], optional 'mask' [B,H,W] probabilities, 'normal', 'metric_scale').
    gt_points: [B,H,W,3] metres (NaN invalid); gt_mask: [B,H,W] bool; focal: [B] (see the local loss);
    metric: [B] bool, scale supervised only where True. settings: alignment cost knobs.
    total = mean_b Σ_term weight[b][term]·term_b.
    """
    settings = settings or AlignmentSettings()
    pred = output['points'].float()
    b = pred.shape[0]
    gt_mask = gt_mask & torch.isfinite(gt_points).all(dim=-1)
    gt_points = torch.where(gt_mask[..., None], gt_points, torch.ones_like(gt_points)).float()
    per_term: dict[str, torch.Tensor] = {}

    def wanted(term: str) -> bool:
        return any(wt.get(term, 0.0) > 0 for wt in weights)

    global_loss, scale, valid = affine_invariant_global_loss(pred, gt_points, gt_mask,
                                                             align_resolution=settings.global_resolution,
                                                             max_anchors=settings.max_anchors)
    per_term['global'] = global_loss
    for level in (4, 16, 64):
        name = f'local_{level}'
        if wanted(name):
            count = (settings.local_patches or {}).get(level)
            res = (settings.local_resolution or {}).get(level)
            per_term[name], _ = affine_invariant_local_loss(pred, gt_points, gt_mask, focal, scale.detach(), level,
                                                            num_patches=count, align_resolution=res,
                                                            generator=generator, max_anchors=settings.max_anchors)
    if wanted('edge'):
        per_term['edge'] = edge_loss(pred, gt_points, gt_mask)
    if wanted('normal') and 'normal' in output:
        n_gt, n_valid = gt_normals(gt_points, gt_mask)
        per_term['normal'] = normal_angle_loss(output['normal'], n_gt, n_valid)
    if wanted('mask') and 'mask' in output:
        per_term['mask'] = mask_bce_loss(output['mask'], gt_mask)
    if wanted('metric_scale') and 'metric_scale' in output:
        per_term['metric_scale'] = metric_scale_loss(output['metric_scale'].view(b), scale, valid & metric)

    weight_table = torch.tensor([[wt.get(k, 0.0) for k in per_term] for wt in weights], dtype=torch.float32,
                                device=pred.device)                                              # [B, T]
    stacked = torch.stack([per_term[k].float() for k in per_term], dim=1)                       # [B, T]
    total = (weight_table * stacked).sum(dim=1).mean()
    terms = {k: float(v.detach().mean()) for k, v in per_term.items()}
    return LossOutput(total=total, terms=terms, scale=scale.detach())
