"""`mgeo demo`: the main job, end to end over real ROS 2.

1. render a held-out synthetic camera sequence and write it as a bag (image, camera_info, GT depth, and the scale
   anchors a robot's sensors would give: a sparse depth image on /camera/scale_anchor/depth, 300 GT pixels with 2 %
   noise, 32FC1, and a LaserScan of one image row on /camera/scale_anchor/scan, its frame on /tf_static);
2. export the model to ONNX for the bag's image size (ONNX Runtime is the CPU backend);
3. start `mgeo_depth_node` as its own process;
4. replay the bag into it over ROS 2 and record every output (depth, camera_info, points, mask, diagnostics);
5. evaluate the recorded depth against the GT and write `demo_out/` (metrics JSON, PNGs, latency table, summary).

Top level (like cli.py) because it drives every layer. ROS runs on localhost only, in a domain of this run's own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mgeo_ros.cli_args import float_in, non_negative_int, num_tokens, positive_int, size_wxh
from mgeo_ros.errors import BadInputError
from mgeo_ros.ros.fastdds import NEW, profile_env
from mgeo_ros.ros.replay_session import OUTPUT_TOPICS, replay_and_record
from mgeo_ros.runtime.predictor import default_model_path
from mgeo_ros.train.data.bag import depth_to_metres, stamp_ns

# Held out: training streams scenes from small seeds (config seed + step offsets), far below this one.
DEMO_SEED = 2_000_000_007
# The demo camera moves through an indoor scene: the domain of the default model's last training stage.
DEMO_KINDS = ('indoor',)
IMAGE_TOPIC = '/camera/image_raw'
INFO_TOPIC = '/camera/camera_info'
GT_TOPIC = '/camera/depth_gt/image'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', default='demo_out', help='report folder (default demo_out)')
    parser.add_argument('--model', default=None, help='model (checkpoint dir / .pt / .onnx); default: packaged model')
    parser.add_argument('--backend', default='auto', help='node backend (default auto: ONNX Runtime on a CPU)')
    parser.add_argument('--frames', type=positive_int, default=24, help='frames in the sample bag (default 24)')
    parser.add_argument('--size', type=size_wxh, default=(320, 240), help='image size WxH (default 320x240)')
    parser.add_argument('--rate', type=float_in(0.01, 1000.0, 'Hz'), default=2.0,
                        help='camera rate in Hz, played in real time (default 2)')
    parser.add_argument('--seed', type=non_negative_int, default=DEMO_SEED,
                        help='scene seed (default: a held-out seed)')
    parser.add_argument('--num-tokens', type=num_tokens, default=None, help='ViT tokens (default: the model\'s own)')
    parser.add_argument('--timeout', type=float_in(1.0, unit='s'), default=120.0,
                        help='seconds to wait for the node (default 120)')


class Steps:
    """Prints each step with its wall time, and keeps them for the report."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        print(f'[demo] {name} ...', flush=True)
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - t
        print(f'[demo] {name}: {self.times[name]:.1f} s', flush=True)
        return result

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def render_bag(out: Path, seed: int, frames: int, size: tuple[int, int], rate: float):
    """A camera moving through one synthetic room, as a bag; returns (bag dir, samples)."""
    from mgeo_ros.train.data import render_sequence, write_bag
    from mgeo_ros.train.data.synth.anchors import anchor_bag_topics

    samples = render_sequence(seed, frames, size=size, kinds=DEMO_KINDS)
    bag = out / 'input_bag'
    if bag.exists():
        import shutil

        shutil.rmtree(bag)
    anchor_topics, anchor_messages = anchor_bag_topics('camera_optical_frame', seed=seed)
    write_bag(samples, bag, storage='mcap', image_topic=IMAGE_TOPIC, depth_topic=GT_TOPIC, info_topic=INFO_TOPIC,
              rate_hz=rate, extra_topics=anchor_topics, extra_messages=anchor_messages)
    return bag, samples


