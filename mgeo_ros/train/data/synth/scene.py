"""Random scene and camera sampling (numpy, CPU): everything random about a synthetic frame is decided here, from one
seed, so rendering on CPU or GPU gives the same picture. World frame: z up, metres."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from mgeo_ros.geometry.intrinsics import Intrinsics

# texture kinds (see textures.py); feature sizes in metres so that texture carries scale
NOISE, TILES, WOOD, BRICK, FACADE = 0, 1, 2, 3, 4

OUTDOOR_RANGE_M = 80.0          # ground and buildings end here; beyond is sky (invalid depth)
ROOM_SIZE_M = (2.5, 12.0)       # indoor room width/length
ROOM_HEIGHT_M = (2.4, 3.6)
CAMERA_HEIGHT_M = (0.2, 2.0)
FOV_DEG = (40.0, 110.0)         # horizontal
TILT_DEG = 20.0                 # pitch and roll limit
PRINCIPAL_JITTER = 0.04         # fraction of width/height


@dataclass
class Scene:
    """Primitives and lights of one scene. Materials are rows of (kind, feature size m, seed, rgb1, rgb2)."""

    kind: str
    materials: list = field(default_factory=list)
    room: np.ndarray | None = None      # (6,) lo xyz, hi xyz of the room seen from inside
    outer: np.ndarray | None = None     # (6,) larger box seen through doorways
    doors: list = field(default_factory=list)   # (wall 0..3 = x-,x+,y-,y+, s0, s1, top z)
    surf_mat: dict = field(default_factory=dict)  # floor/wall/ceiling/outer_wall/outer_floor/ground -> material
    boxes: list = field(default_factory=list)   # (cx, cy, cz, hx, hy, hz, yaw, material)
    cyls: list = field(default_factory=list)    # (cx, cy, z0, z1, r, material)
    spheres: list = field(default_factory=list)  # (cx, cy, cz, r, material)
    lights: list = field(default_factory=list)  # indoor: (x, y, z, power, radius); outdoor: (dx, dy, dz, power, cone)
    ambient: float = 0.3
    sky: tuple = ((0.75, 0.82, 0.9), (0.35, 0.55, 0.85))  # horizon, zenith


@dataclass
class Pose:
    """Camera pose: position (3,) and world-from-optical rotation (3x3, columns = x right, y down, z forward)."""

    position: np.ndarray
    rotation: np.ndarray


@dataclass(frozen=True)
class CameraMount:
    """A camera fixed on a ground robot: height above the floor (m), pitch (deg, down positive) and roll (deg, about
    the optical axis, as in `camera_rotation`). A sequence with a mount keeps them constant while it drives."""

    height: float = 0.4
    pitch_deg: float = 15.0
    roll_deg: float = 0.0

    def as_dict(self) -> dict:
        return {'camera_height': self.height, 'camera_pitch': self.pitch_deg, 'camera_roll': self.roll_deg}


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-optical rotation: looking along yaw (from +x, CCW), pitch > 0 looks down, roll about the axis."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    level = np.array([[sy, 0.0, cy], [-cy, 0.0, sy], [0.0, -1.0, 0.0]])  # columns: right, down, forward
    cp, sp = math.cos(pitch), math.sin(pitch)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # pitch about the optical x axis
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return level @ rx @ rz


def sample_intrinsics(rng: np.random.Generator, width: int, height: int) -> Intrinsics:
    """Square pixels, horizontal FOV in FOV_DEG, principal point jittered around the centre."""
    centred = Intrinsics.from_fov(math.radians(rng.uniform(*FOV_DEG)), width, height)
    jitter_x = rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER) * width
    jitter_y = rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER) * height
    return replace(centred, cx=centred.cx + jitter_x, cy=centred.cy + jitter_y)


# ---- materials --------------------------------------------------------------------------------------------------
_PALETTES = {
    'plaster': [(0.85, 0.84, 0.8), (0.8, 0.78, 0.7), (0.7, 0.78, 0.8), (0.86, 0.8, 0.72), (0.6, 0.66, 0.58)],
    'tile': [(0.85, 0.85, 0.82), (0.7, 0.68, 0.62), (0.45, 0.47, 0.5), (0.8, 0.75, 0.65)],
    'wood': [(0.55, 0.36, 0.2), (0.68, 0.5, 0.32), (0.42, 0.27, 0.16), (0.75, 0.6, 0.42)],
    'brick': [(0.6, 0.28, 0.2), (0.55, 0.35, 0.27), (0.7, 0.45, 0.3), (0.5, 0.5, 0.5)],
    'fabric': [(0.3, 0.35, 0.55), (0.6, 0.2, 0.2), (0.25, 0.45, 0.3), (0.5, 0.5, 0.5), (0.8, 0.7, 0.3)],
    'asphalt': [(0.3, 0.3, 0.3), (0.38, 0.37, 0.35)],
    'grass': [(0.3, 0.45, 0.2), (0.4, 0.5, 0.25)],
    'concrete': [(0.6, 0.6, 0.58), (0.7, 0.68, 0.64), (0.5, 0.5, 0.52)],
    'metal': [(0.55, 0.57, 0.6), (0.25, 0.25, 0.27), (0.75, 0.75, 0.78)],
    'facade': [(0.8, 0.78, 0.72), (0.7, 0.66, 0.6), (0.6, 0.62, 0.66), (0.75, 0.6, 0.5)],
}


# family -> (texture kind, feature size range in metres)
_FEATURES = {
    'plaster': (NOISE, 0.1, 0.5),
    'tile': (TILES, 0.3, 0.6),
    'wood': (WOOD, 0.1, 0.2),          # plank width
    'brick': (BRICK, 1.0, 1.0),        # 0.2 x 0.06 m bricks, fixed in the texture
    'fabric': (NOISE, 0.02, 0.08),
    'asphalt': (NOISE, 0.05, 0.3),
    'grass': (NOISE, 0.05, 0.2),
    'concrete': (TILES, 1.0, 3.0),     # slabs with joints
    'metal': (NOISE, 0.3, 1.0),
    'facade': (FACADE, 2.4, 4.0),      # window spacing; storeys 3.2 m, windows ~1.2 x 1.5 m
}


def _jitter(rng, rgb, amount=0.08):
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0.03, 0.97)) for c in rgb)


def add_material(scene: Scene, rng: np.random.Generator, family: str) -> int:
    """Append a material of a family (plaster, tile, wood, brick, ...) with physically sized features; return its id."""
    base = _jitter(rng, _PALETTES[family][rng.integers(len(_PALETTES[family]))])
    # the second colour mostly varies brightness (stains, wear, grain) and only slightly hue
    gain = rng.uniform(0.55, 1.35)
    second = tuple(float(np.clip(c * gain + rng.uniform(-0.05, 0.05), 0.03, 0.97)) for c in base)
    kind, lo, hi = _FEATURES[family]
    size = rng.uniform(lo, hi)
    if family == 'brick' and rng.random() < 0.3:
        kind, size = TILES, rng.uniform(0.3, 0.6)
    scene.materials.append((kind, float(size), int(rng.integers(1, 2**30)), base, second))
    return len(scene.materials) - 1


# ---- camera paths -----------------------------------------------------------------------------------------------
def _path(rng, start_xy, lo_xy, hi_xy, height, n_frames, step_m, look_at=None, mount: CameraMount | None = None):
    """n_frames poses moving smoothly from start towards a random goal (clamped to the box lo..hi), turning gently.
    With look_at (x, y), the first view faces within ±70° of it (indoors: into the room rather than at a wall).
    With a mount, height, pitch and roll stay the mount's (a robot driving on the floor); the random draws are the
    same either way, so the scene does not change."""
    yaw0 = rng.uniform(-math.pi, math.pi)
    if look_at is not None:
        yaw0 = math.atan2(look_at[1] - start_xy[1], look_at[0] - start_xy[0]) + rng.uniform(-1.2, 1.2)
    pitch0, roll0 = (math.radians(rng.uniform(-TILT_DEG, TILT_DEG)) for _ in range(2))
    if mount is not None:
        height, pitch0, roll0 = mount.height, math.radians(mount.pitch_deg), math.radians(mount.roll_deg)
    if n_frames == 1:
        return [Pose(np.array([*start_xy, height]), camera_rotation(yaw0, pitch0, roll0))]
    heading = yaw0 + rng.uniform(-0.6, 0.6)
    length = step_m * (n_frames - 1)
    goal = np.clip(start_xy + length * np.array([math.cos(heading), math.sin(heading)]), lo_xy, hi_xy)
    dyaw = rng.uniform(-0.8, 0.8)
    wobble = math.radians(rng.uniform(0.0, 4.0))
    wobble, bob, fade = (0.0, 0.0, 0.0) if mount is not None else (wobble, 0.02, 0.3)
    poses = []
    for i in range(n_frames):
        s = i / (n_frames - 1)
        e = s * s * (3.0 - 2.0 * s)
        xy = (1.0 - e) * start_xy + e * goal
        z = height + bob * math.sin(2.0 * math.pi * s)
        pose = camera_rotation(yaw0 + dyaw * e, pitch0 + wobble * math.sin(math.pi * s), roll0 * (1.0 - fade * e))
        poses.append(Pose(np.array([xy[0], xy[1], z]), pose))
    return poses


def _clear_of(path_xy: np.ndarray, x: float, y: float, radius: float, margin: float = 0.35) -> bool:
    """True if a footprint centred at (x, y) with `radius` stays `margin` away from every camera position."""
    return bool(np.all(np.hypot(path_xy[:, 0] - x, path_xy[:, 1] - y) > radius + margin))


# ---- indoor -----------------------------------------------------------------------------------------------------
def _indoor(rng: np.random.Generator, n_frames: int, step_m: float,
            mount: CameraMount | None = None) -> tuple[Scene, list[Pose]]:
    s = Scene('indoor')
    w, l = rng.uniform(*ROOM_SIZE_M, size=2)
    h = rng.uniform(*ROOM_HEIGHT_M)
    s.room = np.array([0.0, 0.0, 0.0, w, l, h])
    pad = rng.uniform(1.5, 4.0)
    s.outer = np.array([-pad, -pad, 0.0, w + pad, l + pad, h])
    s.surf_mat = {'floor': add_material(s, rng, ['tile', 'wood', 'concrete', 'fabric'][rng.integers(4)]),
                  'wall': add_material(s, rng, 'brick' if rng.random() < 0.25 else 'plaster'),
                  'ceiling': add_material(s, rng, 'plaster' if rng.random() < 0.7 else 'tile'),
                  'outer_wall': add_material(s, rng, 'plaster'),
                  'outer_floor': add_material(s, rng, ['tile', 'wood'][rng.integers(2)])}
    for _ in range(rng.integers(0, 3)):
        wall = int(rng.integers(4))
        span = l if wall < 2 else w
        dw = rng.uniform(0.8, min(1.8, span * 0.5))
        s0 = rng.uniform(0.1, span - dw - 0.1)
        s.doors.append((wall, s0, s0 + dw, min(rng.uniform(2.0, 2.4), h - 0.1)))
    margin = 0.4
    start = rng.uniform([margin, margin], [w - margin, l - margin])
    cam_h = rng.uniform(CAMERA_HEIGHT_M[0], min(CAMERA_HEIGHT_M[1], h - 0.3))
    poses = _path(rng, start, np.array([margin, margin]), np.array([w - margin, l - margin]), cam_h, n_frames, step_m,
                  look_at=(w / 2, l / 2), mount=mount)
    path_xy = np.array([p.position[:2] for p in poses])

    def place(radius):  # a footprint centre inside the room, clear of the camera path, or None
        for _ in range(20):
            x = rng.uniform(radius, max(radius + 1e-3, w - radius))
            y = rng.uniform(radius, max(radius + 1e-3, l - radius))
            if _clear_of(path_xy, x, y, radius):
                return x, y
        return None

    n_obj = int(rng.integers(3, 4 + min(10, w * l / 6.0)))
    for _ in range(n_obj):
        what = rng.choice(['box', 'table', 'shelf', 'cylinder', 'sphere', 'pole', 'column'],
                          p=[0.3, 0.15, 0.12, 0.13, 0.12, 0.1, 0.08])
        mat = add_material(s, rng, ['wood', 'fabric', 'plaster', 'metal'][rng.integers(4)])
        if what in ('box', 'shelf'):
            hx, hy = (rng.uniform(0.15, 0.9, 2) if what == 'box' else (rng.uniform(0.4, 1.0), rng.uniform(0.15, 0.25)))
            hz = rng.uniform(0.15, 0.6) if what == 'box' else rng.uniform(0.7, min(1.1, h / 2 - 0.05))
            at = place(math.hypot(hx, hy))
            if at:
                s.boxes.append((at[0], at[1], hz, hx, hy, hz, rng.uniform(0, math.pi), mat))
        elif what == 'table':
            hx, hy = rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.6)
            top, thick, leg = rng.uniform(0.45, 0.8), rng.uniform(0.015, 0.03), rng.uniform(0.015, 0.035)
            at = place(math.hypot(hx, hy))
            if at:
                yaw = rng.uniform(0, math.pi)
                s.boxes.append((at[0], at[1], top - thick, hx, hy, thick, yaw, mat))
                c, sn = math.cos(yaw), math.sin(yaw)
                for ex, ey in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    lx, ly = ex * (hx - 2 * leg), ey * (hy - 2 * leg)
                    s.boxes.append((at[0] + c * lx - sn * ly, at[1] + sn * lx + c * ly, (top - 2 * thick) / 2,
                                    leg, leg, (top - 2 * thick) / 2, yaw, mat))
                if rng.random() < 0.5:
                    r = rng.uniform(0.05, 0.15)
                    s.spheres.append((at[0], at[1], top + r, r, add_material(s, rng, 'fabric')))
        elif what in ('cylinder', 'column', 'pole'):
            r = {'cylinder': rng.uniform(0.1, 0.4), 'column': rng.uniform(0.12, 0.3),
                 'pole': rng.uniform(0.01, 0.03)}[what]
            top = {'cylinder': rng.uniform(0.3, 1.2), 'column': h, 'pole': rng.uniform(1.2, min(2.0, h))}[what]
            at = place(r)
            if at:
                s.cyls.append((at[0], at[1], 0.0, top, r, mat))
                if what == 'pole' and rng.random() < 0.6:  # a lamp shade on the pole
                    s.spheres.append((at[0], at[1], top, rng.uniform(0.1, 0.2), add_material(s, rng, 'fabric')))
        else:
            r = rng.uniform(0.1, 0.45)
            at = place(r)
            if at:
                s.spheres.append((at[0], at[1], r, r, mat))
    for _ in range(int(rng.integers(0, 5))):  # pictures, panels and wall cabinets: thin boxes flush on a wall
        wall = int(rng.integers(4))
        span = l if wall < 2 else w
        half_w, half_h = rng.uniform(0.15, min(0.8, span / 4)), rng.uniform(0.15, 0.6)
        thick = rng.uniform(0.01, 0.03) if rng.random() < 0.7 else rng.uniform(0.1, 0.2)
        along = rng.uniform(half_w, span - half_w)
        z = rng.uniform(max(half_h + 0.3, 1.0), max(half_h + 0.31, h - half_h - 0.2))
        into = (0.0, w, 0.0, l)[wall] + (thick if wall in (0, 2) else -thick)
        x, y = (into, along) if wall < 2 else (along, into)
        hx, hy = (thick, half_w) if wall < 2 else (half_w, thick)
        if _clear_of(path_xy, x, y, max(hx, hy), 0.1):
            s.boxes.append((x, y, z, hx, hy, half_h, 0.0, add_material(s, rng, ['wood', 'fabric', 'metal'][
                rng.integers(3)])))
    for _ in range(int(rng.integers(1, 4))):
        s.lights.append((rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * l, 0.8 * l), h - 0.15,
                         rng.uniform(0.6, 1.2) * (1.0 + w * l / 40.0), rng.uniform(0.1, 0.4)))
    s.ambient = rng.uniform(0.06, 0.15)
    return s, poses


# ---- outdoor ----------------------------------------------------------------------------------------------------
def _outdoor(rng: np.random.Generator, n_frames: int, step_m: float,
             mount: CameraMount | None = None) -> tuple[Scene, list[Pose]]:
    s = Scene('outdoor')
    s.surf_mat = {'ground': add_material(s, rng, ['asphalt', 'grass', 'concrete', 'tile'][rng.integers(4)])}
    cam_h = rng.uniform(*CAMERA_HEIGHT_M)
    poses = _path(rng, np.zeros(2), np.full(2, -15.0), np.full(2, 15.0), cam_h, n_frames, step_m * 3.0, mount=mount)
    path_xy = np.array([p.position[:2] for p in poses])
    for _ in range(int(rng.integers(4, 14))):
        hx, hy, hz = rng.uniform(3, 15), rng.uniform(3, 15), rng.uniform(2, 20)
        for _ in range(10):
            reach = math.hypot(hx, hy)  # keep the whole footprint on the ground disc
            dist, ang = rng.uniform(6, max(6.5, OUTDOOR_RANGE_M - 4 - reach)), rng.uniform(-math.pi, math.pi)
            x, y = dist * math.cos(ang), dist * math.sin(ang)
            if _clear_of(path_xy, x, y, math.hypot(hx, hy), 1.0):
                s.boxes.append((x, y, hz, hx, hy, hz, rng.uniform(0, math.pi),
                                add_material(s, rng, ['brick', 'facade', 'facade', 'concrete'][rng.integers(4)])))
                break
    for _ in range(int(rng.integers(3, 12))):  # poles, bollards, trees, cars
        dist, ang = rng.uniform(1.5, 40), rng.uniform(-math.pi, math.pi)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        what = rng.choice(['pole', 'bollard', 'tree', 'car', 'ball'])
        if what == 'car':
            hx, hy, hz = 2.2, 0.9, rng.uniform(0.6, 0.8)
            if _clear_of(path_xy, x, y, 2.4):
                s.boxes.append((x, y, hz + 0.2, hx, hy, hz, rng.uniform(0, math.pi), add_material(s, rng, 'metal')))
        elif what == 'ball':
            r = rng.uniform(0.2, 1.0)
            if _clear_of(path_xy, x, y, r):
                s.spheres.append((x, y, r, r, add_material(s, rng, 'concrete')))
        else:
            r, top = {'pole': (rng.uniform(0.04, 0.15), rng.uniform(3, 9)), 'bollard': (rng.uniform(0.08, 0.2), 1.0),
                      'tree': (rng.uniform(0.1, 0.3), rng.uniform(2, 5))}[what]
            crown = rng.uniform(1.0, 3.0) if what == 'tree' else 0.0
            if _clear_of(path_xy, x, y, max(r, crown)):
                s.cyls.append((x, y, 0.0, top, r, add_material(s, rng, 'wood' if what == 'tree' else 'metal')))
                if what == 'tree':
                    s.spheres.append((x, y, top + crown * 0.7, crown, add_material(s, rng, 'grass')))
    elev, azim = math.radians(rng.uniform(20, 70)), rng.uniform(-math.pi, math.pi)
    s.lights.append((math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev),
                     rng.uniform(0.7, 1.0), math.radians(rng.uniform(0.25, 0.6))))  # the sun: ~0.27 deg radius
    s.ambient = rng.uniform(0.15, 0.3)
    return s, poses


def sample_setup(seed: int, width: int, height: int, kinds=('indoor', 'outdoor'), n_frames: int = 1,
                 step_m: float = 0.05, mount: CameraMount | None = None) -> tuple[Scene, list[Pose], Intrinsics]:
    """Everything random about scene `seed`: the scene, n_frames camera poses (a smooth path; with a mount, at its
    fixed height, pitch and roll), the intrinsics."""
    rng = np.random.default_rng(int(seed))
    kind = kinds[int(rng.integers(len(kinds)))]
    intr = sample_intrinsics(rng, width, height)
    scene, poses = (_indoor if kind == 'indoor' else _outdoor)(rng, n_frames, step_m, mount)
    return scene, poses, intr
