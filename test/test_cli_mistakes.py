"""The mistakes a new user makes with `mgeo` and `mgeo_depth_node` each get a clear word: a non-zero exit, no
traceback, and a message naming what is wrong and what was expected. One case per mistake class (missing or
misspelled paths, wrong file kinds, damaged bags, typo'd or wrongly typed config values, out-of-range numbers, a
forgotten argument, outputs that would mix with data, empty results), run through the real `mgeo` entry point
in-process (argparse's exit included) and, for the console scripts themselves, as subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mgeo_ros.cli import main as mgeo_main
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.train.data import Sample, write_bag, write_folder

REPO = Path(__file__).resolve().parents[1]
W, H = 32, 24


def _samples(n: int = 3, depth_value: float = 2.0) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        depth = np.full((H, W), depth_value, np.float32)
        out.append(Sample(rgb, depth, Intrinsics(30.0, 30.0, 15.5, 11.5, W, H), np.isfinite(depth), True, str(i)))
    return out


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, Path]:
    """Every input the cases need: good and broken bags, datasets with no usable depth, ONNX files that are not
    MoGe models, a config with a wrongly typed value, an existing dataset, a tiny model."""
    import onnx
    from onnx import TensorProto, helper

    from mgeo_ros.model import build_model, preset
    from mgeo_ros.model.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp('mistakes')
    f: dict[str, Path] = {'root': root}
    f['bag'] = write_bag(_samples(), root / 'bag', storage='mcap')
    mcap = next(p for p in f['bag'].iterdir() if p.suffix == '.mcap')
    (root / 'truncated.mcap').write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    f['truncated'] = root / 'truncated.mcap'
    f['empty_mcap'] = root / 'empty.mcap'
    f['empty_mcap'].write_bytes(b'')
    f['no_metadata'] = root / 'no_metadata'
    f['no_metadata'].mkdir()
    (f['no_metadata'] / 'x.mcap').write_bytes(mcap.read_bytes())
    f['not_a_bag'] = root / 'notes.txt'
    f['not_a_bag'].write_text('not a bag\n')
    f['nan_data'] = root / 'nan_data'
    write_folder(_samples(depth_value=float('nan')), f['nan_data'])
    f['negative_data'] = root / 'negative_data'
    write_folder(_samples(depth_value=-3.0), f['negative_data'])
    f['dataset'] = root / 'dataset'
    write_folder(_samples(1), f['dataset'])
    f['model'] = root / 'tiny'
    save_checkpoint(build_model(preset('tiny')), f['model'])
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'not_moge', [x], [y])
    f['foreign_onnx'] = root / 'foreign.onnx'
    onnx.save(helper.make_model(graph), str(f['foreign_onnx']))
    f['garbage_onnx'] = root / 'garbage.onnx'
    f['garbage_onnx'].write_bytes(b'\x00garbage' * 64)
    f['typo_config'] = root / 'typo.yaml'
    f['typo_config'].write_text('lr: 1e-3\nbatch_size: four\n')
    f['a_file'] = root / 'a_file'
    f['a_file'].write_text('x')
    f['no_weights'] = root / 'no_weights'
    f['no_weights'].mkdir()
    (f['no_weights'] / 'config.json').write_text((f['model'] / 'config.json').read_text())
    f['run'] = root / 'run'
    f['run'].mkdir()
    (f['run'] / 'latest.txt').write_text('step_000010\n')
    return f


def run_mgeo(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of `mgeo ARGV` in this process; argparse's SystemExit counts as the exit code."""
    try:
        code = mgeo_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


