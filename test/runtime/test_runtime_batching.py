"""Several cameras, one model: `mgeo export --batch N` parity against batch-1 runs, batched torch forward, and the
shared model's scheduling (batches formed, fair service, sizes kept apart) on real backends."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from camera_threads import picture_frames, run_cameras
from runtime_wellposed import wellposed_tiny

from mgeo_ros.runtime import Predictor
from mgeo_ros.runtime.batching import SharedModel
from mgeo_ros.runtime.preprocess import Preprocessor

NUM_TOKENS = 40
SIZE = (96, 72)


@pytest.fixture(scope='module')
def tiny_model():
    return wellposed_tiny(7)


@pytest.fixture(scope='module')
def exports(tiny_model, tmp_path_factory):
    from mgeo_ros.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp('batch_onnx')
    return {n: export_onnx(tiny_model, str(folder / f'tiny_b{n}.onnx'), SIZE, num_tokens=NUM_TOKENS, batch=n)
            for n in (1, 4)}


def test_batch4_export_matches_four_batch1_runs(exports):
    b4, b1 = exports[4], exports[1]
    graph = onnx.load(b4.path)
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 3, b4.input_size[1], b4.input_size[0]]
    assert {p.key: p.value for p in graph.metadata_props}['batch'] == '4'
    assert all(err['rel_l2'] < 1e-4 for err in b4.parity.values()), b4.parity  # vs PyTorch on 4 pictures

    one = Predictor(b1.path, backend='onnxruntime')
    four = Predictor(b4.path, backend='onnxruntime')
    assert (one.backend.max_batch, four.backend.max_batch) == (1, 4)
    pre = Preprocessor(NUM_TOKENS, four.backend.input_size)
    images = np.concatenate([pre(f).copy() for f in picture_frames(4)])
    tokens = int(four.num_tokens)
    batched = four.backend.forward_batch(images, tokens)
    singles = [one.backend.forward(images[i:i + 1], tokens) for i in range(4)]
    assert len(batched) == 4
    for i, (a, b) in enumerate(zip(batched, singles, strict=True)):
        np.testing.assert_allclose(a.points, b.points, rtol=1e-4, atol=1e-5, err_msg=f'points {i}')
        np.testing.assert_allclose(a.mask, b.mask, rtol=1e-4, atol=1e-5, err_msg=f'mask {i}')
        assert a.metric_scale == pytest.approx(b.metric_scale, rel=1e-5)
    assert not np.allclose(batched[0].points, batched[1].points)  # the four frames really differ

    # a short batch is padded: 3 frames, and one frame through plain predict(), give the batch-1 answers
    short = four.backend.forward_batch(images[:3], tokens)
    assert len(short) == 3
    np.testing.assert_allclose(short[2].points, singles[2].points, rtol=1e-4, atol=1e-5)
    frame = picture_frames(1)[0]
    a, b = four.predict(frame), one.predict(frame)
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_torch_backend_runs_a_batch_natively(tiny_model):
    pred = Predictor(tiny_model, backend='torch', num_tokens=NUM_TOKENS)
    pre = Preprocessor(NUM_TOKENS)
    images = np.concatenate([pre(f).copy() for f in picture_frames(3)])
    tokens = (images.shape[3] // 14) * (images.shape[2] // 14)
    batched = pred.backend.forward_batch(images, tokens)
    for i, raw in enumerate(batched):
        single = pred.backend.forward(images[i:i + 1], tokens)
        np.testing.assert_allclose(raw.points, single.points, rtol=1e-4, atol=1e-5)
        assert raw.metric_scale == pytest.approx(single.metric_scale, rel=1e-5)


def test_shared_model_batches_and_serves_every_camera_alike(exports):
    shared = SharedModel(Predictor(exports[4].path, backend='onnxruntime'))
    try:
        assert shared.max_batch == 4
        frames = dict(zip([f'cam{i}' for i in range(6)], picture_frames(6), strict=True))  # more cameras than the batch
        results = run_cameras(shared, frames, target=20)
        counts = {n: len(r) for n, r in results.items()}
        # nobody starves: each camera's own per-frame work outside the queue runs on 2 shared cores, which under load
        # alone spreads the counts by up to about a third (measured 11-15 of 15 in CI); a starved camera gets a few
        assert min(counts.values()) >= 0.6 * max(counts.values()), counts
        sizes = shared.stats.batch_sizes
        assert max(sizes) == 4 and sizes[4] >= sizes.get(1, 0), sizes  # frames waiting together run together
        assert sum(shared.stats.served.values()) == sum(counts.values())
        waits = [p.timings_ms['batch_wait'] for r in results.values() for p in r]
        forwards = [p.timings_ms['forward'] for r in results.values() for p in r]
        # bounded by one round: with 6 cameras and batch 4, at most 2 forwards queued ahead plus the one in flight
        assert np.median(waits) <= 3 * max(forwards), (np.median(waits), max(forwards))
        # every camera's answer is its own frame's: same as a lone batch-1 run
        one = Predictor(exports[1].path, backend='onnxruntime')
        for name, preds in results.items():
            np.testing.assert_allclose(preds[-1].depth, one.predict(frames[name]).depth, rtol=1e-4, atol=1e-5,
                                       equal_nan=True, err_msg=name)
    finally:
        shared.close()


def test_shared_model_keeps_network_sizes_apart(tiny_model):
    shared = SharedModel(Predictor(tiny_model, backend='torch', num_tokens=NUM_TOKENS), max_batch=4)
    try:
        wide = picture_frames(2, 128, 64)
        frames = {'a': picture_frames(1)[0], 'b': wide[0], 'c': picture_frames(2)[1], 'd': wide[1]}
        results = run_cameras(shared, frames, target=6)
        for name, preds in results.items():
            assert preds and preds[-1].depth.shape == frames[name].shape[:2], name
        assert max(shared.stats.batch_sizes) <= 2  # two 4:3 and two 2:1 cameras: never one mixed batch
        assert shared.stats.batch_sizes[2] >= 1
    finally:
        shared.close()


def test_a_backend_error_reaches_only_its_batch_and_the_model_keeps_serving(exports):
    shared = SharedModel(Predictor(exports[1].path, backend='onnxruntime'))
    try:
        with pytest.raises(ValueError):
            shared.forward(np.zeros((1, 3, 14, 14), np.float32), 1, 'bad')  # wrong size for this model
        good = shared.view('good').predict(picture_frames(1)[0])
        assert good.depth.shape == (SIZE[1], SIZE[0])
        assert shared.stats.errors == 1 and shared.stats.served['bad'] == 1
    finally:
        shared.close()
