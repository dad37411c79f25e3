"""Procedural synthetic scenes: determinism, exact depth on known planes, metric scale ranges, CLI."""
import math

import numpy as np
import pytest
import torch

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data import FolderDataset, SyntheticDataset, render_batch, render_scene, render_sequence
from mgeo_ros.train.data.synth.render import render_frames
from mgeo_ros.train.data.synth.scene import Pose, Scene, add_material, camera_rotation, sample_setup
from mgeo_ros.train.data.validate import check_folder

torch.set_num_threads(1)


def test_deterministic_by_seed_and_independent_of_batch():
    a = render_scene(11, (48, 36))
    b = render_batch([5, 11, 12], (48, 36)).samples()[1]
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth, equal_nan=True)
    assert a.intrinsics == b.intrinsics and a.source == 'synth:11'
    c = render_scene(12, (48, 36))
    assert not np.array_equal(a.rgb, c.rgb)
    ds = SyntheticDataset(3, seed=10, size=(48, 36))
    assert len(ds) == 3 and np.array_equal(ds[1].rgb, a.rgb) and np.array_equal(ds[-2].rgb, a.rgb)
    with pytest.raises(IndexError):
        ds[3]


def test_sample_contract():
    for s in render_batch(range(4), (40, 30)).samples():
        assert s.rgb.shape == (30, 40, 3) and s.rgb.dtype == np.uint8
        assert s.depth.shape == (30, 40) and s.depth.dtype == np.float32
        assert np.array_equal(s.mask, np.isfinite(s.depth)) and s.mask.any() and s.metric
        assert (s.intrinsics.width, s.intrinsics.height) == (40, 30)


def _wall_scene(distance):
    """An empty room whose +x wall is `distance` in front of a level camera at x = 1 looking along +x."""
    rng = np.random.default_rng(0)
    s = Scene('indoor')
    s.room = np.array([0.0, -20.0, 0.0, 1.0 + distance, 20.0, 40.0])
    s.outer = s.room + np.array([-1, -1, 0, 1, 1, 0])
    s.surf_mat = {n: add_material(s, rng, 'plaster') for n in ('floor', 'wall', 'ceiling', 'outer_wall',
                                                               'outer_floor')}
    s.lights.append((1.0, 0.0, 5.0, 1.0, 0.2))
    return s


@pytest.mark.parametrize('distance', [1.7, 4.25, 9.0])
def test_fronto_parallel_wall_has_exactly_its_distance(distance):
    intr = Intrinsics(60.0, 60.0, 30.3, 19.8, 64, 40)       # narrow enough that the wall fills the view
    pose = Pose(np.array([1.0, 0.0, 20.0]), camera_rotation(0.0, 0.0, 0.0))
    _, depth, mask = render_frames([(_wall_scene(distance), pose, intr)])
    assert mask.all()
    np.testing.assert_allclose(depth.numpy(), distance, rtol=1e-6)


def test_floor_depth_matches_geometry_for_a_tilted_rolled_camera():
    intr = Intrinsics(45.0, 45.0, 33.1, 21.4, 64, 48)
    height, pitch, roll = 1.3, math.radians(15.0), math.radians(12.0)
    R = camera_rotation(0.4, pitch, roll)
    s = _wall_scene(30.0)
    pose = Pose(np.array([1.0, 0.0, height]), R)
    _, depth, mask = render_frames([(s, pose, intr)])
    # analytic: a pixel's ray is R @ ((u-cx)/fx, (v-cy)/fy, 1); it meets the floor z = 0 at z-depth -height / ray_z
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    rays = np.stack(((u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u, dtype=float)), -1) @ R.T
    t_floor = np.where(rays[..., 2] < 0, -height / np.where(rays[..., 2] < 0, rays[..., 2], -1), np.inf)
    on_floor = np.isfinite(t_floor) & (t_floor < 5.0)     # well before the walls
    assert on_floor.sum() > 200
    np.testing.assert_allclose(depth.numpy()[0][on_floor], t_floor[on_floor], rtol=2e-5)
    # optical frame: y points down, so the lower rows of a level camera see the (near) floor
    level = render_frames([(s, Pose(np.array([1.0, 0.0, height]), camera_rotation(0.0, 0.0, 0.0)), intr)])[1][0]
    assert level[-1].mean() < level[0].mean()