# (id, argv with {placeholders} from `files`, expected exit code, words the message must hold)
CASES = [
    # out-of-range numbers and malformed values: refused by the parser, exit 2, before any work
    ('kinds-typo', ['synth', '--out', '{root}/s1', '--kinds', 'indor'], 2, ['indor', 'indoor', 'did you mean']),
    ('negative-seed', ['synth', '--out', '{root}/s2', '--seed', '-5'], 2, ['--seed', '>= 0', '-5']),
    ('patch-zero', ['refine', '{dataset}', '--teacher', '{model}', '--out', '{root}/r', '--patch', '0'], 2,
     ['--patch', '>= 1']),
    ('compute-capability', ['build-engine', '{foreign_onnx}', '-o', '{root}/e.engine', '--compute-capability', '89'],
     2, ['--compute-capability', 'SM89', '8.9']),
    ('bench-runs-zero', ['bench', 'preset:tiny', '--runs', '0'], 2, ['--runs', '>= 1']),
    ('export-tokens-huge', ['export', '{model}', '--output', '{root}/x.onnx', '--size', '96x72', '--num-tokens',
                            '100000'], 2, ['--num-tokens', '10000', 'tokens']),
    ('export-tokens-zero', ['export', '{model}', '--output', '{root}/x.onnx', '--size', '96x72', '--num-tokens', '0'],
     2, ['--num-tokens', '[16, 10000]']),
    ('eval-tokens-zero', ['eval', '{model}', '--data', 'synth:1:0', '--num-tokens', '0'], 2, ['--num-tokens']),
    ('tolerance-negative', ['data', 'extract', '{bag}', '--out', '{root}/x1', '--tolerance', '-1'], 2,
     ['--tolerance', 's']),
    ('demo-size', ['demo', '--size', '640'], 2, ['--size', 'WxH', '640x480']),
    ('export-size-tiny', ['export', '{model}', '--output', '{root}/x.onnx', '--size', '4x4'], 2,
     ['--size', 'at least 8x8', "'4x4'"]),
    ('export-size-star', ['export', '{model}', '--output', '{root}/x.onnx', '--size', '640*480'], 2,
     ['--size', 'WxH', "'640*480'"]),
    ('engine-camera-sizes', ['build-engine', '{foreign_onnx}', '-o', '{root}/e.engine', '--camera-sizes',
                             '640x480,4x4'], 2, ['--camera-sizes', 'at least 8x8', "'4x4'"]),
    ('bench-size', ['bench', 'preset:tiny', '--size', '640*480'], 2, ['--size', 'WxH', "'640*480'"]),
    ('forgotten-config', ['train'], 2, ['config is required', 'tiny.yaml']),
    ('missing-required', ['eval', '{model}'], 2, ['--data', 'required']),
    # wrongly typed config values, a config that does not exist
    ('config-wrong-type', ['train', '{typo_config}'], 1, ['batch_size', 'integer', "'four'"]),
    ('config-out-of-range', ['train', 'config/train/tiny.yaml', '--set', 'lr=-1'], 1, ['lr', '-1']),
    ('config-missing', ['train', '{root}/nope.yaml'], 1, ['nope.yaml', 'no such file']),
    ('config-not-a-list', ['train', 'config/train/tiny.yaml', '--set', 'datasets=5'], 1, ['datasets', 'list']),
    ('config-unknown-key', ['train', 'config/train/tiny.yaml', '--set', 'lrr=0.1'], 1, ['unknown keys', 'lrr']),
    # outputs that would overwrite or mix with existing data
    ('out-is-a-file', ['synth', '--out', '{a_file}', '--count', '1'], 1, ['existing file', 'folder']),
    ('out-existing-dataset', ['synth', '--out', '{dataset}', '--count', '1'], 1, ['not empty', '--overwrite']),
    ('train-over-a-run', ['train', 'config/train/tiny.yaml', '--out', '{run}'], 1, ['--resume', '--overwrite']),
    ('eval-out-is-a-file', ['eval', '{model}', '--data', '{dataset}', '--out', '{a_file}'], 1, ['existing file']),
    # damaged or wrong bags: the bag is named and what is wrong with it said
    ('bag-empty', ['data', 'extract', '{empty_mcap}', '--out', '{root}/x2'], 1, ['empty.mcap', 'empty']),
    ('bag-truncated', ['data', 'extract', '{truncated}', '--out', '{root}/x3'], 1, ['truncated.mcap', 'truncated']),
    ('bag-no-metadata', ['eval', '{model}', '--data', '{no_metadata}'], 1, ['no_metadata', 'metadata.yaml']),
    ('not-a-bag', ['data', 'extract', '{not_a_bag}', '--out', '{root}/x4'], 1, ['notes.txt', 'not a bag']),
    ('bag-missing-topic', ['data', 'extract', '{bag}', '--out', '{root}/x5', '--image-topic', '/nope'], 1,
     ['/nope', 'no such topic', '/camera/image_raw']),
    ('info-as-depth-topic', ['data', 'extract', '{bag}', '--out', '{root}/x6', '--depth-topic',
                             '/camera/camera_info'], 1, ['/camera/camera_info', 'CameraInfo', 'expected']),
    ('replay-broken-bag', ['replay', '{truncated}'], 1, ['truncated.mcap', 'truncated']),
    ('distill-no-images', ['distill', 'config/train/tiny.yaml', '--teacher', '{model}', '--images', '{root}/none',
                           '--out', '{root}/d'], 1, ['--images', 'not a folder']),
    # missing files and files of the wrong kind
    ('import-missing', ['import-moge', '{root}/missing.pt', '{root}/imp'], 1, ['missing.pt', 'no such file']),
    ('check-engine-missing', ['check-engine', '{root}/missing.onnx'], 1, ['missing.onnx', 'no such file']),
    ('check-engine-wrong-kind', ['check-engine', '{typo_config}'], 1, ['typo.yaml', '.engine', '.onnx']),
    ('refine-missing-data', ['refine', '{root}/nodata', '--teacher', '{model}', '--out', '{root}/r2'], 1,
     ['nodata', 'does not exist', 'mgeo synth']),
    ('build-engine-missing', ['build-engine', '{root}/missing.onnx', '-o', '{root}/m.engine'], 1,
     ['missing.onnx', 'no such file', '.onnx', 'check the path']),
    ('inspect-missing', ['inspect', '{root}/missing.onnx'], 1, ['missing.onnx', 'no such file', 'check the path']),
    ('export-missing-checkpoint', ['export', '{root}/nomodel', '--output', '{root}/x.onnx', '--size', '64x48'], 1,
     ['nomodel', 'no such file', 'model.pt', 'check the path']),
    ('export-from-onnx-missing', ['export', '--from-onnx', '{root}/missing.onnx', '--output', '{root}/y.onnx'], 1,
     ['missing.onnx', 'no such file', 'fp32', 'check the path']),
    ('checkpoint-lacks-weights', ['export', '{no_weights}', '--output', '{root}/z.onnx', '--size', '64x48'], 1,
     ['model.safetensors', 'mgeo import-moge']),
    ('bench-missing-model', ['bench', '{root}/missing.onnx', '--runs', '1'], 2,
     ['missing.onnx', 'no such file', 'preset:tiny']),
    ('config-unknown-key-near', ['train', 'config/train/tiny.yaml', '--set', 'batch_sise=2'], 1,
     ['batch_sise', 'did you mean', 'batch_size', '--print-config']),
    ('check-engine-garbage', ['check-engine', '{garbage_onnx}'], 1, ['garbage.onnx', 'not a readable ONNX']),
    ('build-engine-foreign', ['build-engine', '{foreign_onnx}', '-o', '{root}/f.engine'], 1,
     ['foreign.onnx', 'not a MoGe model', 'points']),
    # empty results are errors that say why
    ('eval-all-nan', ['eval', '{model}', '--data', '{nan_data}', '--out', '{root}/ev1', '--quiet'], 1,
     ['valid ground-truth depth', 'NaN']),
    ('eval-negative', ['eval', '{model}', '--data', '{negative_data}', '--out', '{root}/ev2', '--quiet',
                       '--constant-depth', '2'], 1, ['valid ground-truth depth', 'negative']),
    ('extract-no-pairs', ['data', 'extract', '{bag}', '--out', '{root}/x7', '--tolerance', '1e-9',
                          '--depth-topic', '/camera/image_raw'], 1, ['no colour/depth pairs']),
]


