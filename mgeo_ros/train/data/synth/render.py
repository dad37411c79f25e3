"""Render sampled scenes: primary rays -> surface (normal, world uv, material) -> texture -> Lambertian light with
soft shadows -> auto exposure. Batched over frames and chunked over pixels to bound memory."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data.sample import Sample
from mgeo_ros.train.data.synth import raycast
from mgeo_ros.train.data.synth.scene import OUTDOOR_RANGE_M, Pose, Scene
from mgeo_ros.train.data.synth.textures import albedo, hash3

NONE, ROOM, OUTER, GROUND, BOX, CYL, SPH = range(7)
# fixed offsets on the light's disc/cone for the soft-shadow samples (deterministic, well spread)
_SHADOW_OFFSETS = np.array([[0.7, 0.1, 0.0], [-0.4, 0.6, 0.1], [-0.3, -0.7, -0.1], [0.2, -0.2, 0.6],
                            [0.0, 0.8, -0.4], [-0.8, 0.0, 0.3], [0.5, 0.5, -0.5], [0.1, -0.5, -0.6]])
# which offset each pixel of an 8x8 tile starts from: a fixed shuffle, so the dither has no stripes
_LANE_ORDER = np.random.default_rng(12345).permutation(np.arange(64) % 8)


@dataclass
class SynthBatch:
    """B rendered frames of one size. Tensors on the render device: rgb [B,H,W,3] uint8, depth [B,H,W] float32
    metres (NaN invalid), mask [B,H,W] bool, K [B,3,3] float32 pixels."""

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    intrinsics: list
    sources: list
    kinds: list

    def samples(self) -> list[Sample]:
        """The batch as numpy `Sample`s (metric, synthetic)."""
        rgb, depth, mask = self.rgb.cpu().numpy(), self.depth.cpu().numpy(), self.mask.cpu().numpy()
        return [Sample(rgb[i], depth[i], self.intrinsics[i], mask[i], True, self.sources[i]) for i in range(len(rgb))]


def _pad(rows: list[list], width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-scene lists of rows into [B,K,width] (K >= 1) with a validity mask [B,K]."""
    k = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), k, width), dtype=np.float64)
    valid = np.zeros((len(rows), k), dtype=bool)
    out[..., 2] = -1e4   # padding sits far below the world (and is masked anyway)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = np.asarray(r, dtype=np.float64)[:, :width]
            valid[i, :len(r)] = True
    return torch.as_tensor(out, dtype=torch.float32, device=device), torch.as_tensor(valid, device=device)