def export_onnx(model: Path, out: Path, size: tuple[int, int], num_tokens: int | None) -> Path:
    """The node runs ONNX Runtime on a CPU: export once for this camera size (parity-checked)."""
    from mgeo_ros.export.onnx_export import export_onnx as export

    if num_tokens is None:  # the model's own lower token budget: the speed end of what it was trained for
        config = json.loads((model / 'config.json').read_text()) if (model / 'config.json').is_file() else {}
        num_tokens = int(config.get('num_tokens_range', [1200])[0])
    onnx_path = out / f'model_{size[0]}x{size[1]}_{num_tokens}tok.onnx'
    export(str(model), str(onnx_path), size=size, num_tokens=num_tokens)
    return onnx_path


def start_node(model: Path, backend: str, log_path: Path, env: dict) -> subprocess.Popen:
    """mgeo_depth_node in its own process, namespaced under /mgeo, reading the bag's camera topics."""
    cmd = [sys.executable, '-m', 'mgeo_ros.ros.node', '--ros-args',
           '-r', '__ns:=/mgeo', '-r', f'image:={IMAGE_TOPIC}', '-r', f'camera_info:={INFO_TOPIC}',
           '-p', f'model:={model}', '-p', f'backend:={backend}', '-p', 'input_qos:=reliable',
           '-p', 'input_qos_depth:=1', '-p', 'points_color:=true', '-p', 'diagnostics_period:=1.0']
    log = open(log_path, 'w')  # noqa: SIM115 - closed by the OS when the child exits
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def read_recording(path: Path) -> dict:
    """Messages of the recorded bag by topic, as (receive time ns, deserialized message) lists."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    by_topic: dict[str, list] = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for conn, t_ns, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((t_ns, reader.deserialize(raw, conn.msgtype)))
    return by_topic


def cloud_from_msg(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """x, y, z (H×W×3) and rgb (H×W×3 uint8, or None) of a recorded organized cloud."""
    from mgeo_ros.ros.cloud import unpack_points

    return unpack_points(msg.data, msg.height, msg.width, msg.point_step, msg.row_step, msg.fields,
                         msg.is_bigendian)


def latency_table(recorded: dict, stamps: list[int]) -> dict:
    """Image receive -> depth receive, both measured in this process (same clock), per frame stamp."""
    img_rx = {stamp_ns(m): t for t, m in recorded.get(IMAGE_TOPIC, [])}
    depth_rx = {stamp_ns(m): t for t, m in recorded.get('/mgeo/depth/image', [])}
    lat = np.array([(depth_rx[s] - img_rx[s]) / 1e6 for s in stamps if s in depth_rx and s in img_rx])
    rx = sorted(depth_rx.values())
    fps = (len(rx) - 1) / ((rx[-1] - rx[0]) / 1e9) if len(rx) > 1 else float('nan')
    return {
        'frames_sent': len(stamps), 'depth_received': len(depth_rx),
        'dropped': len(stamps) - len(depth_rx),
        'latency_ms_median': float(np.median(lat)) if lat.size else float('nan'),
        'latency_ms_p95': float(np.percentile(lat, 95)) if lat.size else float('nan'),
        'latency_ms_max': float(lat.max()) if lat.size else float('nan'),
        'output_fps': float(fps),
    }


def node_stage_times(recorded: dict) -> dict[str, str]:
    """The node's own last diagnostics key/values (per-stage latency, drops, scale)."""
    diags = recorded.get('/diagnostics', [])
    for _, arr in reversed(diags):
        for status in arr.status:
            if 'mgeo' in status.name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def training_median_depth(count: int = 32, seed: int = 0) -> float:
    """The constant-depth baseline: the median depth of the training distribution (scenes of the demo's
    kinds), taken as the median of per-frame GT medians over the first `count` scenes of a training stream."""
    from mgeo_ros.eval.evaluate import gt_median
    from mgeo_ros.train.data import SyntheticDataset

    batch = SyntheticDataset(count, seed=seed, size=(96, 72), kinds=DEMO_KINDS).batch(range(count)).samples()
    return float(np.median([gt_median(s) for s in batch]))