@pytest.mark.parametrize('case_id, argv, code, words', CASES, ids=[c[0] for c in CASES])
def test_mistake_gets_a_clear_word(case_id, argv, code, words, files, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv('MGEO_DEBUG', raising=False)
    got, err = run_mgeo([a.format(**{k: str(v) for k, v in files.items()}) for a in argv], capsys)
    assert got == code, err
    assert 'Traceback' not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, err                              # a line or two, not a wall of text
    for word in words:
        assert word in err, (word, err)


def test_debug_shows_the_traceback_of_a_project_error(files, capsys, monkeypatch):
    from mgeo_ros.errors import BadInputError

    monkeypatch.setenv('MGEO_DEBUG', '1')
    with pytest.raises(BadInputError, match='empty'):
        mgeo_main(['data', 'extract', str(files['empty_mcap']), '--out', str(files['root'] / 'dbg')])
    monkeypatch.delenv('MGEO_DEBUG')
    with pytest.raises(BadInputError):
        mgeo_main(['--debug', 'data', 'extract', str(files['empty_mcap']), '--out', str(files['root'] / 'dbg')])


def test_yaml_exponent_is_a_number(files, capsys):
    import json

    assert mgeo_main(['train', 'config/train/tiny.yaml', '--print-config', '--set', 'encoder_lr=2e-5']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['encoder_lr'] == 2e-5
    from mgeo_ros.train.config import load_config

    path = files['root'] / 'exp.yaml'
    path.write_text('lr: 1e-3\nmax_steps: 5\n')
    cfg = load_config(path)
    assert isinstance(cfg.lr, float) and cfg.lr == 1e-3


def test_print_config_names_the_init_checkpoint_model(files, capsys):
    """With --init the checkpoint's own model trains, not the preset: --print-config says which."""
    import json

    assert mgeo_main(['train', 'config/train/tiny.yaml', '--print-config', '--init', str(files['model'])]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['model'].startswith(f'{files["model"]}: MoGe-2'), printed['model']
    assert mgeo_main(['train', 'config/train/tiny.yaml', '--print-config']) == 0
    assert json.loads(capsys.readouterr().out)['model'] == 'tiny'


def test_import_moge_help_names_both_families(capsys):
    with pytest.raises(SystemExit) as exc:
        mgeo_main(['import-moge', '--help'])
    assert exc.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert 'MoGe-2 or MoGe-3' in text


def test_version_and_help_exit_cleanly():
    from mgeo_ros import __version__

    env = dict(os.environ, PYTHONPATH=str(REPO))
    version = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', '--version'], capture_output=True, text=True,
                             env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f'mgeo {__version__}'
    train = subprocess.run([sys.executable, '-m', 'mgeo_ros.cli', 'train'], capture_output=True, text=True, env=env,
                           timeout=120)
    assert train.returncode == 2 and 'usage: mgeo train CONFIG.yaml' in train.stderr
    assert 'Traceback' not in train.stderr


def test_node_help_prints_every_parameter_and_exits_without_ros(ros_env):
    from mgeo_ros.node_params import PARAMS

    env = dict(ros_env, PYTHONPATH=str(REPO), ROS_DOMAIN_ID='231')  # a domain nobody uses: nothing may appear there
    res = subprocess.run([sys.executable, '-m', 'mgeo_ros.ros.node', '--help'], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('usage: mgeo_depth_node')
    assert 'depth/image' in res.stdout and 'camera_info' in res.stdout
    for spec in PARAMS:
        assert f'  {spec.name}' in res.stdout
    assert 'num_tokens [tokens] (default 1200, range 16..10000)' in res.stdout
    assert 'max_depth [m] (default 0' in res.stdout
    assert 'model loaded' not in res.stderr and '[INFO]' not in res.stderr   # no node was started
    bad = subprocess.run([sys.executable, '-m', 'mgeo_ros.ros.node', '--frobnicate'], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and '--frobnicate' in bad.stderr and 'Traceback' not in bad.stderr


def test_undeclared_parameter_warning_names_the_nearest():
    from mgeo_ros.node_params import PARAMS, undeclared_warnings

    declared = [p.name for p in PARAMS] + ['use_sim_time']
    warnings = undeclared_warnings(['num_token', 'use_sim_time', 'max_dpeth', 'zzz_unrelated', 'num_tokens',
                                    'qos_overrides./x.publisher.depth'], declared)
    assert len(warnings) == 3
    assert "'max_dpeth'" in warnings[0] and 'did you mean max_depth?' in warnings[0]
    assert "'num_token'" in warnings[1] and 'did you mean num_tokens?' in warnings[1]
    assert "'zzz_unrelated'" in warnings[2] and '--help' in warnings[2]


def test_node_warns_about_a_misspelled_parameter(ros_env, tmp_path):
    """A real node started with `-p num_token:=300` (a params file adds another typo) says so at start."""
    import time

    sys.path.insert(0, str(Path(__file__).parent))
    from node_harness import node_command

    params = tmp_path / 'params.yaml'
    params.write_text('mgeo_depth_node:\n  ros__parameters:\n    mask_treshold: 0.7\n')
    env = dict(ros_env, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(node_command() + ['--ros-args', '-p', 'num_token:=300', '-p', 'backend:=onnxruntime',
                                              '-p', 'model:=/nonexistent/none.onnx', '--params-file', str(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing claim
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            seen.append(line)
            if sum('is not a parameter of this node' in s for s in seen) >= 2:
                break
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = ''.join(seen)
    assert "'num_token' is not a parameter of this node and is ignored; did you mean num_tokens?" in text, text
    assert "'mask_treshold'" in text and 'did you mean mask_threshold?' in text, text