def pack(frames: list[tuple[Scene, Pose, Intrinsics]], device) -> dict:
    """Padded tensors for a batch of (scene, pose, intrinsics)."""
    scenes = [f[0] for f in frames]
    p: dict = {}
    p['boxes'], p['box_valid'] = _pad([[b[:7] for b in s.boxes] for s in scenes], 7, device)
    p['cyls'], p['cyl_valid'] = _pad([[c[:5] for c in s.cyls] for s in scenes], 5, device)
    p['spheres'], p['sph_valid'] = _pad([[c[:4] for c in s.spheres] for s in scenes], 4, device)
    p['obj_mat'] = torch.as_tensor(np.stack([_obj_mats(s, p['boxes'].shape[1], p['cyls'].shape[1],
                                                       p['spheres'].shape[1]) for s in scenes]), device=device)
    p['doors'], p['door_valid'] = _pad([list(s.doors) for s in scenes], 4, device)
    p['doors'][..., 0] = torch.where(p['door_valid'], p['doors'][..., 0], torch.full_like(p['doors'][..., 0], -1))
    p['lights'], p['light_valid'] = _pad([list(s.lights) for s in scenes], 5, device)
    n_mat = max(len(s.materials) for s in scenes)
    mats = np.zeros((len(scenes), n_mat, 8), dtype=np.float32)
    seeds = np.zeros((len(scenes), n_mat), dtype=np.int64)
    for i, s in enumerate(scenes):
        for j, (kind, size, seed, c1, c2) in enumerate(s.materials):
            mats[i, j] = (kind, size, *c1, *c2)
            seeds[i, j] = seed
    p['mats'], p['mat_seeds'] = torch.as_tensor(mats, device=device), torch.as_tensor(seeds, device=device)
    names = ('floor', 'wall', 'ceiling', 'outer_wall', 'outer_floor', 'ground')
    p['surf'] = torch.as_tensor([[s.surf_mat.get(n, 0) for n in names] for s in scenes], device=device)
    p['indoor'] = torch.as_tensor([s.kind == 'indoor' for s in scenes], device=device)
    p['room'] = torch.as_tensor(np.stack([s.room if s.room is not None else np.zeros(6) for s in scenes]),
                                dtype=torch.float32, device=device)
    p['outer'] = torch.as_tensor(np.stack([s.outer if s.outer is not None else np.zeros(6) for s in scenes]),
                                 dtype=torch.float32, device=device)
    p['ambient'] = torch.as_tensor([s.ambient for s in scenes], dtype=torch.float32, device=device)
    p['sky'] = torch.as_tensor(np.array([s.sky for s in scenes]), dtype=torch.float32, device=device)
    p['origin'] = torch.as_tensor(np.stack([f[1].position for f in frames]), dtype=torch.float32, device=device)
    p['R'] = torch.as_tensor(np.stack([f[1].rotation for f in frames]), dtype=torch.float32, device=device)
    p['fxfycxcy'] = torch.as_tensor([[f[2].fx, f[2].fy, f[2].cx, f[2].cy] for f in frames], dtype=torch.float32,
                                    device=device)
    return p


def _obj_mats(s: Scene, k: int, c: int, n: int) -> np.ndarray:
    out = np.zeros(k + c + n, dtype=np.int64)
    out[:len(s.boxes)] = [b[7] for b in s.boxes]
    out[k:k + len(s.cyls)] = [x[5] for x in s.cyls]
    out[k + c:k + c + len(s.spheres)] = [x[4] for x in s.spheres]
    return out


def _env(o, d, p):
    """Room (with doorways into the outer box) for indoor frames, the ground disc for outdoor: t, category, face."""
    t_room, face = raycast.exit_box(o, d, p['room'])
    hit = o + t_room[..., None] * d
    along = torch.where(face < 2, hit[..., 1], hit[..., 0])
    doors = p['doors'][:, None]
    in_door = ((face[..., None] == doors[..., 0].long()) & (along[..., None] >= doors[..., 1])
               & (along[..., None] <= doors[..., 2]) & (hit[..., 2:3] <= doors[..., 3])).any(-1)
    t_out, face_out = raycast.exit_box(o, d, p['outer'])
    t_in = torch.where(in_door, t_out, t_room)
    face_in = torch.where(in_door, face_out, face)
    cat_in = torch.where(in_door, torch.full_like(face, OUTER), torch.full_like(face, ROOM))
    dz = d[..., 2]
    t_g = -o[..., 2] / torch.where(dz < -1e-9, dz, torch.full_like(dz, -1e-9))
    reach = t_g * torch.linalg.vector_norm(d[..., :2], dim=-1)
    ground_ok = (dz < -1e-9) & (reach <= OUTDOOR_RANGE_M)
    t_g = torch.where(ground_ok, t_g, torch.full_like(t_g, raycast.INF))
    cat_g = torch.where(ground_ok, torch.full_like(face, GROUND), torch.full_like(face, NONE))
    indoor = p['indoor'][:, None]
    return (torch.where(indoor, t_in, t_g), torch.where(indoor, cat_in, cat_g), torch.where(indoor, face_in, 0))


