"""Exact robust (truncated-L1, "ROE") scale / shift alignment, as MoGe uses in its losses and metrics.

The core problem is 1-D: min_a sum_i min(T_i, w_i |a x_i - y_i|). Each term is a truncated V with its tip at
A_i = y_i / x_i, so the objective is piecewise linear and its global minimum lies at one of the tips. We evaluate the
objective at every tip at once with sorted prefix sums (O(n log n) per problem) and take the best; without a
truncation the same code gives the weighted median. Affine variants pin the shift by making one sample ("anchor")
fit exactly, solve the 1-D problem for every anchor, and keep the best anchor: O(N^2 log N) for N samples, so on a
CPU pass `max_anchors` (an even subset of anchors; exact on clean data, near-exact with outliers) at 48x48 and up.
Components that carry no shift (x, y of a z-shift fit) are sorted once per item instead of once per anchor.

The search runs without gradients in float64; the returned scale/shift are then recomputed from the two chosen
sample indices with gradients, so losses can back-propagate through them (MoGe's scheme).

Every public function accepts torch tensors (batched over leading dims, device kept) or numpy arrays (then it
returns numpy arrays / floats). Weight 0 means "ignore this sample". torch is imported lazily.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

__all__ = ['align_scale', 'align_points_scale', 'align_points_scale_z_shift', 'align_points_scale_xyz_shift',
           'align_points_xyz_shift', 'align_points_z_shift', 'align_depth_scale', 'align_depth_affine',
           'align_affine_lstsq', 'masked_nearest_resize', 'roe_solve']

_CHUNK_ELEMENTS = 1 << 20  # rows*n per solver chunk: bounds peak memory to ~300 MB (float64)


# ---------------------------------------------------------------------------------------------------------------
# numpy <-> torch plumbing
# ---------------------------------------------------------------------------------------------------------------
def _torch():
    import torch
    return torch


def _is_numpy(*xs: Any) -> bool:
    return any(isinstance(x, np.ndarray) for x in xs) and not any(_is_tensor(x) for x in xs)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith('torch') and hasattr(x, 'detach')


def _to_torch(x: Any, like=None):
    torch = _torch()
    if x is None or isinstance(x, (int, float)):
        return x
    if _is_tensor(x):
        return x
    t = torch.as_tensor(np.asarray(x))
    if like is not None:
        t = t.to(device=like.device)
    return t


def _to_numpy(x: Any):
    if isinstance(x, tuple):
        return tuple(_to_numpy(v) for v in x)
    if _is_tensor(x):
        a = x.detach().cpu().numpy()
        return a.item() if a.ndim == 0 else a
    return x


def _entry(fn):
    """Run a torch implementation on numpy inputs too: convert in, convert out."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_numpy(*args, *kwargs.values()):
            targs = [_to_torch(a) if isinstance(a, np.ndarray) else a for a in args]
            tkw = {k: (_to_torch(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
            return _to_numpy(fn(*targs, **tkw))
        return fn(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------------------------------------------------------
# the exact 1-D solver
# ---------------------------------------------------------------------------------------------------------------
class _Breakpoints:
    """The piecewise-linear objective f(a) = sum_i min(T_i, w_i|a x_i - y_i|) of [M, n] float64 rows, as breakpoints.

    f(a) = a*(2 S_A[wx] - S_B[wx] - S_C[wx]) - (2 S_A[wy] - S_B[wy] - S_C[wy]) + S_C[T] + S[T] - S_B[T] + const
    where S_K[v] sums v over the samples whose breakpoint K_i (tip A_i = y_i/x_i, window ends B_i <= A_i <= C_i)
    lies below a. So f at any a needs only the prefix sums of per-breakpoint increments in sorted-key order. Ties
    do not matter: each tied term is worth the same on both sides of its breakpoint.
    """

    def __init__(self, x, y, w, trunc):
        torch = _torch()
        sign = torch.where(x < 0, -1.0, 1.0).to(x.dtype)
        x, y = x * sign, y * sign
        finite = torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(w)
        zero = torch.zeros_like(x)
        w = torch.where(finite & (w > 0), w, zero)
        x, y = torch.where(finite, x, zero), torch.where(finite, y, zero)
        live = (w > 0) & (x > 0)                   # samples whose term depends on a
        dead = (w > 0) & ~live                     # x == 0: constant term min(T, w|y|)
        inf = torch.full_like(x, math.inf)
        wx, wy = torch.where(live, w * x, zero), torch.where(live, w * y, zero)
        self.tips = torch.where(live, y / torch.where(live, x, torch.ones_like(x)), inf)
        self.live = live
        if trunc is None:
            self.offset = (w * y.abs() * dead).sum(-1, keepdim=True)
            self.keys = self.tips
            self.incs = torch.stack([2 * wx, 2 * wy], dim=-1)
            self.base = torch.stack([wx.sum(-1), wy.sum(-1)], dim=-1)[:, None, :]   # all B_i = -inf, C_i = +inf
        else:
            T = torch.broadcast_to(torch.as_tensor(trunc, dtype=x.dtype, device=x.device), x.shape)
            const = torch.where(dead, torch.minimum(T, w * y.abs()), zero).sum(-1, keepdim=True)
            T = torch.where(live, T, zero)
            half = T / torch.where(live, wx, torch.ones_like(wx))
            B, C = torch.where(live, self.tips - half, -inf), torch.where(live, self.tips + half, inf)
            self.keys = torch.cat([self.tips, B, C], dim=-1)
            self.incs = torch.stack([torch.cat([2 * wx, -wx, -wx], -1), torch.cat([2 * wy, -wy, -wy], -1),
                                     torch.cat([zero, -T, T], -1)], dim=-1)
            self.offset = const + T.sum(-1, keepdim=True)
            self.base = torch.zeros(x.shape[0], 1, 2, dtype=x.dtype, device=x.device)

    def value(self, a, before, rows=None):
        """f(a) [M', Q] from the prefix sums `before` [M', Q, c] below a; `rows` picks this object's rows for M'."""
        base = self.base if rows is None else self.base[rows]
        offset = self.offset if rows is None else self.offset[rows]
        v = a * (before[..., 0] - base[..., 0]) - (before[..., 1] - base[..., 1]) + offset
        return v + before[..., 2] if before.shape[-1] == 3 else v

    def sorted_table(self):
        """(sorted keys [M, K], prefix sums [M, K+1, c]); row k of the sums covers the first k sorted keys."""
        torch = _torch()
        keys_sorted, order = torch.sort(self.keys, dim=-1)
        incs = torch.gather(self.incs, 1, order[..., None].expand(-1, -1, self.incs.shape[-1]))
        cum = torch.cat([torch.zeros_like(incs[:, :1]), torch.cumsum(incs, dim=1)], dim=1)
        return keys_sorted, cum

    @staticmethod
    def lookup(keys_sorted, cum, a):
        """Prefix sums of the breakpoints strictly below each query a [M, Q] (batched binary search)."""
        torch = _torch()
        k = torch.searchsorted(keys_sorted, a.contiguous(), side='left')
        return torch.gather(cum, 1, k[..., None].expand(-1, -1, cum.shape[-1]))


def _solve_rows(x, y, w, trunc):
    """No-grad exact solve on [M, n] float64 rows. Returns (a [M], loss [M], index [M], found [M] bool).

    One sort of all breakpoints, then a walk: at each tip the exclusive prefix sums give f there (O(n log n)).
    """
    torch = _torch()
    bp = _Breakpoints(x, y, w, trunc)
    n = x.shape[1]
    keys_sorted, order = torch.sort(bp.keys, dim=-1)
    incs = torch.gather(bp.incs, 1, order[..., None].expand(-1, -1, bp.incs.shape[-1]))
    obj = bp.value(keys_sorted, torch.cumsum(incs, dim=1) - incs)
    is_tip = order < n
    tip = torch.where(is_tip, order, torch.zeros_like(order))
    obj = torch.where(is_tip & torch.gather(bp.live, 1, tip), obj, torch.full_like(obj, math.inf))
    loss, where = obj.min(dim=-1)
    index = torch.gather(tip, 1, where[:, None]).squeeze(-1)
    found = bp.live.any(dim=-1)
    loss = torch.where(found, loss, bp.offset[:, 0])          # nothing depends on a: only the constant terms
    a = torch.where(found, torch.gather(bp.tips, -1, index[:, None]).squeeze(-1), torch.zeros_like(loss))
    return a, loss, index, found


def roe_solve(x, y, w, trunc=None):
    """Exact min_a sum_i min(trunc_i, w_i|a x_i - y_i|) over the last dim, without gradients.

    Returns (a [...], loss [...], index [...] (a = y[index]/x[index]), found [...] (False: no usable sample, a = 0)).
    `trunc` None gives the weighted-L1 optimum (weighted median of y/x).
    """
    torch = _torch()
    with torch.no_grad():
        x, y, w = torch.broadcast_tensors(x, y, w)
        shape, n = x.shape[:-1], x.shape[-1]
        m = math.prod(shape)
        if m == 0 or n == 0:
            z = torch.zeros(shape, dtype=torch.float64, device=x.device)
            return z, z.clone(), z.long(), z.bool()
        if trunc is not None and _is_tensor(trunc):
            trunc = torch.broadcast_to(trunc, x.shape).reshape(m, n).to(torch.float64)
        x64, y64, w64 = (v.reshape(m, n).to(torch.float64) for v in (x, y, w))
        rows = max(1, _CHUNK_ELEMENTS // n)
        outs = []
        for s in range(0, m, rows):
            t = trunc[s:s + rows] if _is_tensor(trunc) else trunc
            outs.append(_solve_rows(x64[s:s + rows], y64[s:s + rows], w64[s:s + rows], t))
        a, loss, index, found = (torch.cat(parts) for parts in zip(*outs))
        return a.reshape(shape), loss.reshape(shape), index.reshape(shape), found.reshape(shape)


def _gather_last(v, index):
    return _torch().gather(v, -1, index[..., None]).squeeze(-1)


def _safe_div(num, den):
    torch = _torch()
    return num / torch.where(den != 0, den, torch.ones_like(den))


@_entry
def align_scale(x, y, w=None, trunc=None):
    """Scale a (shape [...]) minimising sum_i min(trunc, w_i |a x_i - y_i|) over the last dim; differentiable."""
    torch = _torch()
    w = torch.ones_like(x) if w is None else w
    _, _, index, found = roe_solve(x, y, w, trunc)
    xs, ys = torch.broadcast_tensors(x, y)
    if xs.shape[-1] == 0:
        return xs.sum(-1) * 0
    a = _safe_div(_gather_last(ys, index), _gather_last(xs, index))
    return torch.where(found, a, torch.zeros_like(a))


@_entry
def align_depth_scale(depth_src, depth_tgt, weight=None, trunc=None):
    """Scale s so that s*depth_src ~ depth_tgt (robust, exact). Shapes [..., N] -> [...]."""
    return align_scale.__wrapped__(depth_src, depth_tgt, weight, trunc)


def _expand_points_trunc(trunc, like):
    if trunc is not None and _is_tensor(trunc) and trunc.ndim >= 1 and trunc.shape[-1] == like.shape[-2]:
        return trunc[..., None].expand(like.shape).flatten(-2)
    return trunc


@_entry
def align_points_scale(points_src, points_tgt, weight=None, trunc=None):
    """Shared xyz scale s: s*src ~ tgt. Points [..., N, 3], weight [..., N] -> s [...]."""
    torch = _torch()
    weight = torch.ones_like(points_src[..., 0]) if weight is None else weight
    w3 = weight[..., None].expand(points_src.shape)
    return align_scale.__wrapped__(points_src.flatten(-2), points_tgt.flatten(-2), w3.flatten(-2),
                                   _expand_points_trunc(trunc, points_src))


# ---------------------------------------------------------------------------------------------------------------
# anchored (affine) solvers
# ---------------------------------------------------------------------------------------------------------------
def _anchor_rows(weight, max_anchors):
    """Rows (batch index, sample index) of the anchors: every weighted sample, or an even subset of max_anchors."""
    torch = _torch()
    valid = weight > 0
    if max_anchors is not None:
        rank = torch.cumsum(valid.long(), dim=-1) - 1
        count = valid.sum(-1, keepdim=True).clamp_min(1)
        m = int(max_anchors)
        valid = valid & (((rank + 1) * m) // count > (rank * m) // count)
    return torch.where(valid)


def _best_anchor(loss, batch_of_row, batch_size):
    """Per batch item: the row with the smallest loss (first on ties) and whether any row exists."""
    torch = _torch()
    big = torch.full((batch_size,), math.inf, dtype=loss.dtype, device=loss.device)
    best = big.scatter_reduce(0, batch_of_row, loss, reduce='amin', include_self=True)
    rows = torch.arange(loss.shape[0], device=loss.device)
    is_best = loss == best[batch_of_row]
    cand = torch.where(is_best, rows, torch.full_like(rows, loss.shape[0]))
    first = torch.full((batch_size,), loss.shape[0], dtype=torch.long, device=loss.device)
    first = first.scatter_reduce(0, batch_of_row, cand, reduce='amin', include_self=True)
    has = first < loss.shape[0]
    return first.clamp_max(max(loss.shape[0] - 1, 0)), has


def _anchored_search(src, tgt, weight, trunc, shift_dims, max_anchors):
    """Solve the scale for every anchor (shift pinned so the anchor fits exactly on `shift_dims`) and pick the best.

    src/tgt [B, N, D]; weight [B, N]. Returns (anchor sample [B], best flat index in N*D [B], has [B]).
    """
    torch = _torch()
    bsz, n, d = src.shape
    if len(shift_dims) < d:
        return _anchored_search_shared(src, tgt, weight, trunc, shift_dims, max_anchors)
    with torch.no_grad():
        bi, ni = _anchor_rows(weight, max_anchors)
        mask = torch.zeros(d, dtype=src.dtype, device=src.device)
        mask[list(shift_dims)] = 1.0
        wflat = weight[:, :, None].expand(bsz, n, d).reshape(bsz, n * d)
        if _is_tensor(trunc):
            trunc = torch.broadcast_to(trunc, (bsz, n * d))
        rows = max(1, _CHUNK_ELEMENTS // max(n * d, 1))
        losses, indices, founds = [], [], []
        for s in range(0, bi.shape[0], rows):
            b, k = bi[s:s + rows], ni[s:s + rows]
            xs = (src[b] - src[b, k][:, None, :] * mask).reshape(len(b), n * d)
            ys = (tgt[b] - tgt[b, k][:, None, :] * mask).reshape(len(b), n * d)
            t = trunc[b] if _is_tensor(trunc) else trunc
            _, loss, index, found = roe_solve(xs, ys, wflat[b], t)
            losses.append(torch.where(found, loss, torch.full_like(loss, math.inf)))
            indices.append(index)
            founds.append(found)
        if not losses:
            zero = torch.zeros(bsz, dtype=torch.long, device=src.device)
            return zero, zero, zero.bool()
        loss, index = torch.cat(losses), torch.cat(indices)
        row, has = _best_anchor(loss, bi, bsz)
        has = has & torch.isfinite(loss[row])
        return ni[row], index[row], has


def _anchored_search_shared(src, tgt, weight, trunc, shift_dims, max_anchors):
    """`_anchored_search` when some components carry no shift (x, y for a z shift): their part of the objective is
    the same for every anchor, so it is sorted once per item and only the shifted part is sorted per anchor."""
    torch = _torch()
    bsz, n, d = src.shape
    pinned = list(shift_dims)
    free = [c for c in range(d) if c not in pinned]
    flat = torch.arange(n * d, device=src.device).reshape(n, d)
    pinned_flat, free_flat = flat[:, pinned].reshape(-1), flat[:, free].reshape(-1)
    with torch.no_grad():
        bi, ni = _anchor_rows(weight, max_anchors)
        if bi.shape[0] == 0:
            zero = torch.zeros(bsz, dtype=torch.long, device=src.device)
            return zero, zero, zero.bool()
        src64, tgt64 = src.detach().to(torch.float64), tgt.detach().to(torch.float64)
        w64 = weight.detach().to(torch.float64)
        w_free = w64[:, :, None].expand(bsz, n, len(free)).reshape(bsz, -1)
        w_pin = w64[:, :, None].expand(bsz, n, len(pinned)).reshape(bsz, -1)
        t_free = t_pin = trunc
        if _is_tensor(trunc):
            full = torch.broadcast_to(trunc, (bsz, n * d)).to(torch.float64)
            t_free, t_pin = full[:, free_flat], full[:, pinned_flat]
        g = _Breakpoints(src64[:, :, free].reshape(bsz, -1), tgt64[:, :, free].reshape(bsz, -1), w_free, t_free)
        g_keys, g_cum = g.sorted_table()
        g_at_free = g.value(g.tips, _Breakpoints.lookup(g_keys, g_cum, g.tips))        # [B, F]
        rows = max(1, _CHUNK_ELEMENTS // (n * d))
        losses, indices = [], []
        for s in range(0, bi.shape[0], rows):
            b, k = bi[s:s + rows], ni[s:s + rows]
            xp = (src64[b][:, :, pinned] - src64[b, k][:, None, pinned]).reshape(len(b), -1)
            yp = (tgt64[b][:, :, pinned] - tgt64[b, k][:, None, pinned]).reshape(len(b), -1)
            h = _Breakpoints(xp, yp, w_pin[b], t_pin[b] if _is_tensor(t_pin) else t_pin)
            h_keys, h_cum = h.sorted_table()
            # candidates at the shifted components' tips, then at the shared components' tips
            obj_p = h.value(h.tips, _Breakpoints.lookup(h_keys, h_cum, h.tips)) + \
                g.value(h.tips, _Breakpoints.lookup(g_keys[b], g_cum[b], h.tips), rows=b)
            obj_p = torch.where(h.live, obj_p, torch.full_like(obj_p, math.inf))
            free_tips = g.tips[b]
            obj_f = g_at_free[b] + h.value(free_tips, _Breakpoints.lookup(h_keys, h_cum, free_tips))
            obj_f = torch.where(g.live[b], obj_f, torch.full_like(obj_f, math.inf))
            loss_p, at_p = obj_p.min(dim=-1)
            loss_f, at_f = obj_f.min(dim=-1)
            use_p = loss_p <= loss_f
            losses.append(torch.where(use_p, loss_p, loss_f))
            indices.append(torch.where(use_p, pinned_flat[at_p], free_flat[at_f]))
        loss, index = torch.cat(losses), torch.cat(indices)
        row, has = _best_anchor(loss, bi, bsz)
        has = has & torch.isfinite(loss[row])
        return ni[row], index[row], has


def _scale_from_pair(src, tgt, anchor, flat_index, shift_dims):
    """Scale recomputed with gradients from the anchor sample and the chosen sample/component."""
    torch = _torch()
    bsz, n, d = src.shape
    comp = flat_index % d
    j = flat_index // d
    ar = torch.arange(bsz, device=src.device)
    pinned = torch.zeros(d, dtype=torch.bool, device=src.device)
    pinned[list(shift_dims)] = True
    on = pinned[comp]
    s1 = torch.where(on, src[ar, anchor, comp], torch.zeros_like(src[ar, anchor, comp]))
    t1 = torch.where(on, tgt[ar, anchor, comp], torch.zeros_like(tgt[ar, anchor, comp]))
    return _safe_div(tgt[ar, j, comp] - t1, src[ar, j, comp] - s1)


def _weights_or_ones(weight, points):
    return _torch().ones_like(points[..., 0]) if weight is None else weight


def _anchored_fit(src, tgt, weight, trunc, shift_dims: tuple[int, ...], max_anchors: int | None):
    """The fit behind every scale-and-shift alignment: s*src + t ~ tgt with one scale s and a shift t on the
    components `shift_dims`. src/tgt [..., N, D], weight [..., N] (None: all ones) -> (s [...], t [..., S]) with
    S = len(shift_dims)."""
    torch = _torch()
    weight = _weights_or_ones(weight, src)
    batch, (n, d) = src.shape[:-2], src.shape[-2:]
    pinned = list(shift_dims)
    if n == 0:
        return src.sum((-2, -1)) * 0, src.sum(-2)[..., pinned] * 0
    tr = _expand_points_trunc(trunc, src)
    tr = tr.reshape(-1, n * d) if _is_tensor(tr) and tr.ndim >= 1 else tr
    nb = math.prod(batch)
    src, tgt, w = src.reshape(nb, n, d), tgt.reshape(nb, n, d), weight.reshape(nb, n)
    anchor, idx, has = _anchored_search(src, tgt, w, tr, shift_dims, max_anchors)
    s = _scale_from_pair(src, tgt, anchor, idx, shift_dims)
    ar = torch.arange(nb, device=src.device)
    t = tgt[ar, anchor][:, pinned] - s[:, None] * src[ar, anchor][:, pinned]
    s = torch.where(has, s, torch.zeros_like(s))
    t = torch.where(has[:, None], t, torch.zeros_like(t))
    return s.reshape(batch), t.reshape(*batch, len(pinned))


@_entry
def align_points_scale_z_shift(points_src, points_tgt, weight=None, trunc=None, max_anchors: int | None = None):
    """Shared xyz scale s and z shift tz: s*src + (0,0,tz) ~ tgt. Points [..., N, 3] -> (s [...], tz [...]).

    `max_anchors` (default: all) limits the anchors tried per item to an even subset, trading exactness for speed.
    """
    s, t = _anchored_fit(points_src, points_tgt, weight, trunc, (2,), max_anchors)
    return s, t[..., 0]


@_entry
def align_points_scale_xyz_shift(points_src, points_tgt, weight=None, trunc=None, max_anchors: int | None = None):
    """Shared scale s and a 3-vector shift t: s*src + t ~ tgt. Points [..., N, 3] -> (s [...], t [..., 3])."""
    return _anchored_fit(points_src, points_tgt, weight, trunc, (0, 1, 2), max_anchors)


@_entry
def align_depth_affine(depth_src, depth_tgt, weight=None, trunc=None, max_anchors: int | None = None):
    """Scale and shift: s*src + t ~ tgt over the last dim ([..., N] -> (s [...], t [...]))."""
    s, t = _anchored_fit(depth_src[..., None], depth_tgt[..., None], weight, trunc, (0,), max_anchors)
    return s, t[..., 0]


@_entry
def align_points_xyz_shift(points_src, points_tgt, weight=None, trunc=None):
    """Per-axis shift t (no scale): src + t ~ tgt. Points [..., N, 3] -> t [..., 3] (robust per axis)."""
    torch = _torch()
    weight = _weights_or_ones(weight, points_src)
    diff = (points_tgt - points_src).transpose(-2, -1)                      # [..., 3, N]
    ones = torch.ones_like(diff)
    w = weight[..., None, :].expand(diff.shape)
    tr = trunc[..., None, :] if _is_tensor(trunc) and trunc.ndim >= 1 else trunc
    return align_scale.__wrapped__(ones, diff, w, tr)


@_entry
def align_points_z_shift(points_src, points_tgt, weight=None, trunc=None):
    """z-only shift tz: src + (0,0,tz) ~ tgt. Points [..., N, 3] -> tz [...]."""
    torch = _torch()
    weight = _weights_or_ones(weight, points_src)
    diff = points_tgt[..., 2] - points_src[..., 2]
    return align_scale.__wrapped__(torch.ones_like(diff), diff, weight, trunc)


@_entry
def align_affine_lstsq(x, y, w=None):
    """Weighted least squares min sum_i w_i (s x_i + t - y_i)^2 over the last dim -> (s [...], t [...])."""
    torch = _torch()
    w = torch.ones_like(x) if w is None else w
    w = torch.where(torch.isfinite(x) & torch.isfinite(y), w, torch.zeros_like(w))
    x, y = torch.nan_to_num(x), torch.nan_to_num(y)
    sw = w.sum(-1).clamp_min(1e-12)
    mx, my = (w * x).sum(-1) / sw, (w * y).sum(-1) / sw
    dx, dy = x - mx[..., None], y - my[..., None]
    s = _safe_div((w * dx * dy).sum(-1), (w * dx * dx).sum(-1))
    return s, my - s * mx


# ---------------------------------------------------------------------------------------------------------------
# masked nearest resize
# ---------------------------------------------------------------------------------------------------------------
def _cells(n_src: int, n_dst: int, eps: float, torch, device):
    """Target cell of each source row/column, and its float32 offset from the cell centre in source pixels.

    The offsets are rounded the way utils3d computes them (float32 pixel-centre uv times the size), so exact ties
    between equidistant source pixels break the same way (then by row-major source order).
    """
    f = n_src / n_dst
    c = torch.arange(n_src, dtype=torch.float64, device=device) + 0.5
    cell = (torch.ceil((c - eps) / f) - 1).clamp(0, n_dst - 1).long()
    centres = torch.linspace(0.5 / n_dst, 1.0 - 0.5 / n_dst, n_dst, dtype=torch.float32, device=device)
    centres = centres * torch.tensor(float(n_src), dtype=torch.float32, device=device)
    return cell, c.to(torch.float32) - centres[cell]


def masked_nearest_resize(x, mask=None, size=(64, 64)):
    """Resize sparse maps: each target pixel takes the valid source pixel nearest its centre within its cell.

    x: [..., H, W] or [..., H, W, C] (or a tuple/list of such, resized with the same picks; a map without the
    mask's leading dims, e.g. a uv grid, is shared by the batch); mask [..., H, W] bool (None: all valid, and then x
    must be [H, W] or [..., H, W, C]); size (h, w). Returns (x_small, mask_small); target pixels whose cell has
    no valid source are False in mask_small and 0 in x_small. Same picks as utils3d's masked_nearest_resize;
    torch keeps gradients.
    """
    many = isinstance(x, (tuple, list))
    xs = list(x) if many else [x]
    as_numpy = _is_numpy(*xs, mask)
    torch = _torch()
    xs = [_to_torch(v) for v in xs]
    ref = xs[0]
    h_out, w_out = int(size[0]), int(size[1])
    if mask is None:  # then x is [H, W] or [..., H, W, C]
        mask = torch.ones(ref.shape if ref.ndim == 2 else ref.shape[:-1], dtype=torch.bool, device=ref.device)
    mask = _to_torch(mask, like=ref).bool()
    H, W = mask.shape[-2:]
    lead = mask.shape[:-2]
    dev = mask.device
    eps = float(np.finfo(np.float32).eps) * max(H, W)
    ci, di = _cells(H, h_out, eps, torch, dev)
    cj, dj = _cells(W, w_out, eps, torch, dev)
    cell = (ci[:, None] * w_out + cj[None, :]).reshape(-1)                  # [H*W]
    dist = (dj[None, :] * dj[None, :] + di[:, None] * di[:, None]).reshape(-1)   # [H*W] float32
    m = mask.reshape(-1, H * W)
    nb = m.shape[0]
    # rank source pixels by (cell, distance, flat index); invalid ones sort after every valid one
    dist_rank = torch.argsort(torch.argsort(dist, stable=True), stable=True)
    key = cell[None, :] * (H * W + 1) + torch.where(m, dist_rank[None, :], torch.full_like(dist_rank[None, :], H * W))
    order = torch.argsort(key, dim=-1)
    first_of_cell = torch.full((nb, h_out * w_out), H * W, dtype=torch.long, device=dev)
    pos = torch.arange(H * W, device=dev).expand(nb, -1)
    first_of_cell = first_of_cell.scatter_reduce(1, cell[order], pos, reduce='amin', include_self=True)
    empty = first_of_cell >= H * W
    pick = torch.gather(order, 1, first_of_cell.clamp_max(H * W - 1))     # [nb, h*w] source flat index
    ok = torch.gather(m, 1, pick) & ~empty
    mask_small = ok.reshape(*lead, h_out, w_out)
    outs = []
    for v in xs:
        chan_fits = v.ndim >= 3 and tuple(v.shape[-3:-1]) == (H, W)
        plain_fits = tuple(v.shape[-2:]) == (H, W)
        has_c = v.ndim == mask.ndim + 1 if chan_fits and plain_fits else chan_fits
        vb = v.reshape(-1, H * W, v.shape[-1]) if has_c else v.reshape(-1, H * W)
        if vb.shape[0] != nb:  # a map shared by the whole batch (e.g. a uv grid)
            vb = vb.expand(nb, *vb.shape[1:])
        idx = pick[..., None].expand(-1, -1, vb.shape[-1]) if has_c else pick
        g = torch.gather(vb, 1, idx)
        g = torch.where(ok[..., None] if has_c else ok, g, torch.zeros_like(g))
        out_shape = (*lead, h_out, w_out, v.shape[-1]) if has_c else (*lead, h_out, w_out)
        outs.append(g.reshape(out_shape))
    result = (tuple(outs) if many else outs[0], mask_small)
    return _to_numpy(result) if as_numpy else result