def _group(flat: dict[str, float], prefix: str) -> dict[str, float]:
    """{'prefix/key': v} entries of `mgeo_ros.eval.evaluate`'s flat dicts as {'key': v}."""
    return {k.split('/', 1)[1]: v for k, v in flat.items() if k.startswith(prefix + '/')}


ANCHOR_ROWS = (('anchored: sparse depth (2 % noise)', 'anchored_depth', 'depth:{depth}'),
               ('anchored: LaserScan (one row)', 'anchored_scan', 'scan:{scan}'))


def anchor_sources(bag: Path) -> dict:
    """The bag's anchor topics as `mgeo eval --scale-anchor` reads them, one source per row of ANCHOR_ROWS."""
    from mgeo_ros.eval.anchored import AnchorSources
    from mgeo_ros.train.data.synth.anchors import ANCHOR_DEPTH_TOPIC, ANCHOR_SCAN_TOPIC

    camera = 'camera_optical_frame'
    return {key: AnchorSources.from_specs([spec.format(depth=ANCHOR_DEPTH_TOPIC, scan=ANCHOR_SCAN_TOPIC)], bag, camera)
            for _, key, spec in ANCHOR_ROWS}


def evaluate_recording(recorded: dict, samples: list, stamps: list[int], const: float,
                       anchors: dict | None = None) -> tuple[dict, list]:
    """Metrics of the recorded depth against the GT, with two baselines: one constant depth (`const`, the training
    median) everywhere, and a flat wall at each frame's own GT median (an oracle that knows every frame's scale);
    and with `anchors` (`anchor_sources`) the same depth at the scale each anchor source gives (its fallback: the
    model's own)."""
    from mgeo_ros.eval.anchored import anchored_scale
    from mgeo_ros.eval.evaluate import baseline_metrics, frame_metrics, gt_median, gt_valid_mask

    anchorings = {key: sources.anchoring() for key, sources in (anchors or {}).items()}

    by_stamp = {stamp_ns(m): m for _, m in recorded.get('/mgeo/depth/image', [])}
    rows, pairs = [], []
    for s, stamp in zip(samples, stamps):
        msg = by_stamp.get(stamp)
        if msg is None:
            continue
        pred = depth_to_metres(msg)
        gt_valid = gt_valid_mask(s)
        if (gt_valid & np.isfinite(pred)).sum() < 16:
            continue
        scored = frame_metrics(pred, None, s)
        rows.append({'stamp_ns': stamp, 'coverage': scored['depth_metric/coverage'],
                     'metric': _group(scored, 'depth_metric'), 'scale_invariant': _group(scored, 'depth_scale'),
                     'affine_invariant': _group(scored, 'depth_affine'), 'boundary_f1': scored['boundary_f1'],
                     'baseline_constant': _group(baseline_metrics(const, s), 'depth_metric'),
                     'baseline_oracle_median': _group(baseline_metrics(gt_median(s), s), 'depth_metric')})
        for key, anchoring in anchorings.items():
            factor, _ = anchored_scale(anchoring, stamp * 1e-9, pred, np.isfinite(pred), s.intrinsics)
            rows[-1][key] = _group(frame_metrics(pred * np.float32(factor), None, s), 'depth_metric')
        pairs.append((s, pred, np.where(gt_valid, s.depth, np.nan).astype(np.float32)))
    mean = {}
    for group in ('metric', 'scale_invariant', 'affine_invariant', 'baseline_constant', 'baseline_oracle_median',
                  *anchorings):
        keys = rows[0][group].keys() if rows else []
        mean[group] = {k: float(np.mean([r[group][k] for r in rows])) for k in keys}
    if rows:
        mean['boundary_f1'] = float(np.nanmean([r['boundary_f1'] for r in rows]))
        mean['coverage'] = float(np.mean([r['coverage'] for r in rows]))
    mean['constant_depth_m'] = const
    mean['anchor_frames_per_source'] = {key: dict(a.chooser.frames) for key, a in anchorings.items()}
    return {'mean': mean, 'frames': rows}, pairs