def _surface(P, d, cat, face, idx, b, p):
    """Per-pixel normal [P,3], world uv [P,2] metres and material index, for flat pixel lists. Each primitive kind
    is evaluated only on its own pixels."""
    n = torch.zeros_like(P)
    n[:, 2] = 1.0
    uv = P[:, :2].clone()
    mat = p['surf'][b, 5]                                   # ground (and a harmless default for sky pixels)
    k, c = p['boxes'].shape[1], p['cyls'].shape[1]

    sel = ((cat == ROOM) | (cat == OUTER)).nonzero(as_tuple=True)[0]
    if sel.numel():                                         # room and outer box, seen from inside
        f, q, surf = face[sel], P[sel], p['surf'][b[sel]]
        axis = torch.div(f, 2, rounding_mode='floor')
        sign = torch.where(f % 2 == 1, -1.0, 1.0)
        n[sel] = torch.nn.functional.one_hot(axis, 3).to(P.dtype) * sign[:, None]
        uv[sel] = torch.where((axis == 0)[:, None], q[:, [1, 2]], torch.where((axis == 1)[:, None], q[:, [0, 2]],
                                                                              q[:, :2]))
        outer = cat[sel] == OUTER
        wall = torch.where(outer, surf[:, 3], surf[:, 1])
        floor = torch.where(outer, surf[:, 4], surf[:, 0])
        mat[sel] = torch.where(f == 4, floor, torch.where(f == 5, surf[:, 2], wall))

    sel = (cat == BOX).nonzero(as_tuple=True)[0]
    if sel.numel():                                         # face from the largest |local| / half-extent
        bx = p['boxes'][b[sel], idx[sel]]
        cs, sn = torch.cos(bx[:, 6]), torch.sin(bx[:, 6])
        rel = P[sel] - bx[:, :3]
        q = torch.stack((cs * rel[:, 0] + sn * rel[:, 1], cs * rel[:, 1] - sn * rel[:, 0], rel[:, 2]), -1)
        ax = (q.abs() / bx[:, 3:6].clamp_min(1e-6)).argmax(-1)
        nl = torch.nn.functional.one_hot(ax, 3).to(P.dtype) * torch.sign(torch.gather(q, 1, ax[:, None]))
        n[sel] = torch.stack((cs * nl[:, 0] - sn * nl[:, 1], sn * nl[:, 0] + cs * nl[:, 1], nl[:, 2]), -1)
        qa = q + bx[:, 3:6]
        uv[sel] = torch.where((ax == 0)[:, None], qa[:, [1, 2]], torch.where((ax == 1)[:, None], qa[:, [0, 2]],
                                                                             qa[:, :2]))

    sel = (cat == CYL).nonzero(as_tuple=True)[0]
    if sel.numel():                                         # side or cap, whichever the point is closer to
        cy, q = p['cyls'][b[sel], idx[sel] - k], P[sel]
        qx, qy = q[:, 0] - cy[:, 0], q[:, 1] - cy[:, 1]
        rho = torch.sqrt(qx * qx + qy * qy).clamp_min(1e-9)
        d_top, d_bot = (q[:, 2] - cy[:, 3]).abs(), (q[:, 2] - cy[:, 2]).abs()
        side = ((rho - cy[:, 4]).abs() <= torch.minimum(d_top, d_bot))[:, None]
        cap_z = torch.where(d_top < d_bot, 1.0, -1.0)
        zero = torch.zeros_like(rho)
        n[sel] = torch.where(side, torch.stack((qx / rho, qy / rho, zero), -1), torch.stack((zero, zero, cap_z), -1))
        uv[sel] = torch.where(side, torch.stack((torch.atan2(qy, qx) * cy[:, 4], q[:, 2]), -1),
                              torch.stack((qx, qy), -1))

    sel = (cat == SPH).nonzero(as_tuple=True)[0]
    if sel.numel():
        sp, q = p['spheres'][b[sel], idx[sel] - k - c], P[sel]
        ns = (q - sp[:, :3]) / sp[:, 3:4].clamp_min(1e-6)
        n[sel] = ns
        uv[sel] = torch.stack((torch.atan2(ns[:, 1], ns[:, 0]) * sp[:, 3], q[:, 2]), -1)

    sel = (cat >= BOX).nonzero(as_tuple=True)[0]
    if sel.numel():
        mat[sel] = p['obj_mat'][b[sel], idx[sel]]
    n = torch.nn.functional.normalize(n, dim=-1)
    facing = (n * d).sum(-1, keepdim=True) > 0
    return torch.where(facing, -n, n), uv, mat