def test_scale_statistics_in_stated_ranges():
    n_in = n_out = 0
    for seed in range(16):
        scene, poses, intr = sample_setup(seed, 48, 36)
        fov = math.degrees(intr.fov_x)
        assert 40.0 - 1e-6 <= fov <= 110.0 + 1e-6
        assert abs(intr.cx - 23.5) <= 0.04 * 48 + 1e-9 and abs(intr.cy - 17.5) <= 0.04 * 36 + 1e-9
        assert 0.2 - 1e-9 <= poses[0].position[2] <= 2.0 + 1e-9
        forward = poses[0].rotation[:, 2]
        assert math.degrees(abs(math.asin(forward[2]))) <= 20.0 + 1e-6
        sample = render_scene(seed, (48, 36))
        d = sample.depth[sample.mask]
        if scene.kind == 'indoor':
            n_in += 1
            w, l, h = scene.room[3:] - scene.room[:3]
            assert 2.5 <= w <= 12.0 and 2.5 <= l <= 12.0 and 2.4 <= h <= 3.6
            assert sample.mask.all()                     # closed rooms: every pixel has depth
            assert d.max() <= math.dist(scene.outer[:3], scene.outer[3:]) + 1e-3
        else:
            n_out += 1
            # the ground ends 80 m out and buildings stand on it; only building tops (<= 40 m) reach further
            assert d.max() <= math.hypot(80.0, 40.0)
            assert all(math.hypot(b[0], b[1]) + math.hypot(b[3], b[4]) <= 80.0 for b in scene.boxes)
            assert 0.5 <= np.median(d) <= 80.0
        assert d.min() > 0.0
    assert n_in >= 3 and n_out >= 3


def test_sequence_moves_smoothly_through_one_scene():
    seq = render_sequence(4, 6, (40, 30), kinds=('indoor',), step_m=0.05)
    assert [s.source for s in seq] == [f'synth:4:{i}' for i in range(6)]
    _, poses, _ = sample_setup(4, 40, 30, ('indoor',), n_frames=6, step_m=0.05)
    steps = [np.linalg.norm(poses[i + 1].position - poses[i].position) for i in range(5)]
    assert max(steps) < 0.15 and sum(steps) > 0.0
    diffs = [np.nanmean(np.abs(seq[i + 1].depth - seq[i].depth)) for i in range(5)]
    assert max(diffs) < 0.5 and all(s.intrinsics == seq[0].intrinsics for s in seq)


def test_synth_cli_writes_checked_folder(tmp_path, capsys):
    out = tmp_path / 'synth'
    assert mgeo_main(['synth', '--out', str(out), '--count', '3', '--seed', '7', '--size', '32x24']) == 0
    assert 'samples/s' in capsys.readouterr().out
    assert check_folder(out) == ([], 3)
    ds = FolderDataset(out)
    ref = render_scene(8, (32, 24))
    assert np.array_equal(ds[1].rgb, ref.rgb) and np.array_equal(ds[1].depth, ref.depth, equal_nan=True)


def _edges(values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positions along u where a 1-D albedo profile switches between two classes (dark joints vs the rest)."""
    dark = values < (values.max() + values.min()) / 2
    return u[1:][dark[1:] & ~dark[:-1]]


@pytest.mark.parametrize('size', [0.3, 0.45, 0.6])
def test_tile_texture_period_is_in_metres(size):
    from mgeo_ros.train.data.synth.scene import TILES
    from mgeo_ros.train.data.synth.textures import albedo

    u = torch.arange(0.0, 3.0, 0.001)
    v = torch.full_like(u, 0.17)                          # a row through the middle of tiles
    ones = torch.ones_like(u)
    c = torch.tensor([[0.8, 0.8, 0.8]]).expand(len(u), 3)
    kind, seed = torch.full_like(u, TILES, dtype=torch.long), torch.full_like(u, 5, dtype=torch.long)
    col = albedo(u, v, kind, ones * size, seed, c, c, ones * 1e-4)   # tiny pixel footprint: full detail
    starts = _edges(col.mean(-1).numpy(), u.numpy())
    np.testing.assert_allclose(np.diff(starts), size, atol=0.002)


def test_brick_texture_has_real_brick_size():
    from mgeo_ros.train.data.synth.scene import BRICK
    from mgeo_ros.train.data.synth.textures import albedo

    z = torch.arange(0.0, 1.0, 0.001)
    ones = torch.ones_like(z)
    c = torch.tensor([[0.3, 0.15, 0.1]]).expand(len(z), 3)
    kind, seed = torch.full_like(z, BRICK, dtype=torch.long), torch.full_like(z, 3, dtype=torch.long)
    col = albedo(ones * 0.05, z, kind, ones, seed, c, c, ones * 1e-4)
    light = col.mean(-1).numpy() > 0.5                    # mortar joints are light
    starts = z.numpy()[1:][light[1:] & ~light[:-1]]
    np.testing.assert_allclose(np.diff(starts), 0.07, atol=0.002)   # 6 cm brick + 1 cm joint per course
    # far away (pixel footprint 10 cm) the joints fade to the mean colour instead of aliasing
    far = albedo(ones * 0.05, z, kind, ones, seed, c, c, ones * 0.1)
    assert far.std(0).max() < 0.02


def test_chunking_does_not_change_the_picture():
    frames = []
    for seed in (2, 3):
        scene, poses, intr = sample_setup(seed, 44, 30)   # 44x30: edge tiles repeat pixels
        frames.append((scene, poses[0], intr))
    a = render_frames(frames)
    b = render_frames(frames, groups_per_chunk=7)
    for x, y in zip(a, b):
        assert torch.equal(x, y) if x.dtype != torch.float32 else torch.allclose(x, y, equal_nan=True)