def write_pictures(out: Path, pairs: list, recorded: dict) -> list[Path]:
    """Input | predicted depth | GT | error, for a few frames; and input | depth | point cloud for docs/img/demo.png."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    written = []
    if not pairs:
        return written
    picks = sorted({0, len(pairs) // 2, len(pairs) - 1})
    fig, axes = plt.subplots(len(picks), 4, figsize=(13, 2.7 * len(picks)), squeeze=False)
    vmax = float(np.nanpercentile(np.concatenate([p[2][np.isfinite(p[2])] for p in pairs]), 98))
    for row, i in zip(axes, picks):
        s, pred, gt = pairs[i]
        err = np.abs(pred - gt) / gt
        row[0].imshow(s.rgb)
        row[1].imshow(pred, cmap='turbo', vmin=0, vmax=vmax)
        row[2].imshow(gt, cmap='turbo', vmin=0, vmax=vmax)
        im = row[3].imshow(err, cmap='magma', vmin=0, vmax=0.5)
        for ax, title in zip(row, ('input', 'predicted depth (m)', 'GT depth (m)', '|rel. error|')):
            ax.set_title(title, fontsize=9)
            ax.axis('off')
        fig.colorbar(im, ax=row[3], fraction=0.046)
    fig.tight_layout()
    path = out / 'depth_and_error.png'
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(path)

    clouds = recorded.get('/mgeo/points', [])
    if clouds:
        s, pred, _ = pairs[len(pairs) // 2]
        cloud = cloud_from_msg(clouds[min(len(clouds) - 1, len(pairs) // 2)][1])
        xyz, rgb = cloud
        pts = xyz.reshape(-1, 3)
        ok = np.isfinite(pts).all(axis=1)
        pts = pts[ok][::2]
        col = None if rgb is None else rgb.reshape(-1, 3)[ok][::2] / 255.0
        fig = plt.figure(figsize=(13, 3.6))
        ax0 = fig.add_subplot(1, 3, 1)
        ax0.imshow(s.rgb)
        ax0.set_title('input', fontsize=9)
        ax0.axis('off')
        ax1 = fig.add_subplot(1, 3, 2)
        ax1.imshow(pred, cmap='turbo')
        ax1.set_title('metric depth (32FC1)', fontsize=9)
        ax1.axis('off')
        ax2 = fig.add_subplot(1, 3, 3, projection='3d')
        colour = {'c': col} if col is not None else {'c': pts[:, 2], 'cmap': 'turbo'}
        ax2.scatter(pts[:, 0], pts[:, 2], -pts[:, 1], s=0.4, **colour)
        ax2.view_init(elev=25, azim=-70)
        ax2.set_xlabel('x (m)')
        ax2.set_ylabel('z (m)')
        ax2.set_zlabel('-y (m)')
        ax2.set_title('PointCloud2 (xyzrgb)', fontsize=9)
        fig.tight_layout()
        path = out / 'input_depth_cloud.png'
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def summary_text(metrics: dict, latency: dict, stages: dict, steps: Steps, backend: str) -> str:
    m = metrics['mean']
    lines = ['', '=== mgeo demo summary ===',
             f"frames: sent {latency['frames_sent']}, depth received {latency['depth_received']}, "
             f"dropped {latency['dropped']}  |  node backend: {backend}",
             f"latency image->depth: median {latency['latency_ms_median']:.0f} ms, "
             f"p95 {latency['latency_ms_p95']:.0f} ms  |  output {latency['output_fps']:.2f} fps",
             '',
             f"{'':<34}{'AbsRel':>8}{'delta1':>8}",
             ]
    for label, key in (('model (metric, no alignment)', 'metric'), ('model (scale-aligned)', 'scale_invariant'),
                       ('model (affine-aligned)', 'affine_invariant'),
                       (f"baseline: training median {m['constant_depth_m']:.2f} m", 'baseline_constant'),
                       *((label, key) for label, key, _ in ANCHOR_ROWS),
                       ('baseline: oracle per-frame median', 'baseline_oracle_median')):
        if key in m and m[key]:
            lines.append(f"{label:<34}{m[key]['abs_rel']:>8.3f}{m[key]['delta1']:>8.3f}")
    if 'boundary_f1' in m:
        lines.append(f"boundary F1 {m['boundary_f1']:.3f}, valid-pixel coverage {m.get('coverage', 0):.2f}")
    if stages:
        timing = {k.split('.')[1]: v for k, v in stages.items()
                  if k.startswith('latency_ms.') and k.endswith('.median') and 'since_stamp' not in k}
        lines.append('node stage ms (median): ' + ', '.join(f'{k} {v}' for k, v in timing.items()))
        lines.append('node counters: ' + ', '.join(f'{k}={stages[k]}' for k in (
            'frames_received', 'frames_published', 'frames_dropped', 'metric_scale_raw', 'fov_x_deg') if k in stages))
    timed = ', '.join(f'{k} {v:.1f}s' for k, v in steps.times.items())
    lines.append(f'steps: {timed}; total {steps.total:.1f} s')
    return '\n'.join(lines)


def run(args) -> int:
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise BadInputError(f'--out {out} is an existing file, expected a folder for the report')
    model = Path(args.model) if args.model else default_model_path()
    if not model.exists():
        raise BadInputError(f'model not found: {model}. The default model ships in mgeo_ros/models/default; '
                            'pass --model PATH to use another.')
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    # the large-frames profile under the variable the installed Fast DDS reads (2.x, Jazzy: only the old name)
    profile_vars = profile_env(env.get(NEW, str(Path(__file__).resolve().parents[1] / 'config'
                                                / 'fastdds_large_frames.xml')))
    for name, value in profile_vars.items():
        env.setdefault(name, value)
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', *profile_vars)})
    steps = Steps()
    bag, samples = steps.run('render the sample bag', render_bag, out, args.seed, args.frames, args.size, args.rate)
    node_model = model
    if model.suffix not in ('.onnx', '.engine') and args.backend in ('auto', 'onnxruntime'):
        node_model = steps.run('export ONNX', export_onnx, model, out, args.size, args.num_tokens)
    record = out / 'recorded_bag'
    if record.exists():
        import shutil

        shutil.rmtree(record)
    node = start_node(node_model, args.backend, out / 'node.log', env)
    try:
        play = steps.run('replay into mgeo_depth_node and record', replay_and_record, bag, record, 1.0,
                         args.frames, node, args.timeout, [IMAGE_TOPIC, INFO_TOPIC], IMAGE_TOPIC, OUTPUT_TOPICS)
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
    recorded = steps.run('read the recording', read_recording, record)
    stamps = [1_700_000_000_000_000_000 + round(i * 1e9 / args.rate) for i in range(len(samples))]
    const = steps.run('training-median baseline', training_median_depth)
    anchors = steps.run('read the scale anchors', anchor_sources, bag)
    metrics, pairs = steps.run('evaluate against GT', evaluate_recording, recorded, samples, stamps, const, anchors)
    latency = latency_table(recorded, stamps)
    stages = node_stage_times(recorded)
    pictures = steps.run('write pictures', write_pictures, out, pairs, recorded)
    backend = stages.get('backend', args.backend)
    report = {'model': str(model), 'node_model': str(node_model), 'backend': backend, 'size': list(args.size),
              'frames': args.frames, 'rate_hz': args.rate, 'seed': args.seed, 'latency': latency,
              'node_diagnostics': stages, 'playback': play, 'steps_s': steps.times, 'total_s': steps.total,
              **metrics, 'pictures': [p.name for p in pictures]}
    (out / 'metrics.json').write_text(json.dumps(report, indent=2, default=str))
    text = summary_text(metrics, latency, stages, steps, backend)
    (out / 'summary.txt').write_text(text + '\n')
    print(text)
    print(f'[demo] report: {out}/metrics.json, {", ".join(p.name for p in pictures)}, node.log')
    if latency['depth_received'] == 0:
        print('[demo] FAILED: no depth frames came back from the node; see node.log', file=sys.stderr)
        return 1
    if not metrics['frames']:
        print('[demo] FAILED: depth came back but no frame had 16+ valid pixels to evaluate (an untrained model?)',
              file=sys.stderr)
        return 1
    return 0
