"""Real-data refinement: edge misalignment is filtered and holes are completed closer to the clean truth."""
import json

import numpy as np

from mgeo_ros.train.refine import RefineConfig, mismatch_filter, poisson_fill, refine_depth


def _clean_scene(h=60, w=80):
    """A tilted floor-to-wall background with a box in front: depth edges with a 2x jump."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = 6.0 - 2.0 * yy / h + 0.5 * xx / w
    box = (yy > 15) & (yy < 45) & (xx > 25) & (xx < 55)
    depth[box] = 2.5 + 0.01 * xx[box]
    return depth, box


def _corrupt(clean, box, seed=0):
    """Edge bleeding (box depth smeared 3 px right and down into the background) + rectangular holes + noise."""
    rng = np.random.default_rng(seed)
    noisy = clean * (1 + 0.003 * rng.standard_normal(clean.shape))
    bled = np.zeros_like(box)
    for dy in range(4):
        for dx in range(4):
            bled[dy:, dx:] |= box[:clean.shape[0] - dy, :clean.shape[1] - dx]
    smear = bled & ~box
    noisy[smear] = 2.6
    holes = np.zeros_like(box)
    holes[5:12, 5:20] = True
    holes[30:38, 60:70] = True
    holes[20:26, 30:36] = True        # a hole inside the box
    noisy[holes] = np.nan
    return noisy, smear, holes


def _bad_rate(depth, clean, tol=0.05):
    ok = np.isfinite(depth)
    return float(np.mean(np.abs(depth[ok] - clean[ok]) / clean[ok] > tol)), float(ok.mean())


def test_refinement_moves_corrupted_depth_toward_the_truth():
    clean, box = _clean_scene()
    noisy, smear, holes = _corrupt(clean, box)
    teacher = 0.37 * clean                       # right shapes and edges, wrong scale
    result = refine_depth(noisy, teacher, RefineConfig(patch=16, threshold=0.05))
    # the filter removes most of the bled pixels and few good ones
    assert result.removed[smear].mean() > 0.8
    assert result.removed[~smear & np.isfinite(noisy)].mean() < 0.02
    # holes (original + removed) are filled, and the output is close to the clean depth everywhere
    bad_before, cover_before = _bad_rate(noisy, clean)
    bad_after, cover_after = _bad_rate(result.depth, clean)
    assert cover_after > 0.99 and cover_after > cover_before
    assert bad_after < 0.25 * bad_before
    assert result.filled[holes].all()
    rel_fill = np.abs(result.depth[holes] - clean[holes]) / clean[holes]
    assert np.median(rel_fill) < 0.01 and rel_fill.max() < 0.05
    assert result.stats['removed'] == int(result.removed.sum()) and result.stats['filled'] == int(result.filled.sum())


def test_poisson_fill_reproduces_teacher_shape_from_the_boundary():
    clean, _ = _clean_scene()
    known = np.ones_like(clean, dtype=bool)
    known[20:40, 20:60] = False
    teacher = np.exp(np.log(clean) + 0.7)        # log-depth offset: gradients identical
    out = poisson_fill(np.where(known, clean, np.nan), teacher, known, ~known)
    np.testing.assert_allclose(out[~known], clean[~known], rtol=1e-4)
    np.testing.assert_array_equal(out[known], clean[known])


def test_filter_keeps_a_consistent_frame_untouched():
    clean, _ = _clean_scene()
    assert not mismatch_filter(clean, 2.0 * clean, RefineConfig()).any()


def test_refine_cli_writes_folder_and_report(tmp_path):
    import torch  # pinned requirement: fail, never skip

    from mgeo_ros.model import build_model, save_checkpoint
    from mgeo_ros.model.configs import preset
    from mgeo_ros.train.data import SyntheticDataset, write_folder
    from mgeo_ros.train.refine_cli import main

    torch.manual_seed(0)
    save_checkpoint(build_model(preset('tiny')), tmp_path / 'teacher')
    samples = [SyntheticDataset(count=2, seed=5, size=(64, 48))[i] for i in range(2)]
    write_folder(samples, tmp_path / 'data')
    rc = main([str(tmp_path / 'data'), '--teacher', str(tmp_path / 'teacher'), '--out', str(tmp_path / 'out'),
               '--num-tokens', '16'])
    assert rc == 0
    report = json.loads((tmp_path / 'out' / 'refine_report.json').read_text())
    assert len(report['frames']) == 2
    for frame in report['frames']:
        assert {'name', 'removed', 'filled', 'valid_in', 'valid_out'} <= set(frame)
    assert sorted(p.name for p in (tmp_path / 'out' / 'depth').iterdir()) == ['000000.npy', '000001.npy']
    out_depth = np.load(tmp_path / 'out' / 'depth' / '000000.npy')
    assert out_depth.shape == (48, 64)