def _bounds(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding spheres [B,K+C+S,4] (centre, radius) of every object, and their validity, for culling."""
    bx, cy, sp = p['boxes'], p['cyls'], p['spheres']
    b_s = torch.cat((bx[..., :3], torch.linalg.vector_norm(bx[..., 3:6], dim=-1, keepdim=True)), -1)
    half_h = (cy[..., 3] - cy[..., 2]) / 2
    c_s = torch.stack((cy[..., 0], cy[..., 1], (cy[..., 2] + cy[..., 3]) / 2, torch.hypot(cy[..., 4], half_h)), -1)
    return torch.cat((b_s, c_s, sp), 1), torch.cat((p['box_valid'], p['cyl_valid'], p['sph_valid']), 1)


_KINDS = (('boxes', 'box_valid', raycast.hit_boxes), ('cyls', 'cyl_valid', raycast.hit_cylinders),
          ('spheres', 'sph_valid', raycast.hit_spheres))


def _trace_culled(o, d, p, cand):
    """Nearest object hit per ray, testing only candidate (group, object) pairs (cand [G,K+C+S] bool), so the work
    is proportional to what the rays can actually reach: t [G,n] (+inf none) and full object index [G,n]."""
    g_all, n = d.shape[0], d.shape[1]
    t_best = torch.full((g_all * n,), raycast.INF, dtype=d.dtype, device=d.device)
    idx_best = torch.zeros(g_all * n, dtype=torch.long, device=d.device)
    lanes = torch.arange(n, device=d.device)
    parts, lo = [], 0
    for name, vname, fn in _KINDS:
        hi = lo + p[name].shape[1]
        gi, ki = (cand[:, lo:hi] & p[vname]).nonzero(as_tuple=True)
        if gi.numel():
            t = fn(o[gi], d[gi], p[name][gi, ki][:, None], torch.ones((len(gi), 1), dtype=torch.bool,
                                                                       device=d.device))[..., 0]
            flat = (gi[:, None] * n + lanes).reshape(-1)
            t_best.scatter_reduce_(0, flat, t.reshape(-1), 'amin')
            parts.append((flat, t.reshape(-1), (ki + lo)[:, None].expand(-1, n).reshape(-1)))
        lo = hi
    for flat, t, k in parts:
        win = (t == t_best[flat]) & torch.isfinite(t)
        idx_best[flat[win]] = k[win]
    return t_best.reshape(g_all, n), idx_best.reshape(g_all, n)


def _sphere_near_segment(bounds, a, b, radius):
    """cand [G,K]: bounding spheres within `radius` [G] of the segments a->b ([G,3] each)."""
    ab = (b - a)[:, None]
    ac = bounds[..., :3] - a[:, None]
    s = ((ac * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0.0, 1.0)
    dist = torch.linalg.vector_norm(ac - s[..., None] * ab, dim=-1)
    return dist <= bounds[..., 3] + radius[:, None]


def _corner_occlusion(P, n, cat, p):
    """Ambient occlusion where room surfaces meet (floor/wall/ceiling corners darken within ~0.3 m): a cheap cue
    to the room's geometry. 1 elsewhere."""
    lo, hi = p['room'][:, None, :3], p['room'][:, None, 3:]
    gap = torch.minimum(P - lo, hi - P).clamp_min(0.0)                   # distance to the two planes per axis
    gap = torch.where(n.abs() > 0.5, torch.full_like(gap, float('inf')), gap)  # not the plane the point is on
    ao = 1.0 - 0.45 * torch.exp(-gap.amin(-1) / 0.3)
    return torch.where(cat == ROOM, ao, torch.ones_like(ao))


def _light(P, n, cat, hit, p, bounds, shadow_samples: int, lane: torch.Tensor):
    """Irradiance [G,n] at surface points P [G,n,3] (groups = screen tiles): ambient + Lambertian per light, each
    averaged over soft-shadow samples. Shadow rays test only objects near the group's bundle towards the light."""
    indoor = p['indoor'][:, None]
    origin = P + n * 2e-3
    total = p['ambient'][:, None] * torch.where(indoor, 1.0 + 0.2 * n[..., 2].abs(), 0.75 + 0.25 * n[..., 2])
    total = total * _corner_occlusion(P, n, cat, p)
    offsets = torch.as_tensor(_SHADOW_OFFSETS, dtype=P.dtype, device=P.device)
    flat = torch.tensor([1.0, 1.0, 0.0], dtype=P.dtype, device=P.device)
    w = hit.to(P.dtype)[..., None]
    count = w.sum(1).clamp_min(1.0)
    centre = (origin * w).sum(1) / count                                           # [G,3]
    spread = (torch.linalg.vector_norm(origin - centre[:, None], dim=-1) * hit).amax(1)
    for li in range(p['lights'].shape[1]):
        lt = p['lights'][:, li]                                                    # [G,5]
        reach = 150.0
        end = torch.where(p['indoor'][:, None], lt[:, :3], centre + reach * lt[:, :3])
        radius = torch.maximum(spread, torch.where(p['indoor'], lt[:, 4], lt[:, 4] * reach)) + 0.01
        cand = _sphere_near_segment(bounds, centre, end, radius) & hit.any(1, keepdim=True)
        # unshadowed Lambertian term from the light's centre (smooth), visibility from points spread over it
        centre_dir = torch.where(indoor[..., None], lt[:, None, :3] - origin,
                                 torch.nn.functional.normalize(lt[:, :3], dim=-1)[:, None].expand_as(origin))
        dist2 = (centre_dir * centre_dir).sum(-1)
        cos = ((n * centre_dir).sum(-1) / dist2.sqrt().clamp_min(1e-6)).clamp_min(0.0)
        direct = torch.where(indoor, lt[:, 3:4] * 4.0 / (1.0 + dist2), lt[:, 3:4] * 1.6) * cos
        if shadow_samples <= 0:
            total = total + p['light_valid'][:, li:li + 1] * direct
            continue
        visible = torch.zeros_like(total)
        shadow_cand = cand & (cos > 0).any(1, keepdim=True) & p['light_valid'][:, li:li + 1]
        lanes = torch.as_tensor(_LANE_ORDER, device=P.device)[lane]           # [G,n]; from pixel coordinates
        for k in range(shadow_samples):
            # each pixel of a tile aims at a different point of the light (stratified dither): soft shadow edges
            # without more rays per pixel
            off = offsets[(lanes + k * 3 + li) % len(offsets)]               # [G,n,3]
            off = torch.where(indoor[..., None], off * flat, off)          # ceiling lights are horizontal discs
            pos = lt[:, None, :3] + lt[:, None, 4:5] * off
            to_pt = torch.where(indoor[..., None], pos - origin,
                                torch.nn.functional.normalize(pos, dim=-1).expand_as(origin))
            t_hit, _ = _trace_culled(origin, to_pt, p, shadow_cand)
            visible = visible + torch.where(indoor, t_hit >= 1.0, torch.isinf(t_hit)).to(P.dtype)
        total = total + p['light_valid'][:, li:li + 1] * direct * visible / shadow_samples
    return total * torch.where(cat == OUTER, 0.5, 1.0)


def _render_groups(p, x, y, shadow_samples):
    """Render groups of pixels (screen tiles; x, y [G,n]) whose per-frame tensors in `p` are already per group:
    depth [G,n], hit [G,n], linear colour [G,n,3]."""
    f = p['fxfycxcy'][:, None]
    dc = torch.stack(((x - f[..., 2]) / f[..., 0], (y - f[..., 3]) / f[..., 1], torch.ones_like(x)), -1)
    d = torch.einsum('gij,gnj->gni', p['R'], dc)
    o = p['origin'][:, None]
    t_env, cat_env, face = _env(o, d, p)
    # cull objects whose bounding sphere is outside the tile's cone of rays
    bounds, _ = _bounds(p)
    dn = torch.nn.functional.normalize(d, dim=-1)
    axis = torch.nn.functional.normalize(dn.mean(1), dim=-1)
    half = torch.acos((dn * axis[:, None]).sum(-1).clamp(-1.0, 1.0)).amax(1) + 1e-3
    v = bounds[..., :3] - p['origin'][:, None]
    dist = torch.linalg.vector_norm(v, dim=-1).clamp_min(1e-9)
    ang = torch.acos(((v * axis[:, None]).sum(-1) / dist).clamp(-1.0, 1.0))
    cand = (dist <= bounds[..., 3]) | (ang <= half[:, None] + torch.asin((bounds[..., 3] / dist).clamp(max=1.0)))
    t_obj, idx = _trace_culled(o, d, p, cand)
    use_obj = t_obj < t_env
    k, c = p['boxes'].shape[1], p['cyls'].shape[1]
    cat_obj = torch.where(idx < k, BOX, torch.where(idx < k + c, CYL, SPH))
    t = torch.where(use_obj, t_obj, t_env)
    cat = torch.where(use_obj, cat_obj, cat_env)
    hit = cat != NONE
    g, n = t.shape
    t_safe = torch.where(hit, t, torch.ones_like(t))
    P = o + t_safe[..., None] * d
    b = torch.arange(g, device=t.device)[:, None].expand(g, n).reshape(-1)
    nrm, uv, mat = _surface(P.reshape(-1, 3), d.reshape(-1, 3), cat.reshape(-1), face.reshape(-1),
                            idx.reshape(-1), b, p)
    m = p['mats'][b, mat]
    dd = d.reshape(-1, 3)
    dnorm = torch.linalg.vector_norm(dd, dim=-1)
    grazing = ((nrm * dd).sum(-1).abs() / dnorm).clamp_min(0.15)
    footprint = t_safe.reshape(-1) * dnorm / p['fxfycxcy'][b, 0] / grazing
    alb = albedo(uv[:, 0], uv[:, 1], m[:, 0].long(), m[:, 1], p['mat_seeds'][b, mat], m[:, 2:5], m[:, 5:8], footprint)
    lane = ((y.long() % TILE) * TILE + x.long() % TILE)      # the same pixel always gets the same dither
    irr = _light(P, nrm.reshape(g, n, 3), cat, hit, p, bounds, shadow_samples, lane)
    colour = alb.reshape(g, n, 3) ** 2.2 * irr[..., None]   # palettes are sRGB; light in linear space
    up = (dn[..., 2]).clamp(0.0, 1.0)[..., None] ** 0.6
    sky = (p['sky'][:, None, 0] * (1 - up) + p['sky'][:, None, 1] * up) ** 2.2
    colour = torch.where(hit[..., None], colour, sky * 1.5)
    return torch.where(hit, t, torch.full_like(t, float('nan'))), hit, colour


TILE = 8


@contextmanager
def _cpu_threads(device, n: int | None):
    """Run with n torch CPU threads (restored after). The renderer's many small ops gain nothing from intra-op
    threads, and on a busy 2-core machine OpenMP spin-waits made 2 threads ~15x slower than 1 (measured)."""
    if n is None or torch.device(device).type != 'cpu' or torch.get_num_threads() == n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_frames(frames: list[tuple[Scene, Pose, Intrinsics]], device='cpu', shadow_samples: int = 1,
                  noise_seeds: list[int] | None = None, groups_per_chunk: int | None = None,
                  cpu_threads: int | None = 1) -> tuple:
    """Render frames of one size; returns rgb uint8 [B,H,W,3], depth [B,H,W], mask [B,H,W] (torch, on device).
    Pixels are processed in TILE x TILE screen tiles so each tile only tests the objects its rays can reach.
    On CPU, rendering uses `cpu_threads` torch threads (None = leave the setting alone). groups_per_chunk bounds
    memory: tiles rendered at once (default 1024 on CPU, 16384 on a GPU, where bigger launches pay off)."""
    if groups_per_chunk is None:
        groups_per_chunk = 1024 if torch.device(device).type == 'cpu' else 16384
    with _cpu_threads(device, cpu_threads), torch.no_grad():
        return _render_frames(frames, device, shadow_samples, noise_seeds, groups_per_chunk)


def _render_frames(frames, device, shadow_samples, noise_seeds, groups_per_chunk):
    w, h = frames[0][2].width, frames[0][2].height
    if any((f[2].width, f[2].height) != (w, h) for f in frames):
        raise ValueError('render_frames: all frames of a batch must have the same size')
    p = pack(frames, device)
    bsz = len(frames)
    ty, tx = torch.meshgrid(torch.arange(0, h, TILE, device=device), torch.arange(0, w, TILE, device=device),
                            indexing='ij')
    oy, ox = torch.meshgrid(torch.arange(TILE, device=device), torch.arange(TILE, device=device), indexing='ij')
    px = (tx.reshape(-1, 1) + ox.reshape(1, -1)).clamp(max=w - 1)        # [T, TILE²] (edge tiles repeat pixels)
    py = (ty.reshape(-1, 1) + oy.reshape(1, -1)).clamp(max=h - 1)
    n_tiles = px.shape[0]
    flat = py * w + px
    depth = torch.empty((bsz, h * w), dtype=torch.float32, device=device)
    mask = torch.empty((bsz, h * w), dtype=torch.bool, device=device)
    colour = torch.empty((bsz, h * w, 3), dtype=torch.float32, device=device)
    frame_keys = [k for k, v in p.items() if torch.is_tensor(v) and v.shape[0] == bsz]
    for s in range(0, bsz * n_tiles, groups_per_chunk):
        gid = torch.arange(s, min(s + groups_per_chunk, bsz * n_tiles), device=device)
        fb, tile = torch.div(gid, n_tiles, rounding_mode='floor'), gid % n_tiles
        pg = {k: p[k][fb] for k in frame_keys}
        dg, mg, cg = _render_groups(pg, px[tile].float(), py[tile].float(), shadow_samples)
        rows = fb[:, None].expand_as(flat[tile])
        depth[rows, flat[tile]], mask[rows, flat[tile]], colour[rows, flat[tile]] = dg, mg, cg
    # auto exposure: the 97th percentile of luminance maps to 0.8 (linear)
    lum = colour.mean(-1)
    step = max(1, lum.shape[1] // 4096)
    ref = torch.quantile(lum[:, ::step], 0.97, dim=1).clamp_min(1e-3)
    colour = colour * (0.8 / ref)[:, None, None]
    # sensor noise from a pixel hash: deterministic, identical on every device
    seeds = torch.as_tensor(noise_seeds if noise_seeds is not None else list(range(bsz)), device=device)
    pix = torch.arange(h * w, device=device)
    for ch in range(3):
        nz = hash3(pix[None].expand(bsz, -1), torch.full_like(pix, ch)[None].expand(bsz, -1), seeds[:, None] * 3 + ch)
        colour[..., ch] += (nz - 0.5) * 0.02
    rgb = (colour.clamp(0.0, 1.0) ** (1.0 / 2.2) * 255.0 + 0.5).to(torch.uint8)
    return rgb.reshape(bsz, h, w, 3), depth.reshape(bsz, h, w), mask.reshape(bsz, h, w)
